"""The replay loop for a batched group of seeds (docs/batched-seeds.md): the act → step →
store → learn of rlrun/loops/replay.py, for S seeds of one configuration at once.

The seeds' agents are one stacked agent (rlrun/blocks/stacking.py): one forward pass acts
for all of them, one update learns for all of them. Everything else is each seed's own, as
in a separate run: its run (folder, logs, evaluation, checkpoints), its training envs, its
replay buffer and sampling generator.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import gymnasium as gym
import torch

from rlrun.blocks.buffers import Batch, ReplayBuffer, to_device
from rlrun.blocks.stacking import SeedGroup
from rlrun.config import RunError
from rlrun.loops.replay import ContinuousAgent, ReplayLoopConfig, final_observations, make_training_envs, record_finished_episodes
from rlrun.protocols import RunContext

log = logging.getLogger("rlrun")


def sample_stacked(buffers: Sequence[ReplayBuffer], batch_size: int) -> Batch:
    """A batch from each seed's buffer, stacked: every field (S, B, ...)."""
    return Batch(*(torch.stack(parts) for parts in zip(*(buffer.sample(batch_size) for buffer in buffers))))


def train_off_policy_seeds(group: SeedGroup, runs: Sequence[RunContext], config: ReplayLoopConfig) -> None:
    """train_off_policy (rlrun/loops/replay.py) for the seeds of `group`, seed s in `runs[s]`:
    uniform random actions for config.learning_starts steps, then the stacked agent's
    exploration, and config.updates_per_step stacked updates per environment step past them.
    The seeds step in lockstep, so their schedules agree.

    A seed whose run fails (RunError: its environment failed, it diverged) stops alone, its
    reason kept in group.stopped; the others go on. A stop of the whole run (a signal, a
    pruned trial) ends every seed after its step."""
    agent: ContinuousAgent = group.stacked
    runs = list(runs)
    envs = [make_training_envs(run, config.num_envs) for run in runs]
    total_steps = runs[0].total_steps
    buffers = [
        ReplayBuffer(
            min(config.buffer_size, total_steps),
            env.single_observation_space.shape,
            env.single_action_space.shape,
            agent.device,
            run.seed,
        )
        for run, env in zip(runs, envs)
    ]
    starts = [run.start(member, loop={"buffer": buffer}) for run, member, buffer in zip(runs, group.members, buffers)]
    step = starts[0][1]
    obs = torch.stack([to_device(first_obs, agent.device, torch.float32) for first_obs, _ in starts])  # (S, num_envs, obs)
    num_envs = config.num_envs
    while step < total_steps:
        previous, step = step, step + num_envs
        if previous < config.learning_starts:
            unit_actions = [agent.actions.to_unit(env.action_space.sample()) for env in envs]
            stored = [torch.as_tensor(actions, dtype=torch.float32) for actions in unit_actions]
        else:
            stored = list(agent.explore(obs))  # (S, num_envs, |A|) in [-1, 1]
            unit_actions = [actions.cpu().numpy() for actions in stored]
        next_obs_all, failed = [], {}
        for s, (run, env, buffer) in enumerate(zip(runs, envs, buffers)):
            try:
                next_obs, rewards, terminated, truncated, info = env.step(agent.actions.to_env(unit_actions[s]))
            except RunError as failure:
                failed[s] = failure
                next_obs_all.append(obs[s])
                continue
            next_obs_on_device = to_device(next_obs, agent.device, torch.float32)
            final_obs = final_observations(next_obs, next_obs_on_device, info, torch.float32)
            buffer.add_batch(obs[s], stored[s], rewards, final_obs, terminated, truncated)
            next_obs_all.append(next_obs_on_device)
            record_finished_episodes(run, step, info)
        obs = torch.stack(next_obs_all)
        if failed:
            runs, envs, buffers, obs = _without(failed, group, runs, envs, buffers, obs)
            if not runs:
                return
            agent, failed = group.stacked, {}

        if step > config.learning_starts:
            # Only the environment steps past learning_starts earn updates.
            for _ in range((step - max(previous, config.learning_starts)) * config.updates_per_step):
                metrics = agent.update(sample_stacked(buffers, config.batch_size))
            group.updated()
            for s, run in enumerate(runs):
                run.record({name: value[s] for name, value in metrics.items()})
        # Every seed logs, evaluates and checkpoints before a stop (a signal) ends the group.
        stops = []
        for s, run in enumerate(runs):
            try:
                run.after_step(step)
            except RunError as failure:
                failed[s] = failure
            except Exception as stop:  # noqa: BLE001  re-raised below, once every seed has had its step
                stops.append(stop)
        if failed:
            runs, envs, buffers, obs = _without(failed, group, runs, envs, buffers, obs)
            agent = group.stacked
        if stops:
            raise stops[0]
        if not runs:
            return


def _without(
    failed: dict[int, RunError],
    group: SeedGroup,
    runs: list[RunContext],
    envs: list[gym.vector.VectorEnv],
    buffers: list[ReplayBuffer],
    obs: torch.Tensor,
) -> tuple[list[RunContext], list[gym.vector.VectorEnv], list[ReplayBuffer], torch.Tensor]:
    """The group's parts without the seeds at the indices of `failed`, whose reasons go to
    group.stopped; the stacked agent is rebuilt from the seeds that go on."""
    for index, failure in failed.items():
        seed = group.stack.seeds[index]
        group.stopped[seed] = failure
        log.error("seed %d stopped: %s", seed, failure)
    kept = [index for index in range(len(runs)) if index not in failed]
    if kept:
        group.keep(kept)
        going_on = group.stack.seeds
        log.warning("the group goes on with seed%s %s", "s" if len(going_on) > 1 else "", ", ".join(map(str, going_on)))
    return [runs[i] for i in kept], [envs[i] for i in kept], [buffers[i] for i in kept], obs[kept]
