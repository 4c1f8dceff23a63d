"""Environment ids: which package registers an id, what kind of simulator it is, and the
failures an environment can cause. Imported by every other module of rlrun.envs."""

from __future__ import annotations

import contextlib
import ctypes.util
import difflib
import importlib
import logging
import os
import sys

import gymnasium as gym

from rlrun.config import ConfigError, RunError

ATARI_INSTALL = "pip install -c constraints.txt -e '.[atari]'"
DMC_INSTALL = "pip install -c constraints.txt -e '.[dmc]'"


ATARI_INSTALL = "pip install -c constraints.txt -e '.[atari]'"


DMC_INSTALL = "pip install -c constraints.txt -e '.[dmc]'"


class EnvironmentFailure(RunError):
    """The environment raised, or returned a NaN or infinite observation or reward; the
    message names the environment and what happened."""


def check_env_id(env_id: str) -> None:
    """Fail with one line if Gymnasium does not know `env_id`, suggesting close ids.

    An `ALE/<Game>-v5` id needs the optional Atari extra; without it the line names the install.
    """
    if registered_id(env_id) in gym.registry:
        return
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"env.id={env_id!r} is not a registered Gymnasium environment{hint}")


def registered_id(env_id: str) -> str:
    """`env_id` as Gymnasium's registry knows it, once what registers it is imported: ale-py
    for ALE/ ids, and `module` for Gymnasium's "module:EnvId" form (a user's own environments)."""
    if is_ale_id(env_id):
        _register_ale(env_id)
    elif is_dmc_id(env_id) and env_id not in gym.registry:
        _register_dmc(env_id)
    module, separator, bare_id = env_id.rpartition(":")
    if not separator:
        return env_id
    if not module or module.startswith("."):
        raise ConfigError(
            f"env.id={env_id!r}: {module!r} is not an importable module name; write env.id=<package.module>:<EnvId>"
        )
    try:
        importlib.import_module(module)
    except ImportError as error:
        hint = "" if module.split(".")[0] in sys.modules else "; if it is yours, put its folder on PYTHONPATH"
        raise ConfigError(f"env.id={env_id!r}: cannot import {module!r} to register it ({error}){hint}") from None
    except Exception as error:  # the module itself raised while being imported
        raise ConfigError(f"env.id={env_id!r}: importing {module!r} raised {type(error).__name__}: {error}") from None
    except SystemExit as error:  # a script's `sys.exit()` run on import would end rlrun without a word
        raise ConfigError(
            f"env.id={env_id!r}: importing {module!r} called sys.exit({error.code!r}); "
            "a module that registers environments must not exit when imported"
        ) from None
    return bare_id


def is_ale_id(env_id: str) -> bool:
    return env_id.startswith("ALE/")


def is_atari_game(env_id: str) -> bool:
    """An Arcade Learning Environment game (ALE/<Game>-v5, or ale-py's older ids)."""
    return is_ale_id(env_id) or (env_id in gym.registry and "ale_py" in str(gym.spec(env_id).entry_point))


def _register_ale(env_id: str) -> None:
    """Import ale-py (which registers the ALE/ ids) only when an ALE id is asked for, so that
    start-up stays fast; without the Atari extra, fail with the command that installs it."""
    try:
        import ale_py
        import cv2  # noqa: F401  AtariPreprocessing resizes frames with OpenCV
    except ImportError as error:
        raise ConfigError(f"env.id={env_id!r} needs the Atari extra ({error.name} is missing): {ATARI_INSTALL}") from None
    gym.register_envs(ale_py)


def is_dmc_id(env_id: str) -> bool:
    return env_id.startswith("dm_control/")


def _register_dmc(env_id: str) -> None:
    """Import Shimmy (which registers the dm_control/ ids) only when such an id is asked for;
    without the dmc extra, fail with the command that installs it."""
    # dm_control picks its OpenGL backend when imported; a headless one (EGL or OSMesa) keeps
    # it from looking for a display. Without either, only pixels need one, and fail there.
    with contextlib.suppress(ConfigError):
        choose_mujoco_backend()
    # dm_control logs its choice of backend when imported, and a deprecation warning on every
    # model load, through absl, which would reach the console through Hydra's root logger.
    logging.getLogger("absl").setLevel(logging.ERROR)
    logging.getLogger("OpenGL.acceleratesupport").setLevel(logging.WARNING)  # "No OpenGL_accelerate module"
    try:
        import dm_control.suite  # noqa: F401
        import shimmy
    except ImportError as error:
        raise ConfigError(
            f"env.id={env_id!r} needs the DeepMind Control Suite extra ({error.name} is missing): {DMC_INSTALL}"
        ) from None
    gym.register_envs(shimmy)


def is_atari(env_id: str) -> bool:
    return is_atari_game(registered_id(env_id))


def is_mujoco(env_id: str) -> bool:
    """Simulated by MuJoCo: Gymnasium's MuJoCo tasks and the DeepMind Control Suite."""
    registered = registered_id(env_id)
    return is_dmc_id(registered) or "mujoco" in str(gym.spec(registered).entry_point)


def space_name(space: gym.Space) -> str:
    if isinstance(space, gym.spaces.Box):
        return f"continuous (Box, shape {space.shape})"
    if isinstance(space, gym.spaces.Discrete):
        return f"discrete (Discrete({space.n}))"
    return type(space).__name__


def choose_mujoco_backend() -> None:
    """MuJoCo's OpenGL backend for offscreen rendering: EGL (GPU drivers or Mesa), else OSMesa
    (software). Must be set before the first frame; a MUJOCO_GL set by the user is kept."""
    if os.environ.get("MUJOCO_GL"):
        return
    for backend, library in (("egl", "EGL"), ("osmesa", "OSMesa")):
        if ctypes.util.find_library(library):
            os.environ["MUJOCO_GL"] = backend
            os.environ.setdefault("PYOPENGL_PLATFORM", backend)
            return
    raise ConfigError(
        "MuJoCo cannot render without a display: install EGL (apt-get install libegl1) or OSMesa "
        "(apt-get install libosmesa6), or set MUJOCO_GL"
    )
