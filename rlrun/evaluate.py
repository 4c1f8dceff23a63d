"""Deterministic-policy evaluation on an environment instance of its own."""

from __future__ import annotations

from typing import Callable

import gymnasium as gym
import numpy as np


def evaluate(policy: Callable[[np.ndarray], np.ndarray], env: gym.Env, episodes: int, seed: int) -> np.ndarray:
    """Returns of `episodes` episodes of `policy` (observation → environment action).

    Every call resets with the same `seed`, so successive evaluations of one run start
    from the same initial states and differ only through the policy.
    """
    returns = np.zeros(episodes)
    obs, _ = env.reset(seed=seed)
    for episode in range(episodes):
        done = False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            returns[episode] += reward
            done = terminated or truncated
        obs, _ = env.reset()
    return returns
