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
        try:
            result = evaluate(act, recorded, episodes, seed, agent=agent)
        finally:
            recorded.close()
    except OSError as error:  # moviepy's, when ffmpeg fails to write (the environment's own are EnvironmentFailures)
        started = sorted(folder.glob("recording-episode-*.mp4"), key=lambda path: path.stat().st_mtime)
        written = started[-1] if started else folder / "recording-episode-0.mp4"
        raise IncompleteVideo(written, folder / written.name.removeprefix("recording-"), error) from error
    files = []
    for episode in range(episodes):
        written = folder / f"recording-episode-{episode}.mp4"
        final = folder / f"episode-{episode}.mp4"
        # ffmpeg ends quietly when its writes fail (a full disk, the file-size limit), and
        # moviepy does not ask how it ended: a file cut short is found here.
        if not complete_mp4(written):
            raise IncompleteVideo(written, final, "its last box is missing")
        os.replace(written, final)
        files.append(final)
    return files, result


class IncompleteVideo(RuntimeError):
    """A video that ffmpeg did not finish writing: `path` is cut short (left for the caller to
    describe and remove), `final` the name it was to have."""

    def __init__(self, path: Path, final: Path, cause: object) -> None:
        super().__init__(f"{path} is cut short ({cause})")
        self.path, self.final = path, final


def complete_mp4(path: Path) -> bool:
    """Whether the MP4 file's top-level boxes (4-byte size, 4-byte type; size 1: an 8-byte size
    follows) fill the file exactly and include `moov`, the index ffmpeg writes last."""
    try:
        end = path.stat().st_size
        with open(path, "rb") as file:
            position, types = 0, set()
            while position < end:
                file.seek(position)
                header = file.read(16)
                if len(header) < 8:
                    return False
                size, kind = int.from_bytes(header[:4], "big"), header[4:8]
                if size == 1 and len(header) == 16:
                    size = int.from_bytes(header[8:16], "big")
                elif size == 0:  # to the end of the file
                    size = end - position
                if size < 8:
                    return False
                types.add(kind)
                position += size
    except OSError:
        return False
    return position == end and b"moov" in types


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
