"""The composed Hydra config, validated once and frozen into plain typed values.

Algorithms read these dataclasses, never OmegaConf: a bad value is reported before any
environment or network is built, and the training loop does no config lookups.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal


class ConfigError(ValueError):
    """A config value a user can fix; the message is one line naming the value."""


class RunError(RuntimeError):
    """A failure during a run that a user can act on (a full disk, diverged training); the
    message is one line saying what happened and what was kept."""


# Steps are counted in Python ints but logged as floats (metrics.jsonl, TensorBoard), which
# hold every integer only up to 2**53; no run comes near it.
MAX_STEPS = 2**53
# The largest run seed: NumPy takes seeds below 2**32, and a run also seeds its evaluation
# environment (seed + 10000) and each vector sub-environment (seed + i).
MAX_SEED = 2**31 - 1
# The most episodes one evaluation (or collect=) runs: each keeps its return and length in
# memory, and a million episodes of even a short task take days.
MAX_EPISODES = 1_000_000


def positive(path: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{path}={value!r} must be positive")


def at_most(path: str, value: float, limit: int, why: str) -> None:
    if value > limit:
        raise ConfigError(f"{path}={value!r} is more than the limit of {limit:,} ({why})")


def replay_sizes(batch_size: int, buffer_size: int) -> None:
    """A replay buffer's algo.batch_size and algo.buffer_size: both positive, the batch no larger."""
    positive("algo.batch_size", batch_size)
    positive("algo.buffer_size", buffer_size)
    if batch_size > buffer_size:
        raise ConfigError(f"algo.batch_size={batch_size} is larger than algo.buffer_size={buffer_size}")


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
    """Evaluation of the deterministic policy (`act`) on an environment of its own, reset with
    the same seed at every evaluation, so successive scores differ only through the policy."""

    every: int = 10_000
    """Environment steps between evaluations; the run also evaluates at its last step."""
    episodes: int = 10
    """Episodes per evaluation; their mean return is the run's score (eval/return_mean)."""
    deterministic: bool = True
    """Act with the policy's deterministic action (its mean or argmax); false samples actions
    as in training."""

    def __post_init__(self) -> None:
        positive("eval.every", self.every)
        positive("eval.episodes", self.episodes)
        at_most("eval.episodes", self.episodes, MAX_EPISODES, "episodes per evaluation")


@dataclass(frozen=True)
class VideoConfig:
    """Videos of evaluation episodes in the run folder (videos/) and TensorBoard."""

    every: int | None = None
    """Environment steps between recorded episodes (one deterministic evaluation episode each,
    on an environment of its own, so training and its evaluations are unchanged); null: none."""

    def __post_init__(self) -> None:
        if self.every is not None:
            positive("video.every", self.every)


WANDB_INSTALL = "python -m pip install -c constraints.txt -e '.[wandb]'"


@dataclass(frozen=True)
class WandbConfig:
    """Weights & Biases tracking, besides TensorBoard (which always runs): every scalar, the
    config as the run's hyperparameters, and recorded videos. The W&B run id is kept in the run
    folder (wandb-run-id), so a resumed run continues the same W&B run."""

    project: str | None = None
    """The W&B project to log to; null: no W&B. Needs the wandb extra."""
    entity: str | None = None
    """The W&B team or user that owns the project; null: the logged-in user's default."""
    group: str | None = None
    """Groups runs in the W&B interface; null: a sweep's jobs share their sweep folder's path,
    a single run has none."""
    mode: Literal["online", "offline", "disabled"] | None = None
    """offline writes to the run folder's wandb/ for a later `wandb sync`; null: W&B's own
    default (online, or the WANDB_MODE environment variable)."""

    def __post_init__(self) -> None:
        import importlib.util

        if self.project is not None and importlib.util.find_spec("wandb") is None:
            raise ConfigError(f"log.wandb.project={self.project} needs the wandb extra: {WANDB_INSTALL}")


@dataclass(frozen=True)
class LogConfig:
    every: int = 1000
    """Environment steps between writes of the latest training metrics and steps/s, each also
    checked for NaN/inf; not every step, since reading on-device metrics syncs the device."""
    wandb: WandbConfig = field(default_factory=WandbConfig)
    """Mirror the run to Weights & Biases (log.wandb.project=<name>); off by default."""

    def __post_init__(self) -> None:
        positive("log.every", self.every)


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = 100_000
    """Environment steps between checkpoints; the run also writes one at its last step and
    when a signal stops it."""
    keep: int = 3
    """Newest checkpoints/step_N.pt files kept in the run folder; older ones are deleted."""
    replay_buffer: bool = True
    """Save the replay buffer (SAC, TD3, DDPG, CrossQ, DSAC-T, MR.Q, DQN), so a resumed run continues
    exactly. It is most of a checkpoint's size; with false, a resumed run refills its buffer
    with learning_starts new transitions before it updates again."""

    def __post_init__(self) -> None:
        positive("checkpoint.every", self.every)
        positive("checkpoint.keep", self.keep)


def dmc_id(domain: str, task: str) -> str:
    """Shimmy's Gymnasium id of a DeepMind Control Suite task."""
    return f"dm_control/{domain}-{task}-v0"


@dataclass(frozen=True)
class AtariConfig:
    """Preprocessing of Atari (ALE) games, after Mnih et al. 2015; ignored for other ids.

    Built from Gymnasium's AtariPreprocessing and FrameStackObservation on a base game made
    with frameskip=1, so that frame skipping and max-pooling happen in the wrapper.
    """

    noop_max: int = 30
    """A random 1..noop_max no-op actions after each reset, so episodes start in varied states
    (Mnih et al. 2015)."""
    frame_skip: int = 4
    """Emulator frames per agent step, the action repeated; the observation max-pools the last
    two frames, since some games draw objects on alternate frames (Mnih et al. 2015)."""
    screen_size: int = 84
    """Frames are resized to screen_size × screen_size grayscale (Mnih et al. 2015)."""
    frame_stack: int = 4
    """The observation is the last frame_stack frames, shape (frame_stack, H, W) in uint8, so
    that velocities are observable (Mnih et al. 2015)."""
    repeat_action_probability: float = 0.0
    """Sticky actions: the chance that the emulator repeats the previous action instead. 0.0 as
    the NoFrameskip-v4 games of Nature DQN, CleanRL and RL Zoo; 0.25 is the ALE v5 default that
    Machado et al. (2018) recommend."""
    terminal_on_life_loss: bool = False
    """End the training episode when a life is lost. Gymnasium's wrapper then resets the whole
    game (baselines' EpisodicLifeEnv plays on), so each training episode is one life; hence off
    by default."""
    clip_rewards: bool = True
    """Train on sign(reward), so one learning rate fits every game's score scale (Mnih et al.
    2015); evaluation and episode returns always see the game score."""

    def __post_init__(self) -> None:
        non_negative("env.atari.noop_max", self.noop_max)
        positive("env.atari.frame_skip", self.frame_skip)
        positive("env.atari.screen_size", self.screen_size)
        positive("env.atari.frame_stack", self.frame_stack)
        in_range("env.atari.repeat_action_probability", self.repeat_action_probability, 0.0, 1.0)


@dataclass(frozen=True)
class EnvConfig:
    id: str
    """A registered Gymnasium id, e.g. HalfCheetah-v5 or ALE/Pong-v5 (set by configs/env/)."""
    total_steps: int
    """The environment's usual training budget in agent steps (Atari: of frame_skip frames
    each; with action_repeat, of that many environment steps each); configs/config.yaml makes
    it the run's total_steps."""
    domain: str | None = None
    """DeepMind Control Suite domain, e.g. cheetah; env=dmc builds the id
    dm_control/<domain>-<task>-v0 from it and task. Needs the dmc extra."""
    task: str | None = None
    """DeepMind Control Suite task of the domain, e.g. run (cheetah-run)."""
    action_repeat: int = 1
    """Environment steps per agent step: the agent's action is played this many times and the
    rewards summed, stopping early at an episode's end. Every step count (total_steps,
    eval.every, buffer sizes, ...) counts agent steps. Atari games repeat actions through
    atari.frame_skip instead."""
    pixels: bool = False
    """Observe rendered 84×84 RGB frames, uint8 (3, 84, 84), instead of the state
    (DeepMind Control Suite ids only). SAC, TD3 and DDPG take flat vectors, so they need a
    FlattenObservation wrapper on pixels, and have no image encoder to learn well from them."""
    atari: AtariConfig = field(default_factory=AtariConfig)
    """Atari preprocessing; acts on ALE ids only."""
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments of the environment's constructor, passed to gym.make
    (`+env.kwargs.forward_reward_weight=2.0`)."""
    max_episode_steps: int | None = None
    """Episode length limit (gym.make's max_episode_steps) in environment steps, each
    action_repeat of them one agent step; null keeps the registered one."""
    wrappers: tuple[Mapping[str, Any], ...] = ()
    """Gymnasium wrappers applied in order, each {_target_: <class or function>, <its arguments>}
    and called with the environment first (Hydra's instantiate), on training and evaluation
    environments alike; e.g. [{_target_: gymnasium.wrappers.ClipReward, min_reward: -1, max_reward: 1}]."""
    backend: Literal["gymnasium", "envpool"] = "gymnasium"
    """What steps a vector algorithm's (PPO's) training environments: Gymnasium's vector env, or
    EnvPool's C++ thread pool (Atari and MuJoCo tasks; the envpool extra). Evaluation always runs
    on Gymnasium; an EnvPool run cannot resume (docs/environments.md)."""

    def __post_init__(self) -> None:
        positive("env.action_repeat", self.action_repeat)
        if (self.domain is None) != (self.task is None):
            raise ConfigError("env.domain and env.task go together, e.g. env=dmc env.domain=cheetah env.task=run")
        if self.domain is not None and self.id != dmc_id(self.domain, self.task):
            raise ConfigError(
                f"env.id={self.id!r} is not the env.domain={self.domain} env.task={self.task} environment "
                f"({dmc_id(self.domain, self.task)}); set env.domain and env.task instead of env.id"
            )
        if self.max_episode_steps is not None:
            positive("env.max_episode_steps", self.max_episode_steps)
        for i, wrapper in enumerate(self.wrappers):
            target = wrapper.get("_target_")
            if not isinstance(target, str) or not target:
                raise ConfigError(
                    f"env.wrappers[{i}]={dict(wrapper)!r} needs _target_: the wrapper's import path, "
                    "e.g. {_target_: gymnasium.wrappers.ClipReward, min_reward: -1, max_reward: 1}"
                )


@dataclass(frozen=True)
class FinetuneConfig:
    """How an online run started from an offline one (init=) goes on learning. The default is
    WSRL's recipe (Zhou et al. 2024, "Efficient Online RL Fine-Tuning Need Not Retain Offline
    Data"): a fresh replay buffer, first filled by the pre-trained policy, then online updates
    without the offline data."""

    warmup_steps: int = 5000
    """Environment steps collected by the pre-trained policy (with the algorithm's own
    exploration) before the first update; they take the place of algo.learning_starts, whose
    uniform random actions would fill the buffer with a policy it never had (WSRL's 5000)."""
    offline_data: bool = False
    """true: the replay buffer starts holding the offline run's dataset and online transitions
    join it (the older recipe, as CORL's offline-to-online scripts and WSRL's `append`
    baseline), for comparison; false: WSRL's fresh buffer of online transitions only."""

    def __post_init__(self) -> None:
        non_negative("finetune.warmup_steps", self.warmup_steps)


@dataclass(frozen=True)
class TrialConfig:
    """The Optuna trial a job evaluates; set by rlrun's Optuna sweeper, not by hand.

    The job reports each evaluation's mean return to the trial and stops early (status
    "pruned") when the study's pruner says so.
    """

    storage: str
    """The study's Optuna storage URL, e.g. sqlite:///multirun/.../study.db."""
    study_name: str
    """The study's name in that storage."""
    number: int
    """The trial's number in the study."""

    def __post_init__(self) -> None:
        non_negative("trial.number", self.number)


@dataclass(frozen=True)
class RunConfig:
    """Settings of one run that every algorithm shares."""

    env: EnvConfig
    """The environment to train and evaluate on (configs/env/<name>.yaml)."""
    seed: int = 0
    """Seeds Python, NumPy and torch (network initialisation, sampling), the training
    environment (vector sub-environment i: seed + i) and the evaluation environment (seed plus
    a fixed offset, apart from training's)."""
    total_steps: int = 1_000_000
    """Environment steps to train for, summed over vector sub-environments; configs/config.yaml
    takes it from env.total_steps. 1e6 is the usual MuJoCo budget (SAC and TD3 papers)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where networks and buffers live; auto picks CUDA when available, else the CPU."""
    threads: int | None = None
    """torch intra-op threads. None keeps torch's default (one per core), except that jobs a
    launcher runs side by side on one machine (joblib's n_jobs) get cores ÷ parallel jobs, so
    that they do not oversubscribe the CPU."""
    progress: bool = True
    """Show a live progress bar when the console is a terminal."""
    compile: bool = False
    """torch.compile every network, in place (checkpoints keep their parameter names). Off by
    default: compilation adds start-up time that small networks' updates on a CPU do not win
    back; it is for hardware where fusing the element-wise work pays."""
    precision: Literal["float32", "bfloat16"] = "float32"
    """bfloat16: the gradient updates' hidden layers under bfloat16 autocast; output layers,
    weights, optimiser state, acting and evaluation stay float32. Pays off only on hardware
    that computes bfloat16 natively (recent GPUs, CPUs with AMX), hence float32 by default."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """When and how long to evaluate the policy, and whether it acts deterministically."""
    video: VideoConfig = field(default_factory=VideoConfig)
    """Videos of evaluation episodes during training."""
    log: LogConfig = field(default_factory=LogConfig)
    """When to write training metrics."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """When to checkpoint, how many checkpoints to keep and what they hold."""
    dataset: str | None = None
    """A Minari dataset to learn from offline (algo=td3_bc, iql or cql): its id under the Minari
    root ($MINARI_DATASETS_PATH, else ~/.minari/datasets) or its folder on disk. The run's
    environment becomes the dataset's (evaluation only), and total_steps, eval.every, log.every
    and checkpoint.every count gradient steps. null: learn online from env."""
    init: str | None = None
    """The folder of an offline run (algo=td3_bc, cql or iql) whose networks an online run
    starts from: td3_bc starts algo=td3, cql and iql start algo=sac (docs/offline.md). Its
    dataset's observation statistics keep standardising the inputs, frozen. null: start from
    scratch."""
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    """How a run started from init= learns online: warm-up steps, and whether the offline
    data stays in the replay buffer."""
    trial: TrialConfig | None = None
    """Set by rlrun's Optuna sweeper (hydra/sweeper=rlrun_optuna) for the trial this job
    reports to; None for every other run."""

    def __post_init__(self) -> None:
        positive("total_steps", self.total_steps)
        if self.total_steps > MAX_STEPS:
            raise ConfigError(f"total_steps={self.total_steps} is more than rlrun can count; use at most 2**53 = {MAX_STEPS}")
        in_range("seed", self.seed, 0, MAX_SEED)
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
    if origin in (dict, Mapping, collections.abc.Mapping):
        if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
            raise ConfigError(f"{path} must be a group of keys like {{name: value}}, got {value!r}")
        return dict(value)
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
        if not math.isfinite(value):
            raise ConfigError(f"{path}={value!r} must be a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config field type {tp} at {path}")
