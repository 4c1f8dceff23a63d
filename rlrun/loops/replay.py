"""The replay loop: act, store, learn. Every algorithm that learns from a replay buffer (SAC,
TD3, DDPG, CrossQ, DSAC-T, MR.Q, DQN) trains through `train_replay`, handing it what differs:
its buffer, how it explores and how it learns from the buffer.

The training envs are a Gymnasium vector env of `num_envs` sub-environments in SAME_STEP
autoreset mode: the step where a sub-env's episode ends already returns the next episode's
first observation, and the transition's real next observation (the episode's last) arrives in
`info["final_obs"]`. So every vector step stores num_envs real transitions, unlike PPO's
NEXT_STEP env, whose extra reset step is no transition.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch

from rlrun.blocks.buffers import Batch, ReplayBuffer, ReplayBufferBase, to_device
from rlrun.blocks.spaces import BoxActions
from rlrun.config import in_range, layer_sizes, non_negative, positive, replay_sizes
from rlrun.envs.datasets import Transitions
from rlrun.protocols import RunContext


@dataclass(frozen=True)
class ReplayLoopConfig:
    """The settings the replay loop reads: every algorithm that learns from a replay
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


# explore(obs, step) -> (actions for the envs, actions as the buffer stores them); `obs` is
# the vector step's observations on the device, `step` the environment steps taken before it.
Explore = Callable[[torch.Tensor, int], tuple[np.ndarray, Any]]
# learn(buffer, previous, step) -> training metrics (or None): the updates a vector step from
# `previous` to `step` earns, called once the buffer can be sampled past learning_starts.
Learn = Callable[[ReplayBufferBase, int, int], Mapping[str, Any] | None]


class ReplayAgent(Protocol):
    device: torch.device


def train_replay(
    agent: ReplayAgent,
    run: RunContext,
    envs: gym.vector.VectorEnv,
    buffer: ReplayBufferBase,
    explore: Explore,
    learn: Learn,
    learning_starts: int,
) -> None:
    """Act, store, learn: each vector step adds envs.num_envs transitions to `buffer`; once
    more than `learning_starts` environment steps are taken and the buffer can be sampled,
    `learn` does the updates they earn. The buffer stores `terminated` for bootstrapping, so
    time-limit truncations still bootstrap."""
    obs, step = run.start(agent, loop={"buffer": buffer})
    # A run resumed without its replay buffer (checkpoint.replay_buffer=false) refills it first.
    warmup = max(1, min(learning_starts, buffer.capacity))

    # Each observation crosses to the device once, to be both acted on and stored; the actions
    # come back to the host for the envs. On a GPU those, and one copy of the rewards and
    # termination flags, are the loop's only per-step copies.
    obs_dtype = buffer.obs_dtype
    obs = to_device(obs, agent.device, obs_dtype)
    while step < run.total_steps:
        previous, step = step, step + envs.num_envs
        env_actions, stored_actions = explore(obs, previous)
        next_obs, rewards, terminated, truncated, info = envs.step(env_actions)
        next_obs_on_device = to_device(next_obs, agent.device, obs_dtype)
        final_obs = final_observations(next_obs, next_obs_on_device, info, obs_dtype)
        buffer.add_batch(obs, stored_actions, rewards, final_obs, terminated, truncated)
        obs = next_obs_on_device
        record_finished_episodes(run, step, info)

        if step > learning_starts and len(buffer) >= warmup and buffer.sampleable:
            metrics = learn(buffer, previous, step)
            if metrics is not None:
                run.record(metrics)
        run.after_step(step)


class ContinuousAgent(ReplayAgent, Protocol):
    actions: BoxActions
    seed: int

    def explore(self, obs: torch.Tensor) -> torch.Tensor:
        """Training actions in [-1, 1]^|A| for a batch of observations (N, obs_dim) on the
        device, exploration included; they stay on the device (the replay buffer stores them
        there)."""

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One gradient step; returns on-device metrics."""


def uniform_then_policy(agent: ContinuousAgent, envs: gym.vector.VectorEnv, learning_starts: int) -> Explore:
    """Uniform random actions for the first `learning_starts` environment steps, then the
    agent's own exploration; the buffer stores actions in [-1, 1], the envs get them rescaled."""

    def explore(obs: torch.Tensor, step: int) -> tuple[np.ndarray, Any]:
        if step < learning_starts:
            unit_actions = agent.actions.to_unit(envs.action_space.sample())
            return agent.actions.to_env(unit_actions), unit_actions
        actions = agent.explore(obs)
        return agent.actions.to_env(actions.cpu().numpy()), actions

    return explore


def train_off_policy(agent: ContinuousAgent, run: RunContext, config: ReplayLoopConfig) -> None:
    """The replay loop of the continuous-action actor-critics (SAC, TD3, DDPG, CrossQ, DSAC-T):
    a uniform buffer, uniform random actions for `config.learning_starts` steps, then
    `config.updates_per_step` gradient steps for each environment step past them."""
    envs = make_training_envs(run, config.num_envs)
    # A buffer larger than the run would only hold zeros.
    buffer = ReplayBuffer(
        min(config.buffer_size, run.total_steps),
        envs.single_observation_space.shape,
        envs.single_action_space.shape,
        agent.device,
        agent.seed,
    )
    explore = uniform_then_policy(agent, envs, config.learning_starts)
    learn = updates_past(agent, config, config.learning_starts)
    train_replay(agent, run, envs, buffer, explore, learn, config.learning_starts)


def updates_past(agent: ContinuousAgent, config: ReplayLoopConfig, learning_starts: int) -> Learn:
    """`config.updates_per_step` gradient steps for each environment step past `learning_starts`."""

    def learn(buffer: ReplayBuffer, previous: int, step: int) -> dict[str, torch.Tensor]:
        for _ in range((step - max(previous, learning_starts)) * config.updates_per_step):
            metrics = agent.update(buffer.sample(config.batch_size))
        return metrics

    return learn


def train_from_pretrained(
    agent: ContinuousAgent, run: RunContext, config: ReplayLoopConfig, warmup_steps: int, offline: Transitions | None
) -> None:
    """The replay loop of an agent started from an offline run (init=): its own policy
    explores from the first step (no uniform random actions), and updates start after
    `warmup_steps` environment steps (WSRL's warm-up). The buffer holds the online transitions
    only, or, given `offline` transitions, starts holding them (actions clipped into the
    bounds, as the offline loop stores them) with room for every online one besides."""
    envs = make_training_envs(run, config.num_envs)
    extra = 0 if offline is None else len(offline.rewards)
    buffer = ReplayBuffer(
        min(config.buffer_size, run.total_steps + extra),
        envs.single_observation_space.shape,
        envs.single_action_space.shape,
        agent.device,
        agent.seed,
    )
    if offline is not None:
        unit_actions = np.clip(agent.actions.to_unit(offline.actions), -1.0, 1.0).astype(np.float32)
        buffer.add_batch(offline.obs, unit_actions, offline.rewards, offline.next_obs, offline.terminated)

    def explore(obs: torch.Tensor, step: int) -> tuple[np.ndarray, Any]:
        actions = agent.explore(obs)
        return agent.actions.to_env(actions.cpu().numpy()), actions

    train_replay(agent, run, envs, buffer, explore, updates_past(agent, config, warmup_steps), warmup_steps)
