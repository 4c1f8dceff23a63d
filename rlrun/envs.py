"""Gymnasium environments: id checks, construction and seeding."""

from __future__ import annotations

import difflib
import logging

import gymnasium as gym

from rlrun.config import ConfigError

log = logging.getLogger("rlrun")


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
    env = gym.wrappers.RecordEpisodeStatistics(_make(env_id))
    env.action_space.seed(seed)
    env.observation_space.seed(seed)
    return env


def make_vector_env(env_id: str, seed: int, num_envs: int, asynchronous: bool) -> gym.vector.VectorEnv:
    """`num_envs` copies stepped together (in subprocesses if `asynchronous`), autoreset.

    Episode statistics arrive in `info["episode"]` with the mask `info["_episode"]`.
    """
    make = [lambda: _make(env_id) for _ in range(num_envs)]
    vector_class = gym.vector.AsyncVectorEnv if asynchronous else gym.vector.SyncVectorEnv
    env = gym.wrappers.vector.RecordEpisodeStatistics(vector_class(make))
    env.action_space.seed(seed)
    return env


def env_spaces(env_id: str) -> tuple[gym.Space, gym.Space]:
    """The observation and action spaces of `env_id`."""
    env = _make(env_id)
    env.close()
    return env.observation_space, env.action_space


def _make(env_id: str) -> gym.Env:
    if "mujoco" in str(gym.spec(env_id).entry_point):
        _route_mujoco_warnings()
    return gym.make(env_id)


def space_name(space: gym.Space) -> str:
    if isinstance(space, gym.spaces.Box):
        return f"continuous (Box, shape {space.shape})"
    if isinstance(space, gym.spaces.Discrete):
        return f"discrete (Discrete({space.n}))"
    return type(space).__name__


def _route_mujoco_warnings() -> None:
    """Send MuJoCo's warnings to the run log instead of raw stderr.

    Gymnasium's MuJoCo XML files use attributes that newer MuJoCo releases deprecate, and
    the C library prints that on every load; simulation warnings (NaN or unstable QACC) stay
    visible at warning level.
    """
    import mujoco

    def handler(message: str) -> None:
        log.log(logging.DEBUG if "deprecated" in message else logging.WARNING, "MuJoCo: %s", message)

    mujoco.set_mju_user_warning(handler)
