"""The handshake between a run and an algorithm, as typed Protocols.

`rlrun.core.training.execute` builds an `Algorithm` from the plan and calls `agent.train(run)` with a
`RunContext` (rlrun/core/run.py's Run). The algorithm owns its loop; the run owns the clock,
logging, evaluation, checkpoints and stopping:

    env = run.make_env()                        # or run.make_vector_env(num_envs, asynchronous)
    obs, step = run.start(agent, loop={"buffer": buffer})   # new, or restored from a checkpoint
    for step in range(step + 1, run.total_steps + 1):
        action = agent.explore(obs) ...         # act, step the env, store
        if episode ended: run.episode_end(step, episode_return, episode_length)
        if it is time to learn: run.record(agent.update(batch))
        run.after_step(step)                    # logs, evaluates (agent.act), checkpoints, stops

Two verbs act: `explore` gives training actions (exploration included, on the device, in the
algorithm's own action units) and `act` gives the evaluation action (deterministic unless
eval.deterministic=false) for one host observation, in the environment's units.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
import torch
from torch import nn


class Stateful(Protocol):
    """Anything a checkpoint saves: the agent, and each of the loop's own parts."""

    def state_dict(self) -> dict[str, Any]:
        """Tensors, numbers and strings only (checkpoints load with weights_only=True)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Algorithm(Stateful, Protocol):
    """What rlrun needs of an algorithm class (registered in rlrun/core/registry.py)."""

    Config: ClassVar[type]  # a frozen dataclass of the algorithm's settings (configs/algo/<name>.yaml)
    action_spaces: ClassVar[tuple[type[gym.Space], ...]]  # the action space types it supports
    device: torch.device

    @staticmethod
    def check_spaces(config: Any, obs_space: gym.Space, action_space: gym.Space) -> None:
        """Raise rlrun.config.ConfigError (one line) if the spaces do not fit the algorithm."""
        ...

    def __init__(self, config: Any, obs_space: gym.Space, action_space: gym.Space, device: torch.device, seed: int) -> None: ...

    def train(self, run: RunContext) -> None:
        """The training loop, from run.start() to run.total_steps."""
        ...

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray | int:
        """The evaluation action for one host observation, in the environment's units
        (normalisation statistics frozen): the policy's mode, or a sample if not `deterministic`."""
        ...

    def policy_module(self) -> nn.Module:
        """The deterministic policy as one module, for `rlrun export=`: a batch of raw
        observations → environment actions, with normalisation and action rescaling inside."""
        ...


@runtime_checkable
class EpisodeAware(Protocol):
    """Optional, for an algorithm whose evaluation action depends on the episode so far
    (Decision Transformer's context of returns-to-go, observations and actions). Evaluation
    (rlrun.envs.episodes.evaluate: during training, `rlrun evaluate=`, videos) and `rlrun
    collect=` call begin_episode before an episode's first `act` and observe_reward after
    every environment step. An offline algorithm may also define
    `check_dataset(config, info: rlrun.envs.datasets.DatasetInfo)`, a classmethod that raises
    ConfigError (one line) when the dataset cannot be learnt from with these settings."""

    def begin_episode(self) -> None:
        """Forget the previous episode: the next `act` is an episode's first."""
        ...

    def observe_reward(self, reward: float) -> None:
        """The reward of the step just taken with the last `act`."""
        ...


class RunContext(Protocol):
    """What an algorithm's training loop talks to (rlrun/core/run.py's Run)."""

    seed: int
    total_steps: int
    device: torch.device

    def make_env(self) -> gym.Env:
        """The training environment, for loops that step one environment."""
        ...

    def make_vector_env(
        self,
        num_envs: int,
        asynchronous: bool,
        autoreset_mode: gym.vector.AutoresetMode = gym.vector.AutoresetMode.NEXT_STEP,
    ) -> gym.vector.VectorEnv:
        """`num_envs` training environments stepped together, seeded seed, seed + 1, ...;
        NEXT_STEP autoreset (PPO's rollouts) or SAME_STEP (the replay-buffer loops, which take
        each finished episode's last observation from info["final_obs"])."""
        ...

    def dataset(self) -> Any:
        """An offline run's dataset (dataset=) as host arrays: rlrun.envs.datasets.Transitions
        (obs, actions in the environment's units, rewards, next_obs, terminated)."""
        ...

    def start(self, agent: Algorithm, loop: Mapping[str, Stateful]) -> tuple[np.ndarray | None, int]:
        """Begin, or continue from the checkpoint this run resumes: returns (observation, step);
        an offline run's observation is None (it has no training environment)."""
        ...

    def record(self, metrics: Mapping[str, Any]) -> None:
        """Hand over the latest training metrics (tensors may stay on the device)."""
        ...

    def episode_end(self, step: int, episode_return: float, episode_length: int) -> None: ...

    def after_step(self, step: int) -> None:
        """After every environment (or vector) step: log, evaluate, checkpoint, stop."""
        ...
