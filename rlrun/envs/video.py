"""Videos of evaluation episodes, on machines without a display: Gymnasium's RecordVideo
writes the MP4 files (through moviepy, the video extra); MuJoCo renders offscreen through EGL
or OSMesa, whichever this machine has."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np

from rlrun.config import ConfigError, EnvConfig
from rlrun.envs.episodes import Evaluation, evaluate
from rlrun.envs.ids import choose_mujoco_backend, is_mujoco
from rlrun.envs.make import make_env

VIDEO_INSTALL = "python -m pip install -c constraints.txt -e '.[video]'"


def check_video_support(env: EnvConfig) -> None:
    """Raise ConfigError (one line) unless episodes of `env` can be recorded here: the video
    extra is installed and the environment renders frames headless. Chooses MuJoCo's
    offscreen backend as a side effect (MUJOCO_GL, unless the user set it)."""
    if not _importable("moviepy"):
        raise ConfigError(f"videos need the video extra (moviepy is missing): {VIDEO_INSTALL}")
    # pygame (classic control) draws offscreen; without this SDL looks for a display and says so.
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    if is_mujoco(env.id):
        choose_mujoco_backend()
    probe = make_env(env, 0, training=False, render_mode="rgb_array")
    try:
        probe.reset(seed=0)
        frame = probe.render()
    except gym.error.DependencyNotInstalled as error:  # pygame, for classic control
        raise ConfigError(f"videos of {env.id} need the video extra ({error}): {VIDEO_INSTALL}") from None
    except Exception as error:  # each renderer fails in its own way; the message names it
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"env.id={env.id!r} cannot render frames here ({reason}); videos need an rgb_array renderer") from None
    finally:
        probe.close()
    if not isinstance(frame, np.ndarray) or frame.ndim != 3:
        raise ConfigError(f"env.id={env.id!r} does not render rgb_array frames; it cannot be recorded")


def record_episodes(
    env: EnvConfig,
    act: Callable[[np.ndarray], object],
    folder: Path,
    episodes: int,
    seed: int,
    fps: int | None = None,
    agent: object = None,
) -> tuple[list[Path], Evaluation]:
    """Play `episodes` episodes of `act` on a fresh environment seeded `seed`, as `evaluate`
    does, and write each to `folder/episode-<i>.mp4`; returns the files and the evaluation.
    Files already in `folder` (a resumed run recording the same step again) are replaced;
    `agent`, if it is EpisodeAware, is told where episodes start and their rewards."""
    recorded = gym.wrappers.RecordVideo(
        make_env(env, seed, training=False, render_mode="rgb_array"),
        str(folder),
        episode_trigger=lambda episode: episode < episodes,
        name_prefix="recording",
        fps=fps,
        disable_logger=True,
    )
    try:
        result = evaluate(act, recorded, episodes, seed, agent=agent)
    finally:
        recorded.close()
    files = []
    for episode in range(episodes):
        written = folder / f"recording-episode-{episode}.mp4"
        final = folder / f"episode-{episode}.mp4"
        os.replace(written, final)
        files.append(final)
    return files, result


def read_frames(path: Path) -> np.ndarray:
    """A video's frames, (T, H, W, 3) uint8."""
    from moviepy import VideoFileClip

    with VideoFileClip(str(path), audio=False) as clip:
        return np.stack(list(clip.iter_frames()))


def _importable(module: str) -> bool:
    if module in sys.modules:
        return True
    import importlib.util

    return importlib.util.find_spec(module) is not None
