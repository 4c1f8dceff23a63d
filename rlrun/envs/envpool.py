"""EnvPool (Weng et al. 2022, arXiv:2206.10558) as the backend of training vector environments.

`+env.backend=envpool` steps a vector algorithm's training environments in EnvPool's C++
thread pool instead of Gymnasium's vector env: Atari games (ALE/<Game>-v5) with the same
preprocessing as rlrun's Gymnasium path, and Gymnasium's MuJoCo tasks (HalfCheetah-v5, ...).
Evaluation, videos and `rlrun evaluate` stay on Gymnasium, so scores compare across backends.

EnvPool autoresets like Gymnasium's NEXT_STEP mode (the step after a done ignores the action and
returns the reset observation with reward 0), which is what the vector loops expect; episode
statistics are counted here, as RecordEpisodeStatistics counts them. EnvPool cannot save an
environment mid-episode, so such a run cannot resume (checkpoint.check_resumable says so).
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np

from rlrun.config import ConfigError, EnvConfig
from rlrun.envs.ids import EnvironmentFailure, is_atari, is_mujoco

ENVPOOL_INSTALL = "pip install -c constraints.txt -e '.[envpool]'"
# The algorithms whose loops take EnvPool's next-step autoreset. The replay-buffer loops store
# each episode's real last observation, which they get from Gymnasium's same-step autoreset.
ENVPOOL_ALGORITHMS = {"ppo"}


def check_envpool(env: EnvConfig, algo_name: str, algo_config: Any, obs_space: gym.Space, action_space: gym.Space) -> None:
    """Fail with one line, before anything is built, if EnvPool cannot train this run; the
    spaces are those of the Gymnasium environment that evaluates it."""
    if algo_name not in ENVPOOL_ALGORITHMS:
        raise ConfigError(
            f"env.backend=envpool runs PPO's vector environments; algo={algo_name}'s replay buffer needs each episode's "
            "final observation, which EnvPool does not return; use env.backend=gymnasium"
        )
    if env.wrappers:
        raise ConfigError("env.wrappers wrap Gymnasium environments one by one; with env.backend=envpool there are none to wrap")
    if env.action_repeat > 1:
        raise ConfigError(
            f"env.action_repeat={env.action_repeat} repeats actions in Gymnasium environments; "
            "with env.backend=envpool use env.backend=gymnasium (Atari games repeat through env.atari.frame_skip)"
        )
    spec = _spec(env, training=True)
    for envpool_space, gymnasium_space in ((spec.observation_space, obs_space), (spec.action_space, action_space)):
        if _size(envpool_space) != _size(gymnasium_space):
            raise ConfigError(
                f"env.backend=envpool: EnvPool's {task_id(env)} has {envpool_space}, Gymnasium's {env.id} {gymnasium_space}; "
                "they are not the same task, use env.backend=gymnasium"
            )


def _size(space: gym.Space) -> tuple:
    return (type(space).__name__, space.n if isinstance(space, gym.spaces.Discrete) else space.shape)


def task_id(env: EnvConfig) -> str:
    """EnvPool's id for `env.id`: ALE/<Game>-v5 is <Game>-v5; MuJoCo ids are the same."""
    envpool = _import_envpool()
    if is_atari(env.id):
        candidate = env.id.removeprefix("ALE/")
    elif is_mujoco(env.id):
        candidate = env.id
    else:
        raise ConfigError(
            f"env.backend=envpool runs Atari (ALE/<Game>-v5) and MuJoCo (e.g. HalfCheetah-v5) tasks, not env.id={env.id!r}; "
            "use env.backend=gymnasium"
        )
    if candidate not in envpool.list_all_envs():
        raise ConfigError(
            f"env.backend=envpool: EnvPool has no task {candidate!r} for env.id={env.id!r}; use env.backend=gymnasium"
        )
    return candidate


def _options(env: EnvConfig, training: bool) -> dict[str, Any]:
    """envpool.make's keyword arguments that make its task the one rlrun's Gymnasium path makes."""
    options = dict(env.kwargs)
    if is_atari(env.id):
        atari = env.atari
        if atari.noop_max < 1:
            raise ConfigError(
                "env.atari.noop_max=0: EnvPool always plays at least one no-op after a reset; "
                "use env.atari.noop_max=1 (exactly one) or more with env.backend=envpool"
            )
        options |= {
            "stack_num": atari.frame_stack,
            "frame_skip": atari.frame_skip,
            "noop_max": atari.noop_max,  # 1..noop_max no-op frames, as AtariPreprocessing
            "img_height": atari.screen_size,
            "img_width": atari.screen_size,
            "repeat_action_probability": atari.repeat_action_probability,
            "episodic_life": training and atari.terminal_on_life_loss,
            "reward_clip": False,  # clipped here, so that episode returns keep the game score
            "use_fire_reset": False,  # Gymnasium's AtariPreprocessing presses nothing at reset
            "gray_scale": True,
            "use_inter_area_resize": True,  # AtariPreprocessing resizes with cv2.INTER_AREA
        }
        if env.max_episode_steps is not None:  # emulator frames on the Gymnasium path, agent steps here
            options["max_episode_steps"] = math.ceil(env.max_episode_steps / atari.frame_skip)
    elif env.max_episode_steps is not None:
        options["max_episode_steps"] = env.max_episode_steps
    return options


def _spec(env: EnvConfig, training: bool):
    envpool = _import_envpool()
    task = task_id(env)
    options = _options(env, training)
    try:
        return envpool.make_spec(task, **options)
    except TypeError:  # an argument its Config does not have
        known = set(envpool.make_spec(task).config._fields)
        unknown = sorted(set(options) - known)
        raise ConfigError(
            f"env.backend=envpool: EnvPool's {task} does not take {', '.join(unknown)} (from env.kwargs); "
            f"it takes {', '.join(sorted(known - _POOL_KEYS))}"
        ) from None


# EnvPool's own settings, which no env.kwargs should set.
_POOL_KEYS = {
    "num_envs",
    "batch_size",
    "num_threads",
    "max_num_players",
    "thread_affinity_offset",
    "base_path",
    "seed",
    "env_seed",
}


def _import_envpool():
    try:
        import envpool
    except ImportError as error:
        raise ConfigError(
            f"env.backend=envpool needs the envpool extra ({error.name} is missing; it needs Python 3.11 or newer): {ENVPOOL_INSTALL}"
        ) from None
    return envpool


class EnvPoolVectorEnv(gym.vector.VectorEnv):
    """`num_envs` EnvPool environments as a Gymnasium vector env with NEXT_STEP autoreset.

    Environment i is seeded seed + i (EnvPool's own seeding, not Gymnasium's, so the same seed
    gives other episodes than on the Gymnasium backend). Finished episodes' returns (the game
    score for Atari, before any reward clipping) and lengths arrive in info["episode"] with the
    mask info["_episode"], as from Gymnasium's RecordEpisodeStatistics.
    """

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP, "backend": "envpool"}

    def __init__(self, env: EnvConfig, seed: int, num_envs: int, *, training: bool = True) -> None:
        self._task = task_id(env)
        self._options = _options(env, training)
        self._clip_rewards = training and is_atari(env.id) and env.atari.clip_rewards
        self.num_envs = num_envs
        self._pool = self._make_pool(seed)
        self.single_observation_space = self._pool.observation_space
        self.single_action_space = self._pool.action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self.action_space.seed(seed)
        self._float_obs = np.issubdtype(self.single_observation_space.dtype, np.floating)
        self._returns = np.zeros(num_envs)
        self._lengths = np.zeros(num_envs, dtype=np.int64)
        self._autoreset = np.zeros(num_envs, dtype=bool)

    def _make_pool(self, seed: int):
        envpool = _import_envpool()
        self._seed = seed
        try:
            return envpool.make(self._task, env_type="gymnasium", num_envs=self.num_envs, seed=seed, **self._options)
        except Exception as error:
            raise EnvironmentFailure(f"EnvPool's {self._task} raised {type(error).__name__} when made: {error}") from error

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None and seed != self._seed:  # EnvPool seeds its environments when it makes them
            self._pool.close()
            self._pool = self._make_pool(seed)
            self.action_space.seed(seed)
        obs, info = self._pool.reset()
        self._returns[:], self._lengths[:], self._autoreset[:] = 0.0, 0, False
        return obs, info

    def step(self, actions):
        actions = np.asarray(actions)
        obs, reward, terminated, truncated, info = self._pool.step(actions)
        if self._float_obs and not (np.isfinite(reward).all() and np.isfinite(obs).all()):
            self._check_outputs(actions, reward)
        score = info.get("reward", reward)  # Atari: the game's own reward, before any clipping
        live = ~self._autoreset  # an autoreset step only resets its environment: the episode has not begun
        self._returns = np.where(live, self._returns + score, 0.0)
        self._lengths = np.where(live, self._lengths + 1, 0)
        done = terminated | truncated
        if done.any():
            info["episode"] = {"r": np.where(done, self._returns, 0.0), "l": np.where(done, self._lengths, 0)}
            info["_episode"] = done
        self._autoreset = done
        if self._clip_rewards:
            reward = np.sign(reward)
        return obs, reward.astype(np.float64), terminated, truncated, info

    def _check_outputs(self, actions: np.ndarray, reward: np.ndarray) -> None:
        """As EpisodeReplay._check_outputs: a NaN or infinity is the environment's fault unless
        a non-finite action went in (the agent's own divergence, which the run's checks report)."""
        if np.issubdtype(actions.dtype, np.floating) and not np.isfinite(actions).all():
            return
        what = "reward" if not np.isfinite(reward).all() else "observation"
        raise EnvironmentFailure(f"EnvPool's {self._task} returned a non-finite {what}")

    def close_extras(self, **kwargs: Any) -> None:
        self._pool.close()
