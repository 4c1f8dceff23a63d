"""Gymnasium environments: id checks, construction and seeding."""

from __future__ import annotations

import difflib

import gymnasium as gym

from rlrun.config import ConfigError


def check_env_id(env_id: str) -> None:
    """Fail with one line if Gymnasium does not know `env_id`, suggesting close ids."""
    if env_id in gym.registry:
        return
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"env.id={env_id!r} is not a registered Gymnasium environment{hint}")


def make_env(env_id: str, seed: int) -> gym.Env:
    """One environment that records episode returns and lengths in `info["episode"]`.

    The first reset must pass `seed`; later resets continue the seeded RNG.
    """
    env = gym.make(env_id)
    env = gym.wrappers.RecordEpisodeStatistics(env)
    env.action_space.seed(seed)
    env.observation_space.seed(seed)
    return env


def space_name(space: gym.Space) -> str:
    if isinstance(space, gym.spaces.Box):
        return f"continuous (Box, shape {space.shape})"
    if isinstance(space, gym.spaces.Discrete):
        return f"discrete (Discrete({space.n}))"
    return type(space).__name__
