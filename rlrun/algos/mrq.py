"""MR.Q: model-free RL on model-based representations.

Fujimoto et al. 2025, "Towards General-Purpose Model-Free Reinforcement Learning" (ICLR 2025,
arXiv:2501.16142); the authors' code is github.com/facebookresearch/MRQ (MRQ.py, models.py,
buffer.py). A state encoder f(s) = z_s and a state-action encoder g(z_s, a) = z_sa are trained
with model-based losses: from z_sa a linear head predicts the next state's embedding, the
reward (as a two-hot distribution over symlog-spaced bins) and the termination, unrolled over
`enc_horizon` steps. Twin critics Q(z_sa) and a deterministic policy π(z_s) (TD3's, with target
policy noise) then learn model-free on these embeddings, from `q_horizon`-step returns scaled by
the buffer's mean absolute reward, with LAP prioritised replay. Every `target_update_freq`
updates all target networks are copied from the online ones and the encoder takes
`target_update_freq` gradient steps of its own.

This port covers continuous actions and vector observations (the authors' Gym and DMC
settings); their Gumbel-softmax policy for discrete actions and their CNN for pixels are not
here. Actions are in [-1, 1]^|A|, rescaled to the environment's bounds as in SAC and TD3.
Differences from the authors' code are listed in docs/configuration.md (MR.Q).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from rlrun.blocks.buffers import SequenceReplayBuffer, Sequences
from rlrun.blocks.nets import EnsembleLinear, OutputLinear, in_float32
from rlrun.blocks.optim import Adam, gradient_step
from rlrun.blocks.policy_modules import RescaleToBounds
from rlrun.blocks.spaces import BoxActions, check_continuous_spaces, obs_batch
from rlrun.blocks.state import Checkpointed
from rlrun.config import ConfigError, in_range, non_negative, positive, replay_sizes
from rlrun.loops.replay import make_training_envs, train_replay, uniform_then_policy
from rlrun.protocols import RunContext


@dataclass(frozen=True)
class MRQConfig:
    """MR.Q's settings; defaults are the paper's one set for every benchmark (Table 6), as the
    authors' MRQ.py Hyperparameters has them."""

    gamma: float = 0.99
    """Discount factor of future rewards."""
    batch_size: int = 256
    """Subsequences sampled from the replay buffer per gradient step (encoder and value alike)."""
    buffer_size: int = 1_000_000
    """Transitions the replay buffer keeps (oldest overwritten); capped at total_steps."""
    learning_starts: int = 10_000
    """Environment steps of uniform random actions, without updates, that fill the buffer
    before learning starts (the authors' buffer_size_before_training)."""
    target_update_freq: int = 250
    """Updates between hard copies of every target network (encoder, policy, value); at each
    copy the encoder also takes this many gradient steps and the reward scale is refreshed."""
    exploration_noise: float = 0.2
    """Standard deviation of the Gaussian noise added to the policy's unit actions in training."""
    target_policy_noise: float = 0.2
    """Standard deviation of the noise on the target policy's action (TD3's smoothing)."""
    noise_clip: float = 0.3
    """The target policy noise is clipped to ±noise_clip."""
    dynamics_weight: float = 1.0
    """Weight of the next-embedding (dynamics) loss in the encoder's loss."""
    reward_weight: float = 0.1
    """Weight of the reward (two-hot cross-entropy) loss in the encoder's loss."""
    termination_weight: float = 0.1
    """Weight of the termination loss in the encoder's loss; it counts only once the buffer
    has seen a termination."""
    prioritized: bool = True
    """LAP prioritised replay: start slots are drawn with probability ∝ max(|δ|, min_priority)^α,
    δ the larger critic's TD error; false draws them uniformly."""
    priority_alpha: float = 0.4
    """α, the exponent of the LAP priorities (0 samples uniformly)."""
    min_priority: float = 1.0
    """Priorities are at least min_priority^α; also the priority of the first transitions."""
    enc_horizon: int = 5
    """Steps the encoder's model is unrolled from each sampled start (the loss is summed over them)."""
    q_horizon: int = 3
    """n of the critics' n-step returns."""
    zs_dim: int = 512
    """Size of the state embedding z_s."""
    za_dim: int = 256
    """Size of the action's embedding inside the state-action encoder."""
    zsa_dim: int = 512
    """Size of the state-action embedding z_sa."""
    encoder_hidden_dim: int = 512
    """Width of the two hidden layers of each encoder MLP."""
    encoder_lr: float = 1e-4
    """AdamW step size of the encoder."""
    encoder_weight_decay: float = 1e-4
    """AdamW's decoupled weight decay of the encoder."""
    value_hidden_dim: int = 512
    """Width of the three hidden layers of each critic."""
    value_lr: float = 3e-4
    """AdamW step size of the critics."""
    value_weight_decay: float = 1e-4
    """AdamW's decoupled weight decay of the critics."""
    value_grad_clip: float = 20.0
    """The critics' gradient is rescaled to at most this L2 norm."""
    policy_hidden_dim: int = 512
    """Width of the two hidden layers of the policy."""
    policy_lr: float = 3e-4
    """AdamW step size of the policy."""
    policy_weight_decay: float = 1e-4
    """AdamW's decoupled weight decay of the policy."""
    pre_activation_weight: float = 1e-5
    """Weight of the penalty on the policy's squared pre-tanh outputs, which keeps tanh out of saturation."""
    num_bins: int = 65
    """Bins of the reward model's two-hot distribution."""
    reward_lower: float = -10.0
    """Lowest bin of the reward model, in symlog units (symexp(−10) ≈ −22,026)."""
    reward_upper: float = 10.0
    """Highest bin of the reward model, in symlog units."""

    def __post_init__(self) -> None:
        in_range("algo.gamma", self.gamma, 0.0, 1.0)
        replay_sizes(self.batch_size, self.buffer_size)
        non_negative("algo.learning_starts", self.learning_starts)
        positive("algo.target_update_freq", self.target_update_freq)
        non_negative("algo.exploration_noise", self.exploration_noise)
        non_negative("algo.target_policy_noise", self.target_policy_noise)
        non_negative("algo.noise_clip", self.noise_clip)
        non_negative("algo.dynamics_weight", self.dynamics_weight)
        non_negative("algo.reward_weight", self.reward_weight)
        non_negative("algo.termination_weight", self.termination_weight)
        non_negative("algo.priority_alpha", self.priority_alpha)
        positive("algo.min_priority", self.min_priority)
        positive("algo.enc_horizon", self.enc_horizon)
        positive("algo.q_horizon", self.q_horizon)
        positive("algo.zs_dim", self.zs_dim)
        positive("algo.za_dim", self.za_dim)
        positive("algo.zsa_dim", self.zsa_dim)
        positive("algo.encoder_hidden_dim", self.encoder_hidden_dim)
        positive("algo.encoder_lr", self.encoder_lr)
        non_negative("algo.encoder_weight_decay", self.encoder_weight_decay)
        positive("algo.value_hidden_dim", self.value_hidden_dim)
        positive("algo.value_lr", self.value_lr)
        non_negative("algo.value_weight_decay", self.value_weight_decay)
        positive("algo.value_grad_clip", self.value_grad_clip)
        positive("algo.policy_hidden_dim", self.policy_hidden_dim)
        positive("algo.policy_lr", self.policy_lr)
        non_negative("algo.policy_weight_decay", self.policy_weight_decay)
        non_negative("algo.pre_activation_weight", self.pre_activation_weight)
        if self.num_bins < 2:
            raise ConfigError(f"algo.num_bins={self.num_bins!r} must be at least 2")
        if not self.reward_lower < self.reward_upper:
            raise ConfigError(f"algo.reward_lower={self.reward_lower!r} must be below algo.reward_upper={self.reward_upper!r}")
        horizon = max(self.enc_horizon, self.q_horizon)
        if self.buffer_size < horizon:
            raise ConfigError(
                f"algo.buffer_size={self.buffer_size} cannot hold a subsequence of {horizon} transitions"
                " (algo.enc_horizon, algo.q_horizon)"
            )


# ----- targets ------------------------------------------------------------------------------
def symlog(x: torch.Tensor) -> torch.Tensor:
    """symlog(x) = sign(x) · ln(1 + |x|)."""
    return x.sign() * x.abs().log1p()


def symexp(x: torch.Tensor) -> torch.Tensor:
    """symexp(x) = sign(x) · (e^|x| − 1), the inverse of symlog."""
    return x.sign() * x.abs().expm1()


class TwoHot:
    """A scalar as a distribution over fixed bins b_1 < ... < b_K, evenly spaced in symlog units
    (b_k = symexp(lower + (k − 1)(upper − lower)/(K − 1))): x ∈ [b_k, b_{k+1}] puts weight
    (b_{k+1} − x)/(b_{k+1} − b_k) on b_k and the rest on b_{k+1}, so that Σ_k p_k b_k = x.
    Values outside [b_1, b_K] are clipped to it. The reward model's logits over the bins learn
    it by cross-entropy."""

    def __init__(self, lower: float, upper: float, num_bins: int, device: torch.device) -> None:
        self.bins = symexp(torch.linspace(lower, upper, num_bins, device=device))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) scalars → (B, K) two-hot weights."""
        x = x.clamp(self.bins[0], self.bins[-1])
        lower = (torch.searchsorted(self.bins, x, right=True) - 1).clamp(0, len(self.bins) - 2)
        left, right = self.bins[lower], self.bins[lower + 1]
        upper_weight = (x - left) / (right - left)
        weights = torch.zeros(*x.shape, len(self.bins), device=x.device)
        weights.scatter_(-1, lower.unsqueeze(-1), (1.0 - upper_weight).unsqueeze(-1))
        weights.scatter_(-1, (lower + 1).unsqueeze(-1), upper_weight.unsqueeze(-1))
        return weights

    def cross_entropy(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B,) −Σ_k twohot(x)_k log softmax(logits)_k."""
        return -(self.encode(x) * logits.log_softmax(-1)).sum(-1)


def multi_step_return(rewards: torch.Tensor, terminated: torch.Tensor, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """For (B, H) rewards r_t and termination flags d_t of H consecutive transitions:

        R = Σ_{t<H} γ^t r_t Π_{j<t} (1 − d_j),     bootstrap weight γ^H Π_{t<H} (1 − d_t),

    so y = R + weight · Q̄(s_H, a_H): rewards up to and including a termination count, none after
    it, and a terminated subsequence does not bootstrap."""
    alive = torch.cumprod(1.0 - terminated, dim=1)
    alive_before = torch.cat([torch.ones_like(alive[:, :1]), alive[:, :-1]], dim=1)
    horizon = rewards.shape[1]
    discounts = gamma ** torch.arange(horizon, device=rewards.device, dtype=rewards.dtype)
    return (rewards * alive_before * discounts).sum(1), gamma**horizon * alive[:, -1]


def lap_priority(q: torch.Tensor, target: torch.Tensor, alpha: float, min_priority: float) -> torch.Tensor:
    """LAP's priority of each sample: max(max_i |Q_i − y|, min_priority)^α, for Q of shape (n, B)."""
    return (q - target).abs().max(dim=0).values.clamp(min=min_priority).pow(alpha)


# ----- networks -----------------------------------------------------------------------------
def xavier_relu_init(module: nn.Module) -> None:
    """The authors' initialisation: Xavier-uniform weights with ReLU's gain √2, zero biases."""
    gain = nn.init.calculate_gain("relu")
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight, gain)
            nn.init.zeros_(layer.bias)
        elif isinstance(layer, EnsembleLinear):  # weights (n, in, out): each member on its own
            fan_in, fan_out = layer.weight.shape[1:]
            bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
            nn.init.uniform_(layer.weight, -bound, bound)
            nn.init.zeros_(layer.bias)


def norm_activation(x: torch.Tensor, activation: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """activation(LayerNorm(x)), the layer norm without learnt scale and shift."""
    return activation(F.layer_norm(x, x.shape[-1:]))


class NormedMLP(nn.Module):
    """in → [Linear, LayerNorm, activation] × 2 → Linear → out (the authors' BaseMLP)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int,
        activation: Callable[[torch.Tensor], torch.Tensor],
        output_layer: type[nn.Linear] = nn.Linear,
    ) -> None:
        super().__init__()
        self.activation = activation
        self.hidden = nn.ModuleList([nn.Linear(in_dim, hidden_dim), nn.Linear(hidden_dim, hidden_dim)])
        self.output = output_layer(hidden_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden:
            x = norm_activation(layer(x), self.activation)
        return self.output(x)


class Encoder(nn.Module):
    """z_s = f(s) and z_sa = g(z_s, a), and the model on z_sa: one linear head that predicts
    the termination, the next state's embedding and the reward's bin logits."""

    def __init__(self, obs_dim: int, action_dim: int, config: MRQConfig) -> None:
        super().__init__()
        hidden = config.encoder_hidden_dim
        self.state = NormedMLP(obs_dim, config.zs_dim, hidden, F.elu)
        self.action = nn.Linear(action_dim, config.za_dim)
        self.state_action = NormedMLP(config.zs_dim + config.za_dim, config.zsa_dim, hidden, F.elu)
        self.zs_dim = config.zs_dim
        self.model = OutputLinear(config.zsa_dim, 1 + config.zs_dim + config.num_bins)
        xavier_relu_init(self)

    def zs(self, obs: torch.Tensor) -> torch.Tensor:
        """z_s = ELU(LayerNorm(MLP(s)))."""
        return norm_activation(self.state(obs), F.elu)

    def zsa(self, zs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """z_sa = MLP([z_s, ELU(W_a a + b_a)])."""
        return self.state_action(torch.cat([zs, F.elu(self.action(action))], dim=-1))

    def predict(self, zs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(termination prediction (B,), next z_s (B, zs_dim), reward logits (B, K)) from z_sa."""
        out = self.model(self.zsa(zs, action))
        return out[:, 0], out[:, 1 : 1 + self.zs_dim], out[:, 1 + self.zs_dim :]


class Policy(nn.Module):
    """a = tanh(MLP(z_s)) with ReLU hidden layers; also returns the pre-tanh outputs."""

    def __init__(self, zs_dim: int, action_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.mlp = NormedMLP(zs_dim, action_dim, hidden_dim, F.relu, output_layer=OutputLinear)
        xavier_relu_init(self)

    def forward(self, zs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pre_activation = self.mlp(zs)
        return torch.tanh(pre_activation), pre_activation


class TwinValue(nn.Module):
    """Two critics Q_i(z_sa), evaluated together: each [Linear, LayerNorm, ELU] × 3 → Linear
    (the authors' ValueNetwork); returns shape (2, B)."""

    def __init__(self, zsa_dim: int, hidden_dim: int, n: int = 2) -> None:
        super().__init__()
        self.n = n
        sizes = [zsa_dim, hidden_dim, hidden_dim, hidden_dim]
        self.hidden = nn.ModuleList(EnsembleLinear(n, a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.output = EnsembleLinear(n, hidden_dim, 1)
        xavier_relu_init(self)

    def forward(self, zsa: torch.Tensor) -> torch.Tensor:
        x = zsa.expand(self.n, -1, -1)
        for layer in self.hidden:
            x = norm_activation(layer(x), F.elu)
        return in_float32(self.output, x).squeeze(-1)  # a float32 output, as OutputLinear


class DeterministicPolicy(nn.Module):
    """observations → π(f(s)) in [-1, 1]^|A|, for export."""

    def __init__(self, encoder: Encoder, policy: Policy) -> None:
        super().__init__()
        self.encoder, self.policy = encoder, policy

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.policy(self.encoder.zs(obs))[0]


# ----- the agent ----------------------------------------------------------------------------
class MRQ(Checkpointed):
    Config = MRQConfig
    action_spaces = (gym.spaces.Box,)

    @staticmethod
    def check_spaces(config: MRQConfig, obs_space: gym.Space, action_space: gym.Space) -> None:
        check_continuous_spaces("mrq", obs_space, action_space)

    def __init__(self, config: MRQConfig, obs_space: gym.Space, action_space: gym.Space, device: torch.device, seed: int) -> None:
        self.config = config
        self.device = device
        self.seed = seed
        obs_dim, action_dim = obs_space.shape[0], action_space.shape[0]
        self.actions = BoxActions(action_space)

        self.encoder = Encoder(obs_dim, action_dim, config).to(device)
        self.policy = Policy(config.zs_dim, action_dim, config.policy_hidden_dim).to(device)
        self.value = TwinValue(config.zsa_dim, config.value_hidden_dim).to(device)
        self.encoder_target = copy.deepcopy(self.encoder).requires_grad_(False)
        self.policy_target = copy.deepcopy(self.policy).requires_grad_(False)
        self.value_target = copy.deepcopy(self.value).requires_grad_(False)
        self.encoder_optimizer = Adam(self.encoder.parameters(), config.encoder_lr, weight_decay=config.encoder_weight_decay)
        self.policy_optimizer = Adam(self.policy.parameters(), config.policy_lr, weight_decay=config.policy_weight_decay)
        self.value_optimizer = Adam(self.value.parameters(), config.value_lr, weight_decay=config.value_weight_decay)
        self.two_hot = TwoHot(config.reward_lower, config.reward_upper, config.num_bins, device)

        # The critics learn Q / reward_scale; the target critics' outputs are in the scale of
        # the copy they were taken from (target_reward_scale).
        self.reward_scale = torch.ones((), device=device)
        self.target_reward_scale = torch.zeros((), device=device)
        self.updates = 0

    # ----- acting ---------------------------------------------------------------------------
    @torch.no_grad()
    def explore(self, obs: torch.Tensor) -> torch.Tensor:
        """clip(π(f(s)) + N(0, exploration_noise²), −1, 1) for a batch of observations on the device."""
        action = self.policy(self.encoder.zs(obs))[0]
        return (action + torch.randn_like(action) * self.config.exploration_noise).clamp(-1.0, 1.0)

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """The evaluation action in environment units: π(f(s)), or with exploration noise."""
        obs_t = obs_batch(obs, self.device)
        unit_action = self.policy(self.encoder.zs(obs_t))[0] if deterministic else self.explore(obs_t)
        return self.actions.to_env(unit_action[0].cpu().numpy())

    def policy_module(self) -> nn.Module:
        """observations (B, obs_dim) → π(f(s)) rescaled to the bounds, for export."""
        return nn.Sequential(DeterministicPolicy(self.encoder, self.policy), RescaleToBounds(self.actions.low, self.actions.high))

    # ----- learning -------------------------------------------------------------------------
    def update(self, buffer: SequenceReplayBuffer) -> dict[str, torch.Tensor]:
        """One update of critics and policy. Every target_update_freq-th (the first included)
        first copies the target networks, refreshes the reward scale and trains the encoder for
        target_update_freq steps."""
        config = self.config
        metrics: dict[str, torch.Tensor] = {}
        if self.updates % config.target_update_freq == 0:
            self.encoder_target.load_state_dict(self.encoder.state_dict())
            self.policy_target.load_state_dict(self.policy.state_dict())
            self.value_target.load_state_dict(self.value.state_dict())
            self.target_reward_scale = self.reward_scale
            self.reward_scale = buffer.mean_absolute_reward()
            for _ in range(config.target_update_freq):
                sequences = buffer.sample_sequences(config.batch_size, config.enc_horizon)
                metrics = self.update_encoder(sequences, buffer.any_terminated)
        self.updates += 1

        sequences = buffer.sample_sequences(config.batch_size, config.q_horizon)
        q, target, rl_metrics = self.update_value_and_policy(sequences)
        if config.prioritized:
            buffer.update_priorities(sequences.start, lap_priority(q, target, config.priority_alpha, config.min_priority))
        return metrics | rl_metrics | {"train/reward_scale": self.reward_scale}

    def encoder_loss(self, sequences: Sequences, learn_termination: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Unrolled from ẑ_0 = f(s_0) through the model, ẑ_{t+1}, r̂_t, d̂_t = m(g(ẑ_t, a_t)):

            L = Σ_{t<H} m_t [λ_dyn ‖ẑ_{t+1} − f̄(s_{t+1})‖² + λ_r CE(r̂_t, twohot(r_t)) + λ_d (d̂_t − d_t)²],

        f̄ the target encoder, m_t = Π_{j<t} (1 − d_j) masking the steps after a termination;
        the squared errors are averaged over the embedding. The termination term counts only
        once the buffer has seen a termination (`learn_termination`)."""
        config = self.config
        batch_size, horizon = sequences.rewards.shape
        with torch.no_grad():
            target_zs = self.encoder_target.zs(sequences.next_obs.flatten(0, 1)).view(batch_size, horizon, -1)
        zs = self.encoder.zs(sequences.obs)
        alive = torch.ones(batch_size, device=zs.device)
        dynamics = reward = termination = torch.zeros((), device=zs.device)
        for t in range(horizon):
            termination_prediction, zs, reward_logits = self.encoder.predict(zs, sequences.actions[:, t])
            dynamics = dynamics + (((zs - target_zs[:, t]) ** 2).mean(-1) * alive).mean()
            reward = reward + (self.two_hot.cross_entropy(reward_logits, sequences.rewards[:, t]) * alive).mean()
            if learn_termination:
                termination = termination + (((termination_prediction - sequences.terminated[:, t]) ** 2) * alive).mean()
            alive = alive * (1.0 - sequences.terminated[:, t])
        loss = config.dynamics_weight * dynamics + config.reward_weight * reward + config.termination_weight * termination
        return loss, {
            "losses/encoder": loss.detach(),
            "losses/dynamics": dynamics.detach(),
            "losses/reward": reward.detach(),
            "losses/termination": termination.detach(),
        }

    def update_encoder(self, sequences: Sequences, learn_termination: bool) -> dict[str, torch.Tensor]:
        loss, metrics = self.encoder_loss(sequences, learn_termination)
        gradient_step(self.encoder_optimizer, loss)
        return metrics

    @torch.no_grad()
    def value_target_of(self, sequences: Sequences) -> torch.Tensor:
        """y = (R + γ^H Π(1 − d) · min_i Q̄_i(ḡ(z̄', ã')) · s̄) / s,  ã' = clip(π̄(z̄') + clip(ε, −c, c), −1, 1),

        z̄' = f̄(s_H) the target encoder's embedding of the state after the H transitions,
        ε ~ N(0, target_policy_noise²), R the H-step return (multi_step_return), s the reward
        scale (the buffer's mean |r|) the critics learn in and s̄ the target critics' own."""
        config = self.config
        next_zs = self.encoder_target.zs(sequences.next_obs[:, -1])
        next_action = self.policy_target(next_zs)[0]
        noise = (torch.randn_like(next_action) * config.target_policy_noise).clamp(-config.noise_clip, config.noise_clip)
        next_action = (next_action + noise).clamp(-1.0, 1.0)
        next_q = self.value_target(self.encoder_target.zsa(next_zs, next_action)).min(dim=0).values
        returns, bootstrap = multi_step_return(sequences.rewards, sequences.terminated, config.gamma)
        return (returns + bootstrap * next_q * self.target_reward_scale) / self.reward_scale

    def update_value_and_policy(self, sequences: Sequences) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        config = self.config
        target = self.value_target_of(sequences)
        with torch.no_grad():
            zs = self.encoder.zs(sequences.obs)
            zsa = self.encoder.zsa(zs, sequences.actions[:, 0])

        # Critics: L = Σ_i E[Huber(Q_i(z_sa) − y)] (δ = 1), averaged over both critics.
        q = self.value(zsa)
        value_loss = F.smooth_l1_loss(q, target.expand_as(q))
        gradient_step(self.value_optimizer, value_loss, config.value_grad_clip)

        # Policy: L = −E[½ Σ_i Q_i(g(z_s, π(z_s)))] + λ E[u²], u the pre-tanh outputs; encoder
        # and critics frozen, so the backward pass only reaches the policy.
        action, pre_activation = self.policy(zs)
        self.encoder.requires_grad_(False)
        self.value.requires_grad_(False)
        q_policy = self.value(self.encoder.zsa(zs, action))
        self.encoder.requires_grad_(True)
        self.value.requires_grad_(True)
        policy_loss = -q_policy.mean() + config.pre_activation_weight * pre_activation.pow(2).mean()
        gradient_step(self.policy_optimizer, policy_loss)
        q = q.detach()
        metrics = {"losses/value": value_loss.detach(), "losses/actor": policy_loss.detach()}
        return q, target, metrics | {"train/q_mean": q.mean() * self.reward_scale}

    # ----- the loop -------------------------------------------------------------------------
    def train(self, run: RunContext) -> None:
        """The replay loop on one environment (subsequences need one stream of transitions):
        uniform random actions for `learning_starts` steps, then one update per step. The
        buffer stores `terminated` for bootstrapping; truncations end sampled windows."""
        config = self.config
        envs = make_training_envs(run, 1)
        horizon = max(config.enc_horizon, config.q_horizon)
        # A buffer larger than the run would only hold zeros; it still holds one subsequence.
        buffer = SequenceReplayBuffer(
            max(min(config.buffer_size, run.total_steps), horizon),
            envs.single_observation_space.shape,
            envs.single_action_space.shape,
            self.device,
            self.seed,
            horizon,
            initial_priority=config.min_priority,
        )
        explore = uniform_then_policy(self, envs, config.learning_starts)
        train_replay(self, run, envs, buffer, explore, lambda buffer, previous, step: self.update(buffer), config.learning_starts)

    # ----- checkpoints ----------------------------------------------------------------------
    checkpointed = (
        "encoder",
        "encoder_target",
        "policy",
        "policy_target",
        "value",
        "value_target",
        "encoder_optimizer",
        "policy_optimizer",
        "value_optimizer",
        "reward_scale",
        "target_reward_scale",
        "updates",
    )
