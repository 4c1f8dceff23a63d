"""What the continuous-action off-policy algorithms (SAC, TD3, DDPG, CrossQ, DSAC-T) share:
the training loop and the mapping between policy actions in [-1, 1] and the environment's
bounds; and what every replay-buffer loop (DQN's too) needs of a vector env.

The training envs are a Gymnasium vector env of `num_envs` sub-environments in SAME_STEP
autoreset mode: the step where a sub-env's episode ends already returns the next episode's
first observation, and the transition's real next observation (the episode's last) arrives in
`info["final_obs"]`. So every vector step stores num_envs real transitions, unlike PPO's
NEXT_STEP env, whose extra reset step is no transition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import gymnasium as gym
import numpy as np
import torch

from rlrun.buffers import Batch, ReplayBuffer, to_device
from rlrun.config import ConfigError, in_range, layer_sizes, non_negative, positive, replay_sizes
from rlrun.protocols import RunContext


@dataclass(frozen=True)
class ReplayLoopConfig:
    """The settings train_off_policy (below) reads: every algorithm that learns from a replay
    buffer through it has them. Defaults are SAC's MuJoCo ones (Haarnoja et al. 2018, Table 1;
    learning_starts CleanRL's sac_continuous_action) unless a subclass says otherwise."""

    batch_size: int = 256
    """Transitions sampled from the replay buffer per gradient step."""
    buffer_size: int = 1_000_000
    """Transitions the replay buffer keeps (oldest overwritten); capped at total_steps, since
    a larger buffer would only hold zeros."""
    learning_starts: int = 5000
    """Environment steps of uniform random actions, without updates, that fill the buffer
    before learning starts."""
    updates_per_step: int = 1
    """Gradient steps per environment step once learning has started; environment steps are
    counted over all num_envs sub-environments, so a vector step is followed by
    num_envs × updates_per_step gradient steps and the replay ratio does not depend on
    num_envs."""
    num_envs: int = 1
    """Environments stepped together as one Gymnasium vector env (sub-environment i seeded
    seed + i), acting in one batched forward pass; each vector step adds num_envs transitions
    and counts num_envs steps towards total_steps, learning_starts and every schedule."""

    def __post_init__(self) -> None:
        replay_sizes(self.batch_size, self.buffer_size)
        non_negative("algo.learning_starts", self.learning_starts)
        positive("algo.updates_per_step", self.updates_per_step)
        positive("algo.num_envs", self.num_envs)


@dataclass(frozen=True)
class OffPolicyConfig(ReplayLoopConfig):
    """Hyperparameters every off-policy actor-critic with target networks here has (SAC, TD3,
    DDPG, DSAC-T); defaults are SAC's MuJoCo ones unless a field says otherwise."""

    lr: float = 3e-4
    """Adam step size for every network (actor, critics; SAC's temperature too)."""
    gamma: float = 0.99
    """Discount factor of future rewards."""
    tau: float = 0.005
    """Polyak factor of the target networks: θ̄ ← τθ + (1 − τ)θ̄ at each target update."""
    hidden_sizes: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the actor's and of each critic's MLP."""

    def __post_init__(self) -> None:
        super().__post_init__()
        positive("algo.lr", self.lr)
        in_range("algo.gamma", self.gamma, 0.0, 1.0)
        in_range("algo.tau", self.tau, 0.0, 1.0)
        layer_sizes("algo.hidden_sizes", self.hidden_sizes)


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


def make_training_envs(run: RunContext, num_envs: int) -> gym.vector.VectorEnv:
    """The training envs of a replay-buffer loop: SAME_STEP autoreset, stepped in this process
    (an off-policy step is mostly the update; subprocesses would only add round trips)."""
    return run.make_vector_env(num_envs, asynchronous=False, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def final_observations(next_obs: np.ndarray, on_device: torch.Tensor, info: dict, dtype: torch.dtype) -> torch.Tensor:
    """The observation each sub-env's transition ended in, on the device: `on_device` (the
    vector step's observations, already copied) unless an episode ended, whose last
    observation SAME_STEP autoreset leaves in info["final_obs"]."""
    if "_final_obs" not in info:
        return on_device
    final = next_obs.copy()
    for i in np.flatnonzero(info["_final_obs"]):
        final[i] = info["final_obs"][i]
    return to_device(final, on_device.device, dtype)


def record_finished_episodes(run: RunContext, step: int, info: dict) -> None:
    """run.episode_end for each sub-env whose episode ended in this vector step."""
    if "_final_info" not in info:
        return
    finished = info["final_info"]
    for i in np.flatnonzero(finished.get("_episode", ())):
        run.episode_end(step, finished["episode"]["r"][i], finished["episode"]["l"][i])


class OffPolicyAgent(Protocol):
    actions: BoxActions
    device: torch.device
    seed: int

    def explore(self, obs: torch.Tensor) -> torch.Tensor:
        """Training actions in [-1, 1]^|A| for a batch of observations (N, obs_dim) on the
        device, exploration included; they stay on the device (the replay buffer stores them
        there)."""

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One gradient step; returns on-device metrics."""


def train_off_policy(agent: OffPolicyAgent, run: RunContext, config: ReplayLoopConfig) -> None:
    """Act, store, learn: one vector step of `config.num_envs` environment steps, then
    `config.updates_per_step` gradient steps for each environment step.

    The first `config.learning_starts` environment steps take uniform random actions and do
    not learn. The buffer stores `terminated` only, so time-limit truncations still bootstrap.
    """
    envs = make_training_envs(run, config.num_envs)
    # A buffer larger than the run would only hold zeros.
    buffer = ReplayBuffer(
        min(config.buffer_size, run.total_steps),
        envs.single_observation_space.shape,
        envs.single_action_space.shape,
        agent.device,
        agent.seed,
    )
    obs, step = run.start(agent, loop={"buffer": buffer})
    # A run resumed without its replay buffer (checkpoint.replay_buffer=false) refills it first.
    warmup = max(1, min(config.learning_starts, buffer.capacity))

    # Each observation crosses to the device once, to be both acted on and stored; the actions
    # come back to the host for the envs. On a GPU those, and one copy of the rewards and
    # termination flags, are the loop's only per-step copies.
    obs = to_device(obs, agent.device, torch.float32)
    while step < run.total_steps:
        previous, step = step, step + config.num_envs
        if previous < config.learning_starts:
            unit_actions = actions = agent.actions.to_unit(envs.action_space.sample())
        else:
            actions = agent.explore(obs)
            unit_actions = actions.cpu().numpy()
        next_obs, rewards, terminated, truncated, info = envs.step(agent.actions.to_env(unit_actions))
        next_obs_on_device = to_device(next_obs, agent.device, torch.float32)
        final_obs = final_observations(next_obs, next_obs_on_device, info, torch.float32)
        buffer.add_batch(obs, actions, rewards, final_obs, terminated)
        obs = next_obs_on_device
        record_finished_episodes(run, step, info)

        if step > config.learning_starts and len(buffer) >= warmup:
            # Only the environment steps past learning_starts earn updates.
            for _ in range((step - max(previous, config.learning_starts)) * config.updates_per_step):
                metrics = agent.update(buffer.sample(config.batch_size))
            run.record(metrics)
        run.after_step(step)
