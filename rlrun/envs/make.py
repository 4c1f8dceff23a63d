"""Gymnasium environments: construction (Atari preprocessing, DMC through Shimmy, action repeat,
wrappers), seeding, and saving the training env's state mid-episode."""

from __future__ import annotations

import importlib
import logging
import math

import gymnasium as gym
import numpy as np
import torch

from rlrun.config import ConfigError, EnvConfig, RunError
from rlrun.envs.envpool import EnvPoolVectorEnv
from rlrun.envs.ids import EnvironmentFailure, choose_mujoco_backend, is_atari_game, is_dmc_id, registered_id

log = logging.getLogger("rlrun")

# DrQ-v2's pixel observations of the DeepMind Control Suite (Yarats et al. 2021): 84×84 RGB.
PIXELS_SIZE = 84


def make_env(env: EnvConfig, seed: int, *, training: bool, render_mode: str | None = None) -> gym.Env:
    """One environment that records episode returns and lengths in `info["episode"]` and can
    be restored mid-episode (see EpisodeReplay).

    `training` picks the training variant: Atari rewards are clipped to their sign there (if
    `env.atari.clip_rewards`) and episodes may end at a life loss; the recorded episode return
    is always the game's own score. The first reset must pass `seed`; later resets draw
    their seeds from it. `render_mode="rgb_array"` makes it render frames (videos).
    """
    wrapped = _make_recorded(env, training, render_mode)
    wrapped.action_space.seed(seed)
    wrapped.observation_space.seed(seed)
    return wrapped


def make_vector_env(
    env: EnvConfig,
    seed: int,
    num_envs: int,
    asynchronous: bool,
    *,
    training: bool = True,
    autoreset_mode: gym.vector.AutoresetMode = gym.vector.AutoresetMode.NEXT_STEP,
) -> gym.vector.VectorEnv:
    """`num_envs` copies stepped together (in subprocesses if `asynchronous`), autoreset.

    Episode statistics arrive in `info["episode"]` with the mask `info["_episode"]`
    (NEXT_STEP), or in `info["final_info"]` with the final observations in `info["final_obs"]`
    (SAME_STEP); `training` as for make_env. With env.backend=envpool, EnvPool steps them
    instead (rlrun.envs.envpool), in its own threads whatever `asynchronous` says.
    """
    if env.backend == "envpool":
        return EnvPoolVectorEnv(env, seed, num_envs, training=training)
    make = [lambda: _make_recorded(env, training) for _ in range(num_envs)]
    if asynchronous:
        # A sub-environment's error reaches this process as an EnvironmentFailure with one line;
        # Gymnasium would also log each worker's traceback.
        gym.logger.min_level = max(gym.logger.min_level, gym.logger.ERROR + 1)
    vector_class = gym.vector.AsyncVectorEnv if asynchronous else gym.vector.SyncVectorEnv
    vector = vector_class(make, autoreset_mode=autoreset_mode)
    vector.action_space.seed(seed)
    return vector


def _make_recorded(env: EnvConfig, training: bool, render_mode: str | None = None) -> gym.Env:
    wrapped: gym.Env = gym.wrappers.RecordEpisodeStatistics(_make(env, training, render_mode))
    if training and is_atari_game(env.id) and env.atari.clip_rewards:
        # Outside RecordEpisodeStatistics, so only the agent sees the clipped reward.
        wrapped = gym.wrappers.TransformReward(wrapped, np.sign)
    return EpisodeReplay(wrapped)


class EpisodeReplay(gym.Wrapper):
    """Makes an environment's state restorable by replaying the episode in progress.

    Every reset is seeded: by the caller's seed, or else by a seed drawn from a generator that
    the caller's first seed started. The wrapper records the episode's seed and actions;
    restoring resets a fresh environment with that seed and steps it through the same
    actions, which rebuilds the simulator state and every wrapper's counters (time limit,
    episode statistics, frame stacks) exactly, for any environment that is deterministic
    given its seed (MuJoCo, classic control, ALE). A replay costs at most one episode of
    steps. The state is plain numbers and tensors, so it can go into a weights-only
    checkpoint.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._seeds = np.random.default_rng()  # reseeded by the first seeded reset
        self._episode_seed: int | None = None
        self._actions: list = []
        self._last_obs = None
        self._done = False
        self._reset_on_next_step = False  # a restored episode that had ended (vector autoreset)
        # Set (through a vector env's set_attr) before restore_saved_episode() is called.
        self.saved_episode: dict | None = None
        self._name = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
        space = env.observation_space
        self._float_obs = isinstance(space, gym.spaces.Box) and np.issubdtype(space.dtype, np.floating)
        self._float_actions = isinstance(env.action_space, gym.spaces.Box)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is None:
            seed = int(self._seeds.integers(2**31))
        else:
            self._seeds = np.random.default_rng(seed)
        self._episode_seed, self._actions, self._done = seed, [], False
        self._reset_on_next_step = False
        try:
            obs, info = self.env.reset(seed=seed, options=options)
        except Exception as error:
            raise EnvironmentFailure(f"{self._name} raised {type(error).__name__} in reset(): {error}") from error
        self._last_obs = obs
        return obs, info

    def step(self, action):
        if self._reset_on_next_step:
            # What a NEXT_STEP vector env would have done with this sub-env had the run not
            # been restored: reset it and return (reset obs, 0, False, False, reset info).
            obs, info = self.reset()
            return obs, 0.0, False, False, info
        try:
            obs, reward, terminated, truncated, info = self.env.step(action)
        except Exception as error:
            raise EnvironmentFailure(f"{self._name} raised {type(error).__name__} in step(): {error}") from error
        if not math.isfinite(reward) or (self._float_obs and not np.isfinite(obs).all()):
            self._check_outputs(action, reward)
        self._last_obs = obs
        self._actions.append(np.copy(action))
        self._done = bool(terminated or truncated)
        return obs, reward, terminated, truncated, info

    def _check_outputs(self, action, reward) -> None:
        """A NaN or infinity came out of the environment. The agent would learn from it and
        diverge, so the environment is named as the source, unless the action going in was
        already non-finite: that is the agent's own divergence, which the run's checks report."""
        if self._float_actions and not np.isfinite(action).all():
            return
        what = f"reward ({reward})" if not math.isfinite(reward) else "observation"
        raise EnvironmentFailure(
            f"{self._name} returned a non-finite {what} at step {len(self._actions) + 1} of an episode (seed {self._episode_seed})"
        )

    def episode_state(self) -> dict:
        """The seed generator's state, and the episode in progress: its seed and actions."""
        if self._episode_seed is None:
            raise RuntimeError("the environment was never reset; nothing to save")
        actions = torch.from_numpy(np.stack(self._actions)) if self._actions else torch.zeros(0)
        return {
            "seeds": self._seeds.bit_generator.state,
            "seed": self._episode_seed,
            "actions": actions,
            "done": self._done,
            "obs": torch.as_tensor(np.asarray(self._last_obs)),  # to check the replay against
        }

    def restore_episode(self, state: dict):
        """Replay a saved episode; returns the observation the episode had reached."""
        obs, _ = self.env.reset(seed=state["seed"])
        for action in state["actions"].numpy():
            obs, *_ = self.env.step(action)
        if not np.array_equal(np.asarray(obs), state["obs"].cpu().numpy()):
            log.warning(
                "%s did not replay to its saved state (it is not deterministic given its seed); "
                "the resumed run continues from the replayed one",
                self.spec.id if self.spec else "the environment",
            )
        self._last_obs = obs
        self._seeds = np.random.default_rng()
        self._seeds.bit_generator.state = state["seeds"]
        self._episode_seed, self._actions, self._done = state["seed"], list(state["actions"].numpy()), state["done"]
        self._reset_on_next_step = state["done"]
        return obs

    def restore_saved_episode(self):
        """restore_episode(self.saved_episode): the form a vector env's call() can reach, one
        state per sub-environment."""
        return self.restore_episode(self.saved_episode)


def env_state(env: gym.Env | gym.vector.VectorEnv) -> dict:
    """What `restore_env` needs to put a training env (single or vector) back exactly; for
    EnvPool, which cannot save its environments, only a note that it cannot."""
    if env.metadata.get("backend") == "envpool":
        return {"backend": "envpool"}
    if isinstance(env, gym.vector.VectorEnv):
        episodes = list(env.call("episode_state"))
    else:
        episodes = [env.episode_state()]
    return {"episodes": episodes, "action_space_rng": env.action_space.np_random.bit_generator.state}


def restore_env(env: gym.Env | gym.vector.VectorEnv, state: dict) -> np.ndarray:
    """Replay each (sub-)environment's episode in progress; returns the observation(s) it had
    reached, batched for a vector env."""
    if state.get("backend") == "envpool" or env.metadata.get("backend") == "envpool":
        raise RunError("a run on env.backend=envpool cannot resume: EnvPool cannot save its environments mid-episode")
    env.action_space.np_random.bit_generator.state = state["action_space_rng"]
    if not isinstance(env, gym.vector.VectorEnv):
        return env.restore_episode(state["episodes"][0])
    env.set_attr("saved_episode", state["episodes"])
    return np.stack(env.call("restore_saved_episode"))


def env_spaces(env: EnvConfig) -> tuple[gym.Space, gym.Space]:
    """The observation and action spaces the agent sees (after any Atari preprocessing)."""
    try:
        made = _make(env, training=False)
    except EnvironmentFailure as failure:
        raise ConfigError(str(failure)) from None
    made.close()
    return made.observation_space, made.action_space


def episode_limit(env: EnvConfig) -> int | None:
    """The most agent steps an episode lasts: env.max_episode_steps, else the registered limit,
    in environment steps (emulator frames on Atari) divided by the action repeat (frame skip);
    None for no limit (ALE's own cap of 108,000 frames is not in its registry entry)."""
    env_id = registered_id(env.id)
    limit = env.max_episode_steps if env.max_episode_steps is not None else gym.spec(env_id).max_episode_steps
    if limit is None:
        return None
    return math.ceil(limit / (env.atari.frame_skip if is_atari_game(env_id) else env.action_repeat))


def _make(env: EnvConfig, training: bool, render_mode: str | None = None) -> gym.Env:
    env_id = registered_id(env.id)  # again here: a vector env's subprocess starts without it
    if is_dmc_id(env_id) or "mujoco" in str(gym.spec(env_id).entry_point):
        _route_mujoco_warnings()
    if env.action_repeat > 1 and is_atari_game(env_id):
        raise ConfigError(
            f"env.action_repeat={env.action_repeat} does not apply to Atari games; set env.atari.frame_skip instead"
        )
    if env.pixels and not is_dmc_id(env_id):
        raise ConfigError(f"env.pixels=true needs a DeepMind Control Suite id (env=dmc), not env.id={env.id!r}")
    try:
        if is_atari_game(env_id):
            made = _make_atari(env, env_id, training, render_mode)
        elif is_dmc_id(env_id):
            made = _make_dmc(env, env_id, render_mode)
        else:
            made = gym.make(env_id, render_mode=render_mode, **_make_kwargs(env))
            if env.action_repeat > 1:
                made = ActionRepeat(made, env.action_repeat)
        for index, wrapper in enumerate(env.wrappers):
            made = _wrap(made, wrapper, index)
        return made
    except ConfigError:
        raise
    except gym.error.Error as error:  # Gymnasium's own complaint, e.g. an argument it does not take
        raise ConfigError(f"env.id={env.id!r}: {error}") from None
    except Exception as error:  # the environment's own constructor
        raise EnvironmentFailure(f"{env_id} raised {type(error).__name__} when made: {error}") from error


def _make_kwargs(env: EnvConfig) -> dict:
    """gym.make's keyword arguments from env.kwargs and env.max_episode_steps."""
    kwargs = dict(env.kwargs)
    if env.max_episode_steps is not None:
        kwargs["max_episode_steps"] = env.max_episode_steps
    return kwargs


def check_stored_wrappers(wrappers: object, source: str) -> None:
    """Refuse, in one line, env.wrappers read from a file (a checkpoint's config, a run
    folder's overrides) that would make rlrun call anything but a Gymnasium wrapper class with
    plain values: such files are shared, and running one must not run code it names. Each
    entry's `_target_` must resolve to a gym.Wrapper subclass; no other `_..._` key
    (`_args_`, `_partial_`, `_recursive_`, `_convert_`) and no `_target_` inside its arguments."""
    if not isinstance(wrappers, (list, tuple)):
        raise ConfigError(f"{source}: env.wrappers is not a list; the file is damaged or not rlrun's")
    for index, wrapper in enumerate(wrappers):
        where = f"{source}: env.wrappers[{index}]"
        if not isinstance(wrapper, dict) or not isinstance(wrapper.get("_target_"), str):
            raise ConfigError(f"{where} is not a {{_target_: <wrapper class>, ...}} entry; refused")
        special = sorted(key for key in wrapper if str(key).startswith("_") and key != "_target_")
        if special:
            raise ConfigError(
                f"{where} sets {', '.join(special)}; a stored config may only name a wrapper class and plain arguments"
            )
        nested = nested_target(wrapper, "")
        if nested is not None:
            raise ConfigError(
                f"{where} has a _target_ inside its arguments ({nested}); a stored config may not make rlrun call code. "
                "If you trust the file, give the wrapper on the command line instead"
            )
        target = wrapper["_target_"]
        module_name, _, name = target.rpartition(".")
        try:
            found = getattr(importlib.import_module(module_name), name) if module_name else None
        except (ImportError, AttributeError, ValueError):
            found = None
        if not (isinstance(found, type) and issubclass(found, gym.Wrapper)):
            raise ConfigError(f"{where}: {target} is not a Gymnasium wrapper class; a stored config may only name one")


def nested_target(node: object, path: str = "") -> str | None:
    """The dotted path of the first `_target_` key below `node`'s top level, if any."""
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, (list, tuple)) else ()
    for key, child in children:
        child_path = f"{path}.{key}" if path else str(key)
        if isinstance(child, dict) and "_target_" in child:
            return f"{child_path}._target_"
        found = nested_target(child, child_path)
        if found is not None:
            return found
    return None


def _wrap(made: gym.Env, wrapper: dict, index: int) -> gym.Env:
    """env.wrappers[index] applied to `made` through Hydra's instantiate (the env goes first)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        wrapped = instantiate(dict(wrapper), made)
    except InstantiationException as error:
        if str(error).startswith("Error in call to target") and error.__cause__ is not None:  # the wrapper raised
            reason = f"{type(error.__cause__).__name__}: {error.__cause__}"
        else:
            reason = "cannot import it: " + str(error).splitlines()[0].split(", set env var HYDRA_FULL_ERROR")[0]
        raise ConfigError(f"env.wrappers[{index}]: cannot apply {wrapper['_target_']} ({reason})") from None
    if not isinstance(wrapped, gym.Env):
        raise ConfigError(f"env.wrappers[{index}]: {wrapper['_target_']} returned a {type(wrapped).__name__}, not an environment")
    return wrapped


def _make_atari(env: EnvConfig, env_id: str, training: bool, render_mode: str | None = None) -> gym.Env:
    """The DQN preprocessing (Mnih et al. 2015) from Gymnasium's own wrappers.

    The base game runs at frameskip=1 so that AtariPreprocessing can skip frames itself and
    max-pool the last two (Atari sprites flicker between frames). Evaluation never ends at a
    life loss: it scores whole games.
    """
    atari = env.atari
    game = gym.make(
        env_id,
        frameskip=1,
        repeat_action_probability=atari.repeat_action_probability,
        render_mode=render_mode,
        **_make_kwargs(env),
    )
    game = gym.wrappers.AtariPreprocessing(
        game,
        noop_max=atari.noop_max,
        frame_skip=atari.frame_skip,
        screen_size=atari.screen_size,
        terminal_on_life_loss=training and atari.terminal_on_life_loss,
        grayscale_obs=True,
        scale_obs=False,  # keep uint8 frames: a quarter of float32's replay memory; nets scale by 1/255
    )
    return gym.wrappers.FrameStackObservation(game, atari.frame_stack)


class ActionRepeat(gym.Wrapper):
    """One agent step plays the action `repeat` times and returns the summed reward; it stops
    early when the episode ends, so no step runs past a terminal state."""

    def __init__(self, env: gym.Env, repeat: int) -> None:
        super().__init__(env)
        self.repeat = repeat

    def step(self, action):
        total_reward = 0.0
        for _ in range(self.repeat):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total_reward += float(reward)
            if terminated or truncated:
                break
        return obs, total_reward, terminated, truncated, info


def _make_dmc(env: EnvConfig, env_id: str, render_mode: str | None) -> gym.Env:
    """A DeepMind Control Suite task through Shimmy, with a flat observation vector (the
    suite's observations are a dict of arrays), or with 84×84 RGB frames as observations in
    (C, H, W) layout if env.pixels. The suite ends each episode itself after 1000 steps
    (truncated), or when env.max_episode_steps is reached first."""
    if env.pixels:
        choose_mujoco_backend()  # one line naming what to install when neither EGL nor OSMesa is here
        # DrQ-v2 films the quadruped from camera 2, every other domain from camera 0.
        camera = 2 if env_id.startswith("dm_control/quadruped-") else 0
        render_kwargs = {"height": PIXELS_SIZE, "width": PIXELS_SIZE, "camera_id": camera}
        made = gym.make(env_id, render_mode="rgb_array", render_kwargs=render_kwargs, **_make_kwargs(env))
    else:
        made = gym.make(env_id, render_mode=render_mode, **_make_kwargs(env))
    if env.action_repeat > 1:
        made = ActionRepeat(made, env.action_repeat)
    if not env.pixels:
        return gym.wrappers.FlattenObservation(made)
    frames = gym.wrappers.AddRenderObservation(made, render_only=True)
    channels_first = gym.spaces.Box(0, 255, (3, PIXELS_SIZE, PIXELS_SIZE), np.uint8)
    return gym.wrappers.TransformObservation(frames, _channels_first, channels_first)


def _channels_first(frame: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(frame.transpose(2, 0, 1))


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
