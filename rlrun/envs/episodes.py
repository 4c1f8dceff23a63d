"""Episodes of a policy on an environment of its own: what evaluation during training,
`rlrun evaluate=` and videos all run."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import gymnasium as gym
import numpy as np

from rlrun.protocols import EpisodeAware

EVAL_SEED_OFFSET = 10_000  # the evaluation env's seed is seed + this, apart from training's


class Evaluation(NamedTuple):
    returns: np.ndarray  # each episode's undiscounted return
    lengths: np.ndarray  # each episode's number of steps


def evaluate(policy: Callable[[np.ndarray], object], env: gym.Env, episodes: int, seed: int, agent: object = None) -> Evaluation:
    """`episodes` episodes of `policy` (observation → environment action).

    Every call resets with the same `seed`, so successive evaluations of one run start
    from the same initial states and differ only through the policy. An `agent` whose
    action depends on the episode so far (rlrun.protocols.EpisodeAware) is told where each
    episode starts and every reward.
    """
    aware = agent if isinstance(agent, EpisodeAware) else None
    returns, lengths = np.zeros(episodes), np.zeros(episodes, dtype=np.int64)
    obs, _ = env.reset(seed=seed)
    for episode in range(episodes):
        done = False
        if aware is not None:
            aware.begin_episode()
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            if aware is not None:
                aware.observe_reward(float(reward))
            returns[episode] += reward
            lengths[episode] += 1
            done = terminated or truncated
        obs, _ = env.reset()
    return Evaluation(returns, lengths)
