"""What the continuous-action off-policy algorithms (SAC, TD3, DDPG) share: the training
loop and the mapping between policy actions in [-1, 1] and the environment's bounds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import gymnasium as gym
import numpy as np
import torch

from rlrun.buffers import Batch, ReplayBuffer, to_device
from rlrun.config import ConfigError, in_range, layer_sizes, non_negative, positive
from rlrun.protocols import RunContext


@dataclass(frozen=True)
class OffPolicyConfig:
    """Hyperparameters every off-policy actor-critic here has; defaults are SAC's MuJoCo ones
    (Haarnoja et al. 2018, Table 1) unless a field says otherwise."""

    lr: float = 3e-4
    """Adam step size for every network (actor, critics; SAC's temperature too)."""
    gamma: float = 0.99
    """Discount factor of future rewards."""
    tau: float = 0.005
    """Polyak factor of the target networks: θ̄ ← τθ + (1 − τ)θ̄ at each target update."""
    batch_size: int = 256
    """Transitions sampled from the replay buffer per gradient step."""
    buffer_size: int = 1_000_000
    """Transitions the replay buffer keeps (oldest overwritten); capped at total_steps, since
    a larger buffer would only hold zeros."""
    learning_starts: int = 5000
    """Environment steps of uniform random actions, without updates, that fill the buffer
    before learning starts (CleanRL's sac_continuous_action)."""
    hidden_sizes: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the actor's and of each critic's MLP."""
    updates_per_step: int = 1
    """Gradient steps per environment step once learning has started."""

    def __post_init__(self) -> None:
        positive("algo.lr", self.lr)
        in_range("algo.gamma", self.gamma, 0.0, 1.0)
        in_range("algo.tau", self.tau, 0.0, 1.0)
        positive("algo.batch_size", self.batch_size)
        positive("algo.buffer_size", self.buffer_size)
        if self.batch_size > self.buffer_size:
            raise ConfigError(f"algo.batch_size={self.batch_size} is larger than algo.buffer_size={self.buffer_size}")
        non_negative("algo.learning_starts", self.learning_starts)
        layer_sizes("algo.hidden_sizes", self.hidden_sizes)
        positive("algo.updates_per_step", self.updates_per_step)


class BoxActions:
    """Policies act in [-1, 1]^|A|; the environment gets actions rescaled to [low, high]."""

    def __init__(self, space: gym.spaces.Box) -> None:
        self.low, self.high = space.low, space.high

    def to_env(self, unit_action: np.ndarray) -> np.ndarray:
        return self.low + 0.5 * (unit_action + 1.0) * (self.high - self.low)

    def to_unit(self, env_action: np.ndarray) -> np.ndarray:
        return 2.0 * (env_action - self.low) / (self.high - self.low) - 1.0


def check_continuous_spaces(algo: str, obs_space: gym.Space, action_space: gym.spaces.Box) -> None:
    if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
        raise ConfigError(f"algo={algo} needs a bounded action space, got low={action_space.low} high={action_space.high}")
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise ConfigError(f"algo={algo} needs flat vector observations, got {obs_space}")


def obs_batch(obs: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """One observation (a host array, or a tensor already on `device`) as a float32 batch of one."""
    return to_device(obs, device, torch.float32).unsqueeze(0)


class OffPolicyAgent(Protocol):
    actions: BoxActions
    device: torch.device
    seed: int

    def explore(self, obs: torch.Tensor) -> torch.Tensor:
        """A training action in [-1, 1]^|A| for one observation on the device, exploration
        included; the action stays on the device (the replay buffer stores it there)."""

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One gradient step; returns on-device metrics."""


def train_off_policy(agent: OffPolicyAgent, run: RunContext, config: OffPolicyConfig) -> None:
    """Act, store, learn: one environment step, then `config.updates_per_step` gradient steps.

    The first `config.learning_starts` steps take uniform random actions and do not learn. The
    buffer stores `terminated` only, so time-limit truncations still bootstrap.
    """
    env = run.make_env()
    # A buffer larger than the run would only hold zeros.
    buffer = ReplayBuffer(
        min(config.buffer_size, run.total_steps), env.observation_space.shape, env.action_space.shape, agent.device, agent.seed
    )
    obs, start_step = run.start(agent, loop={"buffer": buffer})
    # A run resumed without its replay buffer (checkpoint.replay_buffer=false) refills it first.
    warmup = max(1, min(config.learning_starts, buffer.capacity))

    # Each observation crosses to the device once, to be both acted on and stored; the action
    # comes back to the host for the env. On a GPU those are the loop's only per-step copies.
    obs = to_device(obs, agent.device, torch.float32)
    for step in range(start_step + 1, run.total_steps + 1):
        if step <= config.learning_starts:
            unit_action = action = agent.actions.to_unit(env.action_space.sample())
        else:
            action = agent.explore(obs)
            unit_action = action.cpu().numpy()
        next_obs, reward, terminated, truncated, info = env.step(agent.actions.to_env(unit_action))
        next_obs = to_device(next_obs, agent.device, torch.float32)
        buffer.add(obs, action, reward, next_obs, terminated)
        obs = next_obs
        if terminated or truncated:
            run.episode_end(step, info["episode"]["r"], info["episode"]["l"])
            obs = to_device(env.reset()[0], agent.device, torch.float32)

        if step > config.learning_starts and len(buffer) >= warmup:
            for _ in range(config.updates_per_step):
                metrics = agent.update(buffer.sample(config.batch_size))
            run.record(metrics)
        run.after_step(step)
