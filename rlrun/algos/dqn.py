"""Deep Q-Network, with Double DQN and dueling options.

Mnih et al. 2013, "Playing Atari with Deep Reinforcement Learning" (arXiv:1312.5602), and the
Nature version (Mnih et al. 2015): experience replay, a target network, ε-greedy exploration,
the Huber loss (their "error clipping"). `double`: van Hasselt et al. 2016, "Deep
Reinforcement Learning with Double Q-learning". `dueling`: Wang et al. 2016, "Dueling Network
Architectures for Deep Reinforcement Learning". The loop follows CleanRL's dqn.py.

Vector observations get an MLP; image observations (uint8 frame stacks (C, H, W), as the
Atari preprocessing in rlrun/envs.py makes them) get the Nature CNN.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from rlrun.buffers import Batch, ReplayBuffer, to_device
from rlrun.config import ConfigError, in_range, layer_sizes, non_negative, positive
from rlrun.nets import NatureCNN, OutputLinear, check_image_space, hidden_layers, is_image, polyak_update
from rlrun.optim import adam, gradient_step
from rlrun.policy_modules import Argmax
from rlrun.protocols import RunContext


@dataclass(frozen=True)
class DQNConfig:
    """DQN's hyperparameters; defaults are CleanRL dqn.py's classic-control settings, except
    the gradient-norm clipping (Stable-Baselines3's)."""

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
    train_every: int = 10
    """Environment steps between training points (CleanRL's train_frequency)."""
    gradient_steps: int = 1
    """Gradient steps at each training point (SB3's gradient_steps)."""
    target_update_every: int = 500
    """Environment steps between target-network updates (CleanRL's target_network_frequency)."""
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

    def __post_init__(self) -> None:
        positive("algo.lr", self.lr)
        in_range("algo.gamma", self.gamma, 0.0, 1.0)
        positive("algo.batch_size", self.batch_size)
        positive("algo.buffer_size", self.buffer_size)
        if self.batch_size > self.buffer_size:
            raise ConfigError(f"algo.batch_size={self.batch_size} is larger than algo.buffer_size={self.buffer_size}")
        non_negative("algo.learning_starts", self.learning_starts)
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


# ----- networks -----------------------------------------------------------------------------
class DuelingHead(nn.Module):
    """Q(s, a) = V(s) + A(s, a) − mean_a' A(s, a') (Wang et al. 2016, eq. 9).

    Subtracting the mean advantage makes V and A identifiable: Q − V has zero mean over actions.
    """

    def __init__(self, in_dim: int, num_actions: int) -> None:
        super().__init__()
        self.value = OutputLinear(in_dim, 1)
        self.advantage = OutputLinear(in_dim, num_actions)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        advantage = self.advantage(features)
        return self.value(features) + advantage - advantage.mean(dim=-1, keepdim=True)


class QNetwork(nn.Module):
    """Q(s, ·) for all actions at once, (B, |A|): a torso and a linear or dueling head."""

    def __init__(self, obs_space: gym.spaces.Box, num_actions: int, hidden_sizes: tuple[int, ...], dueling: bool) -> None:
        super().__init__()
        if is_image(obs_space):
            self.torso: nn.Module = NatureCNN(*obs_space.shape)
            features = NatureCNN.out_dim
        else:
            # Nested, so the parameters are named torso.0.*, as DQN checkpoints hold them.
            self.torso = nn.Sequential(hidden_layers(obs_space.shape[0], hidden_sizes))
            features = hidden_sizes[-1]
        self.head = DuelingHead(features, num_actions) if dueling else OutputLinear(features, num_actions)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.torso(obs))


def linear_epsilon(step: int, start: float, end: float, duration: float) -> float:
    """ε falls linearly from `start` to `end` over `duration` steps, then stays at `end`."""
    if step >= duration:
        return end
    return start + (end - start) * step / duration


class DQN:
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
        self.q = QNetwork(obs_space, self.num_actions, config.hidden_sizes, config.dueling).to(device)
        self.target_q = copy.deepcopy(self.q).requires_grad_(False)
        self.optimizer = adam(self.q.parameters(), config.lr)
        self.rng = np.random.default_rng(seed)  # the ε coin flips

    # ----- acting ---------------------------------------------------------------------------
    @torch.no_grad()
    def greedy(self, obs: torch.Tensor) -> torch.Tensor:
        """argmax_a Q(s, a) for one un-batched observation on the device, as a device scalar."""
        return self.q(obs.unsqueeze(0)).argmax(dim=1)[0]

    def act(self, obs: np.ndarray, deterministic: bool = True) -> int:
        """The greedy action for one host observation (evaluation); ε-greedy with the final
        ε (algo.end_epsilon) if not `deterministic`."""
        if not deterministic and self.rng.random() < self.config.end_epsilon:
            return int(self.rng.integers(self.num_actions))
        return int(self.greedy(to_device(obs, self.device, self.obs_dtype)))

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
        # Q(s, a) of the actions taken.
        q = self.q(batch.obs).gather(1, batch.actions.unsqueeze(1)).squeeze(1)
        # Huber loss (δ = 1): squared for |y − Q| < 1, linear beyond, so one large TD error
        # cannot dominate the gradient (Mnih et al. 2015's clipping of the error to [−1, 1]).
        loss = F.smooth_l1_loss(q, self.td_target(batch))
        gradient_step(self.optimizer, loss, self.config.max_grad_norm)
        return {"losses/td": loss.detach(), "train/q_mean": q.mean().detach()}

    # ----- the loop -------------------------------------------------------------------------
    def train(self, run: RunContext) -> None:
        config = self.config
        env = run.make_env()
        # A buffer larger than the run would only hold zeros.
        capacity = min(config.buffer_size, run.total_steps)
        buffer = ReplayBuffer(
            capacity, self.obs_shape, (), self.device, self.seed, obs_dtype=self.obs_dtype, action_dtype=torch.int64
        )
        exploration_steps = config.exploration_fraction * run.total_steps
        obs, start_step = run.start(self, loop={"buffer": buffer})
        # A run resumed without its replay buffer (checkpoint.replay_buffer=false) refills it first.
        warmup = max(1, min(config.learning_starts, capacity))

        # Each observation crosses to the device once, to be both acted on and stored; a greedy
        # action comes back to the host for the env. On a GPU those are the per-step copies.
        obs = to_device(obs, self.device, self.obs_dtype)
        for step in range(start_step + 1, run.total_steps + 1):
            # ε-greedy: a uniform random action with probability ε, else the greedy one.
            epsilon = linear_epsilon(step - 1, config.start_epsilon, config.end_epsilon, exploration_steps)
            if self.rng.random() < epsilon:
                action = env_action = env.action_space.sample()
            else:
                action = self.greedy(obs)
                env_action = int(action)
            next_obs, reward, terminated, truncated, info = env.step(env_action)
            next_obs = to_device(next_obs, self.device, self.obs_dtype)
            buffer.add(obs, action, reward, next_obs, terminated)
            obs = next_obs
            if terminated or truncated:
                run.episode_end(step, info["episode"]["r"], info["episode"]["l"])
                obs = to_device(env.reset()[0], self.device, self.obs_dtype)

            if step > config.learning_starts and len(buffer) >= warmup:
                if step % config.train_every == 0:
                    for _ in range(config.gradient_steps):
                        metrics = self.update(buffer.sample(config.batch_size))
                    run.record(metrics)
                # θ̄ ← τ θ + (1 − τ) θ̄ every target_update_every steps; τ = 1 copies (Nature DQN).
                if step % config.target_update_every == 0:
                    polyak_update(self.target_q, self.q, config.tau)
            run.record({"train/epsilon": epsilon})
            run.after_step(step)

    # ----- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "q": self.q.state_dict(),
            "target_q": self.target_q.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict) -> None:
        self.q.load_state_dict(state["q"])
        self.target_q.load_state_dict(state["target_q"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = state["rng"]
