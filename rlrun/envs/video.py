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
from rlrun.envs.ids import choose_mujoco_backend, is_atari_game, is_dmc_id, is_mujoco, registered_id
from rlrun.envs.make import make_env

VIDEO_INSTALL = "python -m pip install -c constraints.txt -e '.[video]'"
# The Atari 2600's frame rate (NTSC), which ALE emulates frame by frame. ale-py declares
# render_fps 30 for every game and frameskip, so its metadata cannot be used.
ATARI_FRAMES_PER_SECOND = 60


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
    agent: object = None,
) -> tuple[list[Path], Evaluation]:
    """Play `episodes` episodes of `act` on a fresh environment seeded `seed`, as `evaluate`
    does, and write each to `folder/episode-<i>.mp4`; returns the files and the evaluation.
    Files already in `folder` (a resumed run recording the same step again) are replaced;
    `agent`, if it is EpisodeAware, is told where episodes start and their rewards."""
    made = make_env(env, seed, training=False, render_mode="rgb_array")
    recorded = gym.wrappers.RecordVideo(
        made,
        str(folder),
        episode_trigger=lambda episode: episode < episodes,
        name_prefix="recording",
        fps=video_fps(env, made),
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


def video_fps(env: EnvConfig, made: gym.Env) -> float:
    """The frame rate at which a recording of `made` (one frame per agent step) plays in real
    time: the environment's frames per second over the frames one agent step spans (the
    Atari frame skip, env.action_repeat). Gymnasium's RecordVideo takes the declared
    render_fps as it is, which on a frame-skipping Atari game plays too fast."""
    env_id = registered_id(env.id)
    if is_atari_game(env_id):
        return ATARI_FRAMES_PER_SECOND / env.atari.frame_skip
    control_timestep = getattr(getattr(made.unwrapped, "_env", None), "control_timestep", None)
    if is_dmc_id(env_id) and callable(control_timestep):
        # Shimmy declares control_timestep × 1000 as render_fps: the period in ms, not a rate.
        per_second = 1 / control_timestep()
    else:
        per_second = made.metadata.get("render_fps") or 30
    return per_second / env.action_repeat


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
