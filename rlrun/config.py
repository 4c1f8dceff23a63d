"""The composed Hydra config, validated once and frozen into plain typed values.

Algorithms read these dataclasses, never OmegaConf: a bad value is reported before any
environment or network is built, and the training loop does no config lookups.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping


class ConfigError(ValueError):
    """A config value a user can fix; the message is one line naming the value."""


class RunError(RuntimeError):
    """A failure during a run that a user can act on (a full disk, diverged training); the
    message is one line saying what happened and what was kept."""


def positive(path: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{path}={value!r} must be positive")


def non_negative(path: str, value: float) -> None:
    if value < 0:
        raise ConfigError(f"{path}={value!r} must be zero or positive")


def in_range(path: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{path}={value!r} must lie in [{low}, {high}]")


def layer_sizes(path: str, sizes: tuple[int, ...]) -> None:
    """Hidden layer sizes: at least one layer, each positive."""
    if not sizes:
        raise ConfigError(f"{path}=[] needs at least one layer, e.g. [64, 64]")
    for i, size in enumerate(sizes):
        positive(f"{path}[{i}]", size)


@dataclass(frozen=True)
class EvalConfig:
    every: int = 10_000
    episodes: int = 10
    # The policy's deterministic action (its mean or argmax); false samples as in training.
    deterministic: bool = True

    def __post_init__(self) -> None:
        positive("eval.every", self.every)
        positive("eval.episodes", self.episodes)


@dataclass(frozen=True)
class VideoConfig:
    """Videos of evaluation episodes in the run folder (videos/) and TensorBoard."""

    # Environment steps between recorded episodes (one deterministic evaluation episode each,
    # on an environment of its own, so training and its evaluations are unchanged); null: none.
    every: int | None = None

    def __post_init__(self) -> None:
        if self.every is not None:
            positive("video.every", self.every)


@dataclass(frozen=True)
class LogConfig:
    every: int = 1000

    def __post_init__(self) -> None:
        positive("log.every", self.every)


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = 100_000
    keep: int = 3
    # Save the off-policy replay buffer, so a resumed run continues exactly. It is most of a
    # checkpoint's size: 1e6 HalfCheetah transitions take about 168 MB.
    replay_buffer: bool = True

    def __post_init__(self) -> None:
        positive("checkpoint.every", self.every)
        positive("checkpoint.keep", self.keep)


@dataclass(frozen=True)
class AtariConfig:
    """Preprocessing of Atari (ALE) games, after Mnih et al. 2015; ignored for other ids.

    Built from Gymnasium's AtariPreprocessing and FrameStackObservation on a base game made
    with frameskip=1, so that frame skipping and max-pooling happen in the wrapper.
    """

    noop_max: int = 30  # a random 1..noop_max no-op actions after each reset (varied starts)
    frame_skip: int = 4  # emulator frames per agent step; the observation max-pools the last two
    screen_size: int = 84  # frames are resized to screen_size × screen_size grayscale
    frame_stack: int = 4  # the observation is the last frame_stack frames, shape (frame_stack, H, W)
    # Sticky actions: 0.0 as the NoFrameskip-v4 games of Nature DQN, CleanRL and RL Zoo use;
    # 0.25 is the ALE v5 default that Machado et al. (2018) recommend.
    repeat_action_probability: float = 0.0
    # End the training episode when a life is lost. Gymnasium's wrapper then resets the whole
    # game (baselines' EpisodicLifeEnv plays on), so each training episode is one life.
    terminal_on_life_loss: bool = False
    clip_rewards: bool = True  # train on sign(reward); evaluation always sees the game score

    def __post_init__(self) -> None:
        non_negative("env.atari.noop_max", self.noop_max)
        positive("env.atari.frame_skip", self.frame_skip)
        positive("env.atari.screen_size", self.screen_size)
        positive("env.atari.frame_stack", self.frame_stack)
        in_range("env.atari.repeat_action_probability", self.repeat_action_probability, 0.0, 1.0)


@dataclass(frozen=True)
class EnvConfig:
    id: str
    total_steps: int
    atari: AtariConfig = field(default_factory=AtariConfig)


@dataclass(frozen=True)
class TrialConfig:
    """The Optuna trial a job evaluates; set by rlrun's Optuna sweeper, not by hand.

    The job reports each evaluation's mean return to the trial and stops early (status
    "pruned") when the study's pruner says so.
    """

    storage: str  # the study's Optuna storage URL, e.g. sqlite:///multirun/.../study.db
    study_name: str
    number: int  # the trial's number in the study

    def __post_init__(self) -> None:
        non_negative("trial.number", self.number)


@dataclass(frozen=True)
class RunConfig:
    """Settings of one run that every algorithm shares."""

    env: EnvConfig
    seed: int = 0
    total_steps: int = 1_000_000
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = None
    progress: bool = True
    compile: bool = False
    precision: Literal["float32", "bfloat16"] = "float32"
    eval: EvalConfig = field(default_factory=EvalConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    log: LogConfig = field(default_factory=LogConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    trial: TrialConfig | None = None

    def __post_init__(self) -> None:
        positive("total_steps", self.total_steps)
        non_negative("seed", self.seed)
        if self.threads is not None:
            positive("threads", self.threads)


def from_mapping(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """Build the dataclass `cls` from `data`, converting and checking every field's type.

    Raises ConfigError naming the dotted key for unknown keys, missing keys and values of
    the wrong type; range checks live in each dataclass's __post_init__.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(f"unknown config key '{prefix}{key}'{_suggest(key, names, prefix)}")
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            values[f.name] = _convert(hints[f.name], data[f.name], prefix + f.name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing config key '{prefix}{f.name}'")
    return cls(**values)


def _suggest(key: str, names: typing.Iterable[str], prefix: str) -> str:
    close = difflib.get_close_matches(key, list(names), n=1)
    if close:
        return f"; did you mean '{prefix}{close[0]}'?"
    return f"; valid keys: {', '.join(sorted(names))}"


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path} must be a group of keys, got {value!r}")
        return from_mapping(tp, value, prefix=path + ".")
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(option, value, path)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}={value!r} is not valid: expected {tp}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}={value!r} is not valid; choose one of: {', '.join(map(str, args))}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} must be a list like [256, 256], got {value!r}")
        return tuple(_convert(args[0], item, f"{path}[{i}]") for i, item in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {value!r}")
        return value
    if tp is int:
        # YAML and Hydra give 1e6 as a float; accept it when it is a whole number.
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{path} must be an integer, got {value!r}")
        return value
    if tp is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{path} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config field type {tp} at {path}")
