"""From a composed config to a Plan: every value checked and typed, the device resolved and
the resume decision made, before anything is built or written."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from omegaconf import DictConfig, OmegaConf

from rlrun.config import ConfigError, EnvConfig, RunConfig, from_mapping
from rlrun.core.finetune import InitStart, check_init, check_init_algorithm
from rlrun.core.registry import ALGORITHMS, OFFLINE_ALGORITHMS, get_algorithm
from rlrun.core.resume import Resume, decide_resume
from rlrun.envs.datasets import DatasetInfo, open_dataset
from rlrun.envs.envpool import check_envpool
from rlrun.envs.ids import check_env_id, space_name
from rlrun.envs.make import env_spaces, episode_limit
from rlrun.envs.video import check_video_support
from rlrun.protocols import Algorithm


@dataclass(frozen=True)
class Plan:
    """A validated run: everything needed to build it, as plain values."""

    run_config: RunConfig  # the settings every algorithm shares (seed, env, schedules, ...)
    algo_name: str  # the registered name, e.g. "sac"
    algo_class: type[Algorithm]
    algo_config: Any  # the algorithm's own Config dataclass
    config: dict  # the composed config, resolved, for checkpoints and hyperparameter logs
    obs_space: gym.Space  # as the agent sees them (after any Atari preprocessing)
    action_space: gym.Space
    device: torch.device  # `device` resolved: auto is CUDA when there is one
    warnings: tuple[str, ...] = ()  # settings that are valid but almost surely not meant
    resume: Resume | None = None  # the checkpoint this run continues from (see in_folder)
    dataset: DatasetInfo | None = None  # dataset=: what an offline run learns from (its data is read by the run)
    init: InitStart | None = None  # init=: the offline run a new run starts from, once checked (in_folder)

    def in_folder(self, run_dir: Path) -> Plan:
        """This plan for the run folder `run_dir`: a checkpoint already there (resume=, a
        rerun sweep, a requeued Slurm job) is checked and becomes the point the run continues
        from; ConfigError if this run cannot continue it."""
        settings = self.run_config
        algo_settings = {key: value for key, value in self.config["algo"].items() if key != "name"}
        resume = decide_resume(
            run_dir, self.algo_name, settings.env, settings.total_steps, settings.seed, algo_settings, self._new_agent_state
        )
        # The offline run is read when the run starts from it; a resumed run has its networks and
        # statistics in its own checkpoint, and needs the offline run only for its dataset.
        init = None
        if settings.init is not None and (resume is None or settings.finetune.offline_data):
            init = self.check_init()
        return dataclasses.replace(self, resume=resume, init=init)

    def check_init(self) -> InitStart:
        """The offline run init= names, checked against this run; ConfigError if it does not fit."""
        settings = self.run_config
        return check_init(
            settings.init,
            self.algo_name,
            self.algo_config,
            settings.env.id,
            self.obs_space,
            self.action_space,
            settings.finetune.offline_data,
        )

    def _new_agent_state(self) -> dict:
        """The state of the agent this plan builds, on the CPU: what a checkpoint it continues must fit."""
        cpu = torch.device("cpu")
        return self.algo_class(self.algo_config, self.obs_space, self.action_space, cpu, self.run_config.seed).state_dict()


def validate(cfg: DictConfig) -> Plan:
    """Check the composed config and the environment's spaces; raise ConfigError if unfit."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    config = dict(resolved)
    algo_values = dict(config.pop("algo"))
    algo_name = algo_values.pop("name", None)
    algo_class = get_algorithm(algo_name)
    algo_config = from_mapping(algo_class.Config, algo_values, prefix="algo.")
    run_config = from_mapping(RunConfig, config)
    dataset = _check_offline(algo_name, run_config.dataset)
    if run_config.init is not None:
        check_init_algorithm(algo_name)
    if dataset is not None:
        # The dataset's environment, to evaluate on; saved as the run's env, so that
        # evaluate= and export= rebuild it too.
        env = {**dataset.env, "total_steps": run_config.env.total_steps}
        resolved["env"] = config["env"] = env
        run_config = dataclasses.replace(run_config, env=from_mapping(EnvConfig, env, prefix="env."))
    if run_config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but CUDA is not available here; use device=cpu or device=auto")
    device = resolve_device(run_config.device)
    if run_config.precision == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("precision=bfloat16 but this GPU has no bfloat16 support; use precision=float32")
    if dataset is not None:
        obs_space, action_space = _dataset_spaces(dataset, run_config.env)
    else:
        check_env_id(run_config.env.id)
        obs_space, action_space = env_spaces(run_config.env)
        _check_n_step(algo_config, run_config.env)
    source = run_config.env.id if dataset is None else f"dataset={dataset.source}"
    _check_action_space(algo_name, algo_class, source, action_space)
    algo_class.check_spaces(algo_config, obs_space, action_space)
    if dataset is not None and hasattr(algo_class, "check_dataset"):
        algo_class.check_dataset(algo_config, dataset)
    if run_config.env.backend == "envpool":
        check_envpool(run_config.env, algo_name, algo_config, obs_space, action_space)
    if run_config.video.every is not None:
        check_video_support(run_config.env)
    warnings = tuple(_never_learns(algo_config, run_config))
    return Plan(
        run_config, algo_name, algo_class, algo_config, resolved, obs_space, action_space, device, warnings, dataset=dataset
    )


def _check_offline(algo_name: str, dataset: str | None) -> DatasetInfo | None:
    """The dataset's metadata for an offline algorithm; ConfigError for an offline algorithm
    without dataset= or an online one with it."""
    offline = ", ".join(OFFLINE_ALGORITHMS)
    if algo_name in OFFLINE_ALGORITHMS and dataset is None:
        raise ConfigError(f"algo={algo_name} learns offline from a dataset: give dataset=<Minari id or folder>")
    if algo_name not in OFFLINE_ALGORITHMS and dataset is not None:
        raise ConfigError(
            f"dataset={dataset} is for the offline algorithms ({offline}); algo={algo_name} learns online: "
            "choose one of them, or leave dataset= out"
        )
    return None if dataset is None else open_dataset(dataset)


def _dataset_spaces(dataset: DatasetInfo, env: EnvConfig) -> tuple[gym.Space, gym.Space]:
    """The spaces of the dataset's environment `env` (which evaluation acts in), checked
    against the dataset's own."""
    try:
        check_env_id(env.id)
    except ConfigError as error:
        raise ConfigError(f"dataset={dataset.source} was collected on {env.id}, unknown here: {error}") from None
    obs_space, action_space = env_spaces(env)
    for what, ours, theirs in (
        ("observation", obs_space, dataset.observation_space),
        ("action", action_space, dataset.action_space),
    ):
        if type(ours) is not type(theirs) or ours.shape != theirs.shape:
            raise ConfigError(
                f"dataset={dataset.source} has {theirs} {what}s, but its environment {env.id} has {ours}; "
                "the dataset does not fit the environment it names"
            )
    return obs_space, action_space


def _check_n_step(algo_config: Any, env: EnvConfig) -> None:
    """An n-step return longer than the longest episode would never bootstrap: refused."""
    n_step = getattr(algo_config, "n_step", None)
    limit = episode_limit(env) if n_step is not None else None
    if limit is not None and n_step > limit:
        raise ConfigError(
            f"algo.n_step={n_step} is longer than an episode of {env.id} (at most {limit} steps); choose at most {limit}"
        )


def _never_learns(algo_config: Any, run_config: RunConfig) -> list[str]:
    """Settings under which the algorithm would never update within total_steps."""
    found = []
    total_steps = run_config.total_steps
    learning_starts = getattr(algo_config, "learning_starts", None)
    if run_config.init is not None:  # the warm-up takes learning_starts' place
        if run_config.finetune.warmup_steps >= total_steps:
            found.append(
                f"finetune.warmup_steps={run_config.finetune.warmup_steps} is not below total_steps={total_steps}: "
                "this run never updates its networks"
            )
    elif learning_starts is not None and learning_starts >= total_steps:
        found.append(
            f"algo.learning_starts={learning_starts} is not below total_steps={total_steps}: this run never updates its networks"
        )
    rollout = getattr(algo_config, "batch_size", None) if hasattr(algo_config, "num_steps") else None
    if rollout is not None and rollout > total_steps:
        found.append(
            f"a rollout of algo.num_envs × algo.num_steps = {rollout} transitions is longer than total_steps={total_steps}: "
            "this run never updates its networks"
        )
    return found


def _check_action_space(algo_name: str, algo_class: type[Algorithm], env_id: str, space: gym.Space) -> None:
    if isinstance(space, algo_class.action_spaces):
        return
    # An offline algorithm's alternatives are offline ones, an online one's online ones.
    kind = [name for name in ALGORITHMS if (name in OFFLINE_ALGORITHMS) == (algo_name in OFFLINE_ALGORITHMS)]
    fitting = [name for name in kind if isinstance(space, get_algorithm(name).action_spaces)]
    wanted = " or ".join(t.__name__ for t in algo_class.action_spaces)
    fits = f"; algorithms that fit: {', '.join(fitting)}" if fitting else "; no registered algorithm fits it"
    raise ConfigError(f"algo={algo_name} needs a {wanted} action space, but {env_id} has a {space_name(space)} one{fits}")


def resolve_device(name: str) -> torch.device:
    """`device=auto` is CUDA when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
