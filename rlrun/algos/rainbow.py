"""Rainbow: DQN with six additions, each a setting, so the paper's ablations are one override.

Hessel et al. 2018, "Rainbow: Combining Improvements in Deep Reinforcement Learning"
(arXiv:1710.02298). The additions:

  distributional   C51 (Bellemare et al. 2017): a categorical distribution over `num_atoms`
                   fixed returns z_i in [v_min, v_max] per action, trained by cross-entropy
                   against the projected Bellman target (`distributional=false`: a Huber loss
                   on Q, as DQN);
  n_step           multi-step returns (Sutton 1988; Mnih et al. 2016), n = 3;
  prioritized      proportional prioritised replay (Schaul et al. 2016), priorities from the
                   loss (`prioritized=false`: uniform replay, all weights 1);
  noisy            factorised Gaussian noisy linear layers (Fortunato et al. 2018) instead of
                   ε-greedy (`noisy=false`: ε-greedy, ε from 1 to 0.01 over 250K frames);
  dueling          Wang et al. 2016, its streams combined per atom;
  double           van Hasselt et al. 2016: the online network picks a', the target values it.

Vector observations get DQN's MLP torso, image observations its Nature CNN or the smaller CNN
of data-efficient Rainbow (van Hasselt et al. 2019, `cnn=data_efficient`); the noisy layers
are the head's (the last layers), the torso stays deterministic (the paper also makes the
CNN's hidden layer noisy). The loop is DQN's: rlrun/loops/replay.py.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from rlrun.algos.dqn import linear_epsilon
from rlrun.blocks.buffers import PrioritizedBatch, PrioritizedFrameReplayBuffer, PrioritizedReplayBuffer, to_device
from rlrun.blocks.hl_gauss import SupportCheck
from rlrun.blocks.nets import NatureCNN, OutputLinear, check_image_space, hidden_layers, in_float32, is_image, polyak_update
from rlrun.blocks.optim import adam, gradient_step
from rlrun.blocks.policy_modules import Argmax
from rlrun.blocks.state import Checkpointed
from rlrun.config import ConfigError, in_range, layer_sizes, non_negative, positive, replay_sizes
from rlrun.loops.replay import make_training_envs, train_replay
from rlrun.protocols import RunContext


@dataclass(frozen=True)
class RainbowConfig:
    """Rainbow's hyperparameters; defaults are the paper's Atari settings (Hessel et al. 2018,
    Table 1), with its frame counts divided by the frame skip of 4 into agent steps."""

    lr: float = 6.25e-5
    """Adam step size (Table 1)."""
    adam_eps: float = 1.5e-4
    """Adam's ε (Table 1)."""
    gamma: float = 0.99
    """Discount factor of future rewards (Table 1)."""
    batch_size: int = 32
    """Transitions sampled from the replay buffer per gradient step (Table 1)."""
    buffer_size: int = 1_000_000
    """Transitions the replay buffer keeps (Table 1, 1M); capped at total_steps."""
    learning_starts: int = 20_000
    """Environment steps before the first update (Table 1: 80K frames)."""
    num_envs: int = 1
    """Environments stepped together as one Gymnasium vector env (sub-environment i seeded
    seed + i); every step count here counts over all of them."""
    train_every: int = 4
    """Environment steps between gradient steps (Table 1: every 4 agent steps)."""
    gradient_steps: int = 1
    """Gradient steps at each training point."""
    target_update_every: int = 8_000
    """Environment steps between copies of the online network into the target network
    (Table 1: 32K frames)."""
    max_grad_norm: float | None = None
    """Clip the gradient's L2 norm to this; None (the paper and Dopamine do not clip)."""
    hidden_sizes: tuple[int, ...] = (120, 84)
    """Hidden layer widths of the MLP for vector observations (DQN's); image observations get
    the CNN `cnn`."""
    cnn: Literal["nature", "data_efficient"] = "nature"
    """The torso for image observations: `nature`, Mnih et al. 2015's three convolutions and 512
    units (Rainbow's); `data_efficient`, van Hasselt et al. 2019's two 5×5 convolutions of
    stride 5 (32 and 64 channels) and 256 units, for Atari 100k."""
    distributional: bool = True
    """C51: a categorical return distribution per action, trained by cross-entropy against
    the projected target (Bellemare et al. 2017); false: Q regresses its target under the
    Huber loss, as DQN."""
    num_atoms: int = 51
    """Atoms z_i of the return distribution's support (Table 1: 51)."""
    v_min: float = -10.0
    """The support's lowest return (Table 1: −10; Atari rewards are clipped to [−1, 1])."""
    v_max: float = 10.0
    """The support's highest return (Table 1: 10)."""
    support_check: bool = True
    """Stop the run (exit 1, one line) when more than 5% of the mean targets R + γ^n Q̄(s', a*)
    of 250 updates fall outside [v_min, v_max], which the projection would clip; false keeps
    training on the clipped targets."""
    n_step: int = 3
    """Steps of the multi-step return R = Σ_{k<n} γ^k r_{t+k} + γ^n Q(s_{t+n}) (Table 1: 3)."""
    prioritized: bool = True
    """Proportional prioritised replay (Schaul et al. 2016); false samples uniformly."""
    priority_exponent: float = 0.5
    """α: P(i) ∝ p_i^α (Table 1: 0.5; 0 is uniform)."""
    importance_sampling: float = 0.4
    """β at the first step, annealed linearly to 1 at the end of the run (Table 1: 0.4 → 1)."""
    priority_eps: float = 1e-6
    """Added to each loss to make its priority, so no transition is never replayed."""
    noisy: bool = True
    """Factorised Gaussian noisy linear layers in the head (Fortunato et al. 2018) explore
    instead of ε-greedy; evaluation uses their mean weights."""
    noisy_std: float = 0.5
    """σ₀: the noise scale's initial value σ = σ₀/√fan_in (Table 1: 0.5)."""
    dueling: bool = True
    """Dueling streams, combined per atom: logits = V + A − mean_a A (Wang et al. 2016)."""
    double: bool = True
    """Double Q-learning: a' = argmax of the online network, valued by the target (van Hasselt
    et al. 2016)."""
    start_epsilon: float | None = None
    """ε-greedy's first ε; None: 0 with noisy nets, else 1.0 (the paper's ablation without
    noisy nets). Setting it above 0 with noisy=true is refused."""
    end_epsilon: float | None = None
    """ε after the decay; None: 0 with noisy nets, else 0.01 (Hessel et al. 2018)."""
    epsilon_decay_steps: int = 62_500
    """Environment steps over which ε falls linearly (250K frames, Hessel et al. 2018)."""
    frame_buffer: bool = True
    """Image observations are frame stacks, each the last one shifted by a frame (Atari's):
    the replay buffer stores each frame once (PrioritizedFrameReplayBuffer), 1/8 of the memory
    of whole stacks for obs and next_obs; false stores whole observations (images that are not
    frame stacks). Vector observations always go to the plain buffer."""

    def __post_init__(self) -> None:
        positive("algo.lr", self.lr)
        positive("algo.adam_eps", self.adam_eps)
        in_range("algo.gamma", self.gamma, 0.0, 1.0)
        replay_sizes(self.batch_size, self.buffer_size)
        non_negative("algo.learning_starts", self.learning_starts)
        positive("algo.num_envs", self.num_envs)
        positive("algo.train_every", self.train_every)
        positive("algo.gradient_steps", self.gradient_steps)
        positive("algo.target_update_every", self.target_update_every)
        if self.max_grad_norm is not None:
            positive("algo.max_grad_norm", self.max_grad_norm)
        layer_sizes("algo.hidden_sizes", self.hidden_sizes)
        if self.num_atoms < 2:
            raise ConfigError(f"algo.num_atoms={self.num_atoms} must be at least 2")
        if self.v_min >= self.v_max:
            raise ConfigError(f"algo.v_min={self.v_min:g} must be below algo.v_max={self.v_max:g}")
        positive("algo.n_step", self.n_step)
        if self.n_step > self.buffer_size:
            raise ConfigError(f"algo.n_step={self.n_step} is larger than algo.buffer_size={self.buffer_size}")
        in_range("algo.priority_exponent", self.priority_exponent, 0.0, 1.0)
        in_range("algo.importance_sampling", self.importance_sampling, 0.0, 1.0)
        positive("algo.priority_eps", self.priority_eps)
        positive("algo.noisy_std", self.noisy_std)
        if self.start_epsilon is not None:
            in_range("algo.start_epsilon", self.start_epsilon, 0.0, 1.0)
        if self.end_epsilon is not None:
            in_range("algo.end_epsilon", self.end_epsilon, 0.0, 1.0)
        for name in ("start_epsilon", "end_epsilon"):
            value = getattr(self, name)
            if self.noisy and value is not None and value > 0:
                raise ConfigError(
                    f"algo.{name}={value:g} with algo.noisy=true: noisy nets explore instead of ε-greedy; "
                    "set algo.noisy=false to explore by ε, or leave the ε schedule out"
                )
        non_negative("algo.epsilon_decay_steps", self.epsilon_decay_steps)

    @property
    def epsilons(self) -> tuple[float, float]:
        """(start, end) of the ε schedule: none with noisy nets, else 1 → 0.01 by default."""
        default = (0.0, 0.0) if self.noisy else (1.0, 0.01)
        start = default[0] if self.start_epsilon is None else self.start_epsilon
        return start, default[1] if self.end_epsilon is None else self.end_epsilon


# ----- networks -----------------------------------------------------------------------------
def scaled_noise(size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """f(x) = sgn(x) √|x| of x ~ N(0, 1) (Fortunato et al. 2018, eq. 11)."""
    x = torch.randn(size, device=device, generator=generator)
    return x.sign() * x.abs().sqrt()


class NoisyLinear(nn.Module):
    """y = (μ_w + σ_w ⊙ ε_w) x + μ_b + σ_b ⊙ ε_b, with factorised noise ε_w = f(ε_out) f(ε_in)ᵀ,
    ε_b = f(ε_out) (Fortunato et al. 2018, Section 3). Initialised μ ~ U(±1/√p), σ = σ₀/√p for
    p inputs. In training mode the noise drawn by `sample_noise` applies; in eval mode (and
    so in evaluation and export) only the mean weights μ."""

    def __init__(self, in_features: int, out_features: int, std_init: float) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        self.weight_mu = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
        self.weight_sigma = nn.Parameter(torch.full((out_features, in_features), std_init * bound))
        self.bias_mu = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        self.bias_sigma = nn.Parameter(torch.full((out_features,), std_init * bound))
        # Drawn afresh before every use, so not saved: checkpoints hold the generator instead.
        self.register_buffer("eps_in", torch.zeros(in_features), persistent=False)
        self.register_buffer("eps_out", torch.zeros(out_features), persistent=False)

    def sample_noise(self, generator: torch.Generator) -> None:
        self.eps_in.copy_(scaled_noise(len(self.eps_in), generator, self.eps_in.device))
        self.eps_out.copy_(scaled_noise(len(self.eps_out), generator, self.eps_out.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return in_float32(lambda x: F.linear(x, self.weight_mu, self.bias_mu), x)
        weight = self.weight_mu + self.weight_sigma * torch.outer(self.eps_out, self.eps_in)
        bias = self.bias_mu + self.bias_sigma * self.eps_out
        return in_float32(lambda x: F.linear(x, weight, bias), x)  # output layer: float32, as OutputLinear


class DataEfficientCNN(nn.Module):
    """Data-efficient Rainbow's torso (van Hasselt et al. 2019, Appendix, as Kaixhin/Rainbow's
    `data-efficient` architecture): 5×5 convolutions of stride 5 with 32 and 64 channels, then
    256 units; uint8 frames scaled to [0, 1]. An 84×84 frame leaves a 3×3 map, 576 features."""

    out_dim = 256

    def __init__(self, in_channels: int, height: int, width: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=5, stride=5),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=5, stride=5),
            nn.ReLU(),
            nn.Flatten(),
        )
        side_h, side_w = data_efficient_cnn_output_size(height), data_efficient_cnn_output_size(width)
        self.fc = nn.Sequential(nn.Linear(64 * side_h * side_w, self.out_dim), nn.ReLU())

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(frames.float() / 255.0))


def data_efficient_cnn_output_size(size: int) -> int:
    """Side of DataEfficientCNN's last feature map for an input side of `size` pixels (84 → 3)."""
    for _ in range(2):
        size = (size - 5) // 5 + 1
    return size


class RainbowNetwork(nn.Module):
    """The return distribution's logits for every action, (B, |A|, atoms) (atoms = 1 without
    `distributional`: Q itself): a torso, then a plain or dueling head of noisy or plain layers."""

    def __init__(self, obs_space: gym.spaces.Box, num_actions: int, config: RainbowConfig) -> None:
        super().__init__()
        self.num_actions = num_actions
        self.atoms = config.num_atoms if config.distributional else 1
        if is_image(obs_space):
            cnn = NatureCNN if config.cnn == "nature" else DataEfficientCNN
            self.torso: nn.Module = cnn(*obs_space.shape)
            features = cnn.out_dim
        else:
            self.torso = hidden_layers(obs_space.shape[0], config.hidden_sizes)
            features = config.hidden_sizes[-1]

        def linear(out: int) -> nn.Module:
            return NoisyLinear(features, out, config.noisy_std) if config.noisy else OutputLinear(features, out)

        self.dueling = config.dueling
        self.value = linear(self.atoms) if config.dueling else None
        self.advantage = linear(num_actions * self.atoms)
        # A plain tuple, not registered again as submodules (deepcopy maps it to the copy's layers).
        self.noisy_layers = tuple(m for m in (self.value, self.advantage) if isinstance(m, NoisyLinear))

    def logits(self, obs: torch.Tensor) -> torch.Tensor:
        features = self.torso(obs)
        advantage = self.advantage(features).unflatten(-1, (self.num_actions, self.atoms))
        if not self.dueling:
            return advantage
        # Dueling, per atom: V(s)_i + A(s, a)_i − mean_a' A(s, a')_i (Wang et al. 2016, eq. 9).
        return self.value(features).unsqueeze(-2) + advantage - advantage.mean(dim=-2, keepdim=True)

    def sample_noise(self, generator: torch.Generator) -> None:
        for layer in self.noisy_layers:
            layer.sample_noise(generator)


class QValues(nn.Module):
    """Q(s, a) = Σ_i z_i p_i(s, a), the distribution's mean, (B, |A|); the logits themselves
    without `distributional`."""

    def __init__(self, network: RainbowNetwork, support: torch.Tensor | None) -> None:
        super().__init__()
        self.network = network
        self.support = support

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        logits = self.network.logits(obs)
        if self.support is None:
            return logits.squeeze(-1)
        return (F.softmax(logits, dim=-1) * self.support).sum(dim=-1)


class NoiseSource:
    """The generator the noisy layers draw from, checkpointed as its state tensor."""

    def __init__(self, device: torch.device, seed: int) -> None:
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def state_dict(self) -> dict:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["state"].cpu())


def categorical_projection(
    support: torch.Tensor, next_probs: torch.Tensor, returns: torch.Tensor, discounts: torch.Tensor
) -> torch.Tensor:
    """Φ T̂ z: the target distribution projected back onto the support (Bellemare et al. 2017,
    Algorithm 1), shape (B, atoms).

    Each atom z_j moves to T̂z_j = clip(R + γ^n (1 − done) z_j, v_min, v_max), which lies at
    b_j = (T̂z_j − v_min)/Δz between atoms l = ⌊b_j⌋ and l + 1; its probability p_j(s', a*)
    is split between them in proportion to closeness: (l + 1 − b_j) to l, (b_j − l) to l + 1.
    """
    atoms = len(support)
    v_min, v_max = float(support[0]), float(support[-1])
    delta = (v_max - v_min) / (atoms - 1)
    moved = (returns.unsqueeze(1) + discounts.unsqueeze(1) * support).clamp(v_min, v_max)
    b = (moved - v_min) / delta
    lower = b.floor().clamp(0, atoms - 1)
    upper_share = b - lower  # 0 where b is a whole atom (also at v_max): all to `lower`
    upper = (lower + 1).clamp(max=atoms - 1)
    target = torch.zeros_like(next_probs)
    target.scatter_add_(1, lower.long(), next_probs * (1.0 - upper_share))
    target.scatter_add_(1, upper.long(), next_probs * upper_share)
    return target


class Rainbow(Checkpointed):
    Config = RainbowConfig
    action_spaces = (gym.spaces.Discrete,)

    @staticmethod
    def check_spaces(config: RainbowConfig, obs_space: gym.Space, action_space: gym.Space) -> None:
        if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) not in (1, 3):
            raise ConfigError(f"algo=rainbow needs flat vector or (C, H, W) image observations, got {obs_space}")
        if is_image(obs_space) and config.cnn == "data_efficient":
            check_image_space("rainbow", obs_space, "data-efficient CNN", data_efficient_cnn_output_size, smallest=25)
        elif is_image(obs_space):
            check_image_space("rainbow", obs_space)

    def __init__(
        self, config: RainbowConfig, obs_space: gym.Space, action_space: gym.Space, device: torch.device, seed: int
    ) -> None:
        self.config = config
        self.device = device
        self.seed = seed
        self.obs_shape = obs_space.shape
        self.obs_dtype = torch.uint8 if is_image(obs_space) else torch.float32
        self.num_actions = int(action_space.n)
        # z_i = v_min + i Δz, Δz = (v_max − v_min)/(atoms − 1)
        self.support = (
            torch.linspace(config.v_min, config.v_max, config.num_atoms, device=device) if config.distributional else None
        )
        self.network = RainbowNetwork(obs_space, self.num_actions, config).to(device)
        self.target_network = copy.deepcopy(self.network).requires_grad_(False)
        self.q, self.target_q = QValues(self.network, self.support), QValues(self.target_network, self.support)
        self.optimizer = adam(self.network.parameters(), config.lr, eps=config.adam_eps)
        self.noise = NoiseSource(device, seed)
        self.support_check = SupportCheck(config.v_min, config.v_max) if config.distributional and config.support_check else None
        self.rng = np.random.default_rng(seed)  # the ε coin flips (noisy=false)

    # ----- acting ---------------------------------------------------------------------------
    @torch.no_grad()
    def greedy(self, obs: torch.Tensor) -> torch.Tensor:
        """argmax_a Q(s, a) under freshly drawn noise (training), (B,) on the device."""
        self.network.sample_noise(self.noise.generator)
        return self.q(obs).argmax(dim=1)

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = True) -> int:
        """The greedy action for one host observation (evaluation): with the noisy layers'
        mean weights if `deterministic`, else under fresh noise (and the final ε if any)."""
        batch = to_device(obs, self.device, self.obs_dtype).unsqueeze(0)
        if not deterministic:
            if self.rng.random() < self.config.epsilons[1]:
                return int(self.rng.integers(self.num_actions))
            return int(self.greedy(batch)[0])
        self.network.eval()
        try:
            return int(self.q(batch).argmax(dim=1)[0])
        finally:
            self.network.train()

    def explore(
        self, obs: torch.Tensor, epsilon: float, random_actions: np.random.Generator
    ) -> tuple[np.ndarray, torch.Tensor | np.ndarray]:
        """Greedy actions under the noisy layers' noise, each replaced by a uniform one with
        probability ε (0 with noisy nets); for the envs (host) and the buffer."""
        uniform = self.rng.random(len(obs)) < epsilon if epsilon > 0 else np.zeros(len(obs), dtype=bool)
        if uniform.all():
            env_actions = random_actions.integers(self.num_actions, size=len(obs))
            return env_actions, env_actions
        greedy = self.greedy(obs)
        env_actions = greedy.cpu().numpy()
        if not uniform.any():
            return env_actions, greedy
        env_actions[uniform] = random_actions.integers(self.num_actions, size=int(uniform.sum()))
        return env_actions, env_actions

    def policy_module(self) -> nn.Module:
        """observations (B, *obs_shape) → argmax_a Q(s, a) with the mean weights, for export."""
        return nn.Sequential(copy.deepcopy(self.q).eval(), Argmax())

    # ----- learning -------------------------------------------------------------------------
    @torch.no_grad()
    def next_action(self, next_obs: torch.Tensor) -> torch.Tensor:
        """a* = argmax_a Q(s', a) of the online network (double) or of the target, (B, 1)."""
        chooser = self.q if self.config.double else self.target_q
        return chooser(next_obs).argmax(dim=1, keepdim=True)

    @torch.no_grad()
    def target_distribution(self, batch: PrioritizedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Φ T̂ Z(s', a*): the target network's distribution at a*, projected (B, atoms); and the
        unprojected target's mean R + γ^n Q̄(s', a*), (B,), which the projection clips where it
        leaves the support."""
        probs = F.softmax(self.target_network.logits(batch.next_obs), dim=-1)
        index = self.next_action(batch.next_obs).unsqueeze(-1).expand(-1, 1, probs.shape[-1])
        next_probs = probs.gather(1, index).squeeze(1)
        mean = batch.returns + batch.discounts * (next_probs * self.support).sum(dim=-1)
        return categorical_projection(self.support, next_probs, batch.returns, batch.discounts), mean

    @torch.no_grad()
    def td_target(self, batch: PrioritizedBatch) -> torch.Tensor:
        """Without `distributional`: y = R + γ^n (1 − done) Q̄(s', a*)."""
        next_value = self.target_q(batch.next_obs).gather(1, self.next_action(batch.next_obs)).squeeze(1)
        return batch.returns + batch.discounts * next_value

    def update(self, batch: PrioritizedBatch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One gradient step on the importance-weighted loss; returns the metrics and each
        transition's loss, from which its new priority comes (Hessel et al. 2018, eq. 3: the
        KL divergence, which differs from the cross-entropy by the target's entropy)."""
        # Fresh noise for the online network, another draw for the target (Fortunato et al. 2018).
        self.network.sample_noise(self.noise.generator)
        self.target_network.sample_noise(self.noise.generator)
        logits = self.network.logits(batch.obs)
        index = batch.actions.view(-1, 1, 1).expand(-1, 1, logits.shape[-1])
        logits = logits.gather(1, index).squeeze(1)  # (B, atoms) of the actions taken
        metrics: dict[str, torch.Tensor] = {}
        if self.support is not None:
            # Cross-entropy −Σ_i m_i log p_i(s, a) against the projected target m.
            target, target_mean = self.target_distribution(batch)
            losses = -(target * F.log_softmax(logits, dim=-1)).sum(dim=-1)
            q = (F.softmax(logits.detach(), dim=-1) * self.support).sum(dim=-1)
            if self.support_check is not None:
                metrics["train/target_outside_support"] = self.support_check(target_mean)
        else:
            q = logits.squeeze(-1)
            losses = F.smooth_l1_loss(q, self.td_target(batch), reduction="none")
            q = q.detach()
        # Importance sampling corrects prioritised replay's bias: E[w_i L_i] under P.
        loss = (batch.weights * losses).mean()
        gradient_step(self.optimizer, loss, self.config.max_grad_norm)
        metrics |= {"losses/td": loss.detach(), "train/q_mean": q.mean()}
        return metrics, losses.detach()

    # ----- the loop -------------------------------------------------------------------------
    def train(self, run: RunContext) -> None:
        """The replay loop: act (noisy nets or ε-greedy), store n-step transitions, a gradient
        step every `train_every` steps past learning_starts, the target copied every
        `target_update_every`; β anneals from `importance_sampling` to 1 over the run."""
        config = self.config
        envs = make_training_envs(run, config.num_envs)
        capacity = max(min(config.buffer_size, run.total_steps), config.n_step)  # a larger buffer would only hold zeros
        # α = 0 samples uniformly: every p_i^0 = 1.
        alpha = config.priority_exponent if config.prioritized else 0.0
        buffer: PrioritizedReplayBuffer | PrioritizedFrameReplayBuffer
        if len(self.obs_shape) == 3 and config.frame_buffer:
            buffer = PrioritizedFrameReplayBuffer(
                capacity, self.obs_shape, self.device, self.seed, config.num_envs, config.n_step, config.gamma, alpha
            )
        else:
            buffer = PrioritizedReplayBuffer(
                capacity,
                self.obs_shape,
                self.device,
                self.seed,
                config.num_envs,
                config.n_step,
                config.gamma,
                alpha,
                obs_dtype=self.obs_dtype,
            )
        start_epsilon, end_epsilon = config.epsilons

        def explore(obs: torch.Tensor, step: int) -> tuple[np.ndarray, torch.Tensor | np.ndarray]:
            epsilon = linear_epsilon(step, start_epsilon, end_epsilon, config.epsilon_decay_steps)
            if not config.noisy:
                run.record({"train/epsilon": epsilon})
            return self.explore(obs, epsilon, envs.action_space.np_random)

        def learn(
            buffer: PrioritizedReplayBuffer | PrioritizedFrameReplayBuffer, previous: int, step: int
        ) -> dict[str, torch.Tensor] | None:
            learning_from = max(previous, config.learning_starts)
            # β rises linearly from its start to 1 at the end of the run.
            beta = config.importance_sampling + (1.0 - config.importance_sampling) * min(1.0, step / run.total_steps)
            metrics = None
            for _ in range((step // config.train_every - learning_from // config.train_every) * config.gradient_steps):
                batch = buffer.sample(config.batch_size, beta if config.prioritized else 0.0)
                metrics, losses = self.update(batch)
                if config.prioritized:
                    buffer.update_priorities(batch.index, losses + config.priority_eps)
            for _ in range(step // config.target_update_every - learning_from // config.target_update_every):
                polyak_update(self.target_network, self.network, 1.0)  # a copy: θ̄ ← θ
            if metrics is not None and config.prioritized:
                metrics["train/beta"] = torch.tensor(beta)
            return metrics

        train_replay(self, run, envs, buffer, explore, learn, config.learning_starts)

    # ----- checkpoints ----------------------------------------------------------------------
    checkpointed = ("network", "target_network", "optimizer", "noise", "rng")
