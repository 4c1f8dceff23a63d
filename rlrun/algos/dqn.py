"""Deep Q-Network, with Double DQN and dueling options.

Mnih et al. 2013, "Playing Atari with Deep Reinforcement Learning" (arXiv:1312.5602), and the
Nature version (Mnih et al. 2015): experience replay, a target network, ε-greedy exploration,
the Huber loss (their "error clipping"). `double`: van Hasselt et al. 2016, "Deep
Reinforcement Learning with Double Q-learning". `dueling`: Wang et al. 2016, "Dueling Network
Architectures for Deep Reinforcement Learning". The loop follows CleanRL's dqn.py.

Vector observations get an MLP; image observations (uint8 frame stacks (C, H, W), as the
Atari preprocessing in rlrun/envs/make.py makes them) get the Nature CNN.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from rlrun.blocks.buffers import Batch, FrameReplayBuffer, ReplayBuffer, ReplayBufferBase, to_device
from rlrun.blocks.hl_gauss import HLGauss, SupportCheck, ValueSupportConfig
from rlrun.blocks.nets import NatureCNN, OutputLinear, check_image_space, hidden_layers, is_image, polyak_update
from rlrun.blocks.optim import adam, gradient_step
from rlrun.blocks.policy_modules import Argmax
from rlrun.blocks.state import Checkpointed
from rlrun.config import ConfigError, in_range, layer_sizes, non_negative, positive, replay_sizes
from rlrun.loops.replay import make_training_envs, train_replay
from rlrun.protocols import RunContext


@dataclass(frozen=True)
class DQNConfig(ValueSupportConfig):
    """DQN's hyperparameters; defaults are CleanRL dqn.py's classic-control settings, except
    the gradient-norm clipping (Stable-Baselines3's). The HL-Gauss value support (num_bins,
    v_min, v_max, sigma_ratio) applies with critic_loss=hl_gauss."""

    lr: float = 2.5e-4
    """Adam step size."""
    gamma: float = 0.99
    """Discount factor of future rewards."""
    batch_size: int = 128
    """Transitions sampled from the replay buffer per gradient step."""
    buffer_size: int = 10_000
    """Transitions the replay buffer keeps (oldest overwritten); capped at total_steps, since
    a larger buffer would only hold zeros."""
    learning_starts: int = 10_000
    """Environment steps of ε-greedy acting, without updates, that fill the buffer before
    learning starts."""
    num_envs: int = 1
    """Environments stepped together as one Gymnasium vector env (sub-environment i seeded
    seed + i), acting in one batched forward pass; each vector step adds num_envs transitions
    and counts num_envs environment steps, the unit of every step count here."""
    train_every: int = 10
    """Environment steps between training points (CleanRL's train_frequency), counted over
    all num_envs sub-environments: a vector step that passes k training points takes k ×
    gradient_steps gradient steps, so the replay ratio does not depend on num_envs."""
    gradient_steps: int = 1
    """Gradient steps at each training point (SB3's gradient_steps)."""
    target_update_every: int = 500
    """Environment steps between target-network updates (CleanRL's target_network_frequency),
    counted as train_every is."""
    tau: float = 1.0
    """Target update θ̄ ← τθ + (1 − τ)θ̄; 1.0 copies the online network, Nature DQN's hard
    update."""
    start_epsilon: float = 1.0
    """ε-greedy: the probability of a uniform random action at the first step."""
    end_epsilon: float = 0.05
    """ε after the exploration period, kept to the end of the run."""
    exploration_fraction: float = 0.5
    """The fraction of total_steps over which ε falls linearly from start_epsilon to
    end_epsilon."""
    max_grad_norm: float | None = 10.0
    """Clip the gradient's L2 norm to this (SB3's DQN default; CleanRL does not clip); None
    turns clipping off."""
    hidden_sizes: tuple[int, ...] = (120, 84)
    """Hidden layer widths of the MLP for vector observations (CleanRL's QNetwork); image
    observations get the Nature CNN instead."""
    double: bool = False
    """Double DQN target (van Hasselt et al. 2016): the online network picks a', the target
    network values it, against max's overestimation; off as in Nature DQN."""
    dueling: bool = False
    """Dueling head Q = V + A − mean(A) (Wang et al. 2016); off as in Nature DQN."""
    critic_loss: Literal["huber", "hl_gauss"] = "huber"
    """The Q-network's loss. huber: Q(s, a) regresses its TD target under the Huber loss
    (Nature DQN); hl_gauss: the network outputs a histogram over [v_min, v_max] per action,
    trained by cross-entropy (rlrun/blocks/hl_gauss.py)."""
    frame_buffer: bool = True
    """Image observations are frame stacks, each the last one shifted by a frame (Atari's):
    the replay buffer stores each frame once (FrameReplayBuffer), 1/8 of the memory of whole
    stacks for obs and next_obs; false stores whole observations (images that are not frame
    stacks). Vector observations always go to the plain buffer."""

    def __post_init__(self) -> None:
        positive("algo.lr", self.lr)
        in_range("algo.gamma", self.gamma, 0.0, 1.0)
        replay_sizes(self.batch_size, self.buffer_size)
        non_negative("algo.learning_starts", self.learning_starts)
        positive("algo.num_envs", self.num_envs)
        positive("algo.train_every", self.train_every)
        positive("algo.gradient_steps", self.gradient_steps)
        positive("algo.target_update_every", self.target_update_every)
        positive("algo.tau", self.tau)  # 0 would never update the target network
        in_range("algo.tau", self.tau, 0.0, 1.0)
        in_range("algo.start_epsilon", self.start_epsilon, 0.0, 1.0)
        in_range("algo.end_epsilon", self.end_epsilon, 0.0, 1.0)
        in_range("algo.exploration_fraction", self.exploration_fraction, 0.0, 1.0)
        if self.max_grad_norm is not None:
            positive("algo.max_grad_norm", self.max_grad_norm)
        layer_sizes("algo.hidden_sizes", self.hidden_sizes)
        self.check_value_support(self.critic_loss)


# ----- networks -----------------------------------------------------------------------------
class DuelingHead(nn.Module):
    """Q(s, a) = V(s) + A(s, a) − mean_a' A(s, a') (Wang et al. 2016, eq. 9).

    Subtracting the mean advantage makes V and A identifiable: Q − V has zero mean over actions.
    With `outputs_per_action` > 1 (HL-Gauss logits) the same holds for each output, as Rainbow
    combines its distributional streams: (B, |A|, outputs_per_action).
    """

    def __init__(self, in_dim: int, num_actions: int, outputs_per_action: int = 1) -> None:
        super().__init__()
        self.num_actions, self.outputs_per_action = num_actions, outputs_per_action
        self.value = OutputLinear(in_dim, outputs_per_action)
        self.advantage = OutputLinear(in_dim, num_actions * outputs_per_action)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.outputs_per_action == 1:
            advantage = self.advantage(features)
            return self.value(features) + advantage - advantage.mean(dim=-1, keepdim=True)
        advantage = self.advantage(features).unflatten(-1, (self.num_actions, self.outputs_per_action))
        return self.value(features).unsqueeze(-2) + advantage - advantage.mean(dim=-2, keepdim=True)


class QNetwork(nn.Module):
    """Q(s, ·) for all actions at once, (B, |A|): a torso and a linear or dueling head. With
    `hl_gauss` the head gives each action a histogram's logits (`logits`, (B, |A|, num_bins))
    and Q is that histogram's mean."""

    def __init__(
        self,
        obs_space: gym.spaces.Box,
        num_actions: int,
        hidden_sizes: tuple[int, ...],
        dueling: bool,
        hl_gauss: HLGauss | None = None,
    ) -> None:
        super().__init__()
        self.hl_gauss = hl_gauss
        self.num_actions = num_actions
        if is_image(obs_space):
            self.torso: nn.Module = NatureCNN(*obs_space.shape)
            features = NatureCNN.out_dim
        else:
            # Nested, so the parameters are named torso.0.*, as DQN checkpoints hold them.
            self.torso = nn.Sequential(hidden_layers(obs_space.shape[0], hidden_sizes))
            features = hidden_sizes[-1]
        bins = 1 if hl_gauss is None else len(hl_gauss.centres)
        self.head = DuelingHead(features, num_actions, bins) if dueling else OutputLinear(features, num_actions * bins)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.hl_gauss is None:
            return self.head(self.torso(obs))
        return self.hl_gauss.value(self.logits(obs))

    def logits(self, obs: torch.Tensor) -> torch.Tensor:
        """HL-Gauss only: each action's histogram logits, (B, |A|, num_bins)."""
        logits = self.head(self.torso(obs))
        return logits if logits.dim() == 3 else logits.unflatten(-1, (self.num_actions, -1))


def linear_epsilon(step: int, start: float, end: float, duration: float) -> float:
    """ε falls linearly from `start` to `end` over `duration` steps, then stays at `end`."""
    if step >= duration:
        return end
    return start + (end - start) * step / duration


class DQN(Checkpointed):
    Config = DQNConfig
    action_spaces = (gym.spaces.Discrete,)

    @staticmethod
    def check_spaces(config: DQNConfig, obs_space: gym.Space, action_space: gym.Space) -> None:
        if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) not in (1, 3):
            raise ConfigError(f"algo=dqn needs flat vector or (C, H, W) image observations, got {obs_space}")
        if is_image(obs_space):
            check_image_space("dqn", obs_space)

    def __init__(self, config: DQNConfig, obs_space: gym.Space, action_space: gym.Space, device: torch.device, seed: int) -> None:
        self.config = config
        self.device = device
        self.seed = seed
        self.obs_shape = obs_space.shape
        # uint8 frames stay uint8 in the replay buffer (the CNN scales them); vectors are float32.
        self.obs_dtype = torch.uint8 if is_image(obs_space) else torch.float32
        self.num_actions = int(action_space.n)
        self.hl_gauss = HLGauss.from_config(config) if config.critic_loss == "hl_gauss" else None
        self.support_check = SupportCheck(self.hl_gauss.v_min, self.hl_gauss.v_max) if self.hl_gauss is not None else None
        self.q = QNetwork(obs_space, self.num_actions, config.hidden_sizes, config.dueling, self.hl_gauss).to(device)
        self.target_q = copy.deepcopy(self.q).requires_grad_(False)
        self.optimizer = adam(self.q.parameters(), config.lr)
        self.rng = np.random.default_rng(seed)  # the ε coin flips

    # ----- acting ---------------------------------------------------------------------------
    @torch.no_grad()
    def greedy(self, obs: torch.Tensor) -> torch.Tensor:
        """argmax_a Q(s, a) for a batch of observations on the device, (B,) on the device."""
        return self.q(obs).argmax(dim=1)

    def act(self, obs: np.ndarray, deterministic: bool = True) -> int:
        """The greedy action for one host observation (evaluation); ε-greedy with the final
        ε (algo.end_epsilon) if not `deterministic`."""
        if not deterministic and self.rng.random() < self.config.end_epsilon:
            return int(self.rng.integers(self.num_actions))
        return int(self.greedy(to_device(obs, self.device, self.obs_dtype).unsqueeze(0))[0])

    def explore(
        self, obs: torch.Tensor, epsilon: float, random_actions: np.random.Generator
    ) -> tuple[np.ndarray, torch.Tensor | np.ndarray]:
        """ε-greedy actions for a batch of observations on the device; returns them twice:
        on the host for the envs, and as the replay buffer should take them.

        Each sub-env flips its own ε coin (self.rng); the uniform actions come from
        `random_actions`, the vector env's action-space generator (checkpointed with the env),
        drawn as Discrete.sample draws them. Greedy actions are stored from the device unless
        some were replaced."""
        uniform = self.rng.random(len(obs)) < epsilon
        if uniform.all():  # no greedy action needed: no forward pass, nothing read back
            env_actions = random_actions.integers(self.num_actions, size=len(obs))
            return env_actions, env_actions
        greedy = self.greedy(obs)
        env_actions = greedy.cpu().numpy()
        if not uniform.any():
            return env_actions, greedy
        env_actions[uniform] = random_actions.integers(self.num_actions, size=int(uniform.sum()))
        return env_actions, env_actions

    def policy_module(self) -> nn.Module:
        """observations (B, *obs_shape) → argmax_a Q(s, a), for export."""
        return nn.Sequential(self.q, Argmax())

    # ----- learning -------------------------------------------------------------------------
    @torch.no_grad()
    def td_target(self, batch: Batch) -> torch.Tensor:
        """DQN:        y = r + γ (1 − terminated) max_a' Q̄(s', a')
        Double DQN: y = r + γ (1 − terminated) Q̄(s', argmax_a' Q(s', a'))

        Q̄ is the target network. Double DQN lets the online network choose the action and
        the target network value it, which removes most of max's overestimation bias. Only
        true terminations stop bootstrapping; a time-limit truncation still bootstraps.
        """
        next_q = self.target_q(batch.next_obs)
        if self.config.double:
            next_action = self.q(batch.next_obs).argmax(dim=1, keepdim=True)
            next_value = next_q.gather(1, next_action).squeeze(1)
        else:
            next_value = next_q.max(dim=1).values
        return batch.rewards + self.config.gamma * (1.0 - batch.terminated) * next_value

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self.hl_gauss is not None:
            return self.update_hl_gauss(batch)
        # Q(s, a) of the actions taken.
        q = self.q(batch.obs).gather(1, batch.actions.unsqueeze(1)).squeeze(1)
        # Huber loss (δ = 1): squared for |y − Q| < 1, linear beyond, so one large TD error
        # cannot dominate the gradient (Mnih et al. 2015's clipping of the error to [−1, 1]).
        loss = F.smooth_l1_loss(q, self.td_target(batch))
        gradient_step(self.optimizer, loss, self.config.max_grad_norm)
        return {"losses/td": loss.detach(), "train/q_mean": q.mean().detach()}

    def update_hl_gauss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Cross-entropy −Σ_k p_k(y) log softmax(logits(s, a))_k between the TD target's
        HL-Gauss histogram p(y) and the taken action's (rlrun/blocks/hl_gauss.py)."""
        index = batch.actions.view(-1, 1, 1).expand(-1, 1, len(self.hl_gauss.centres))
        logits = self.q.logits(batch.obs).gather(1, index).squeeze(1)
        target = self.td_target(batch)
        loss = self.hl_gauss.loss(logits, target).mean()
        gradient_step(self.optimizer, loss, self.config.max_grad_norm)
        q = self.hl_gauss.value(logits.detach())
        return {"losses/td": loss.detach(), "train/q_mean": q.mean(), "train/target_outside_support": self.support_check(target)}

    # ----- the loop -------------------------------------------------------------------------
    def train(self, run: RunContext) -> None:
        """The replay loop with ε-greedy exploration (ε annealed over exploration_fraction of
        the run), `gradient_steps` updates every `train_every` steps and the target network
        updated every `target_update_every` steps, counted past learning_starts."""
        config = self.config
        envs = make_training_envs(run, config.num_envs)
        # A buffer larger than the run would only hold zeros.
        capacity = min(config.buffer_size, run.total_steps)
        buffer: ReplayBufferBase
        if len(self.obs_shape) == 3 and config.frame_buffer:
            buffer = FrameReplayBuffer(capacity, self.obs_shape, self.device, self.seed, config.num_envs, gamma=config.gamma)
        else:
            buffer = ReplayBuffer(
                capacity, self.obs_shape, (), self.device, self.seed, obs_dtype=self.obs_dtype, action_dtype=torch.int64
            )
        exploration_steps = config.exploration_fraction * run.total_steps

        def explore(obs: torch.Tensor, step: int) -> tuple[np.ndarray, torch.Tensor | np.ndarray]:
            epsilon = linear_epsilon(step, config.start_epsilon, config.end_epsilon, exploration_steps)
            run.record({"train/epsilon": epsilon})
            return self.explore(obs, epsilon, envs.action_space.np_random)

        def learn(buffer: ReplayBufferBase, previous: int, step: int) -> dict[str, torch.Tensor] | None:
            # The schedules' points this vector step passed, past learning_starts.
            learning_from = max(previous, config.learning_starts)
            metrics = None
            for _ in range((step // config.train_every - learning_from // config.train_every) * config.gradient_steps):
                metrics = self.update(buffer.sample(config.batch_size))
            # θ̄ ← τ θ + (1 − τ) θ̄ every target_update_every steps; τ = 1 copies (Nature DQN).
            for _ in range(step // config.target_update_every - learning_from // config.target_update_every):
                polyak_update(self.target_q, self.q, config.tau)
            return metrics

        train_replay(self, run, envs, buffer, explore, learn, config.learning_starts)

    # ----- checkpoints ----------------------------------------------------------------------
    checkpointed = ("q", "target_q", "optimizer", "rng")
