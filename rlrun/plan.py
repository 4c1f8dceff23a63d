"""From a composed config to a Plan: every value checked and typed before anything is built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch
from omegaconf import DictConfig, OmegaConf

from rlrun.config import ConfigError, RunConfig, from_mapping
from rlrun.envs import check_env_id, env_spaces, space_name
from rlrun.protocols import Algorithm
from rlrun.registry import ALGORITHMS, get_algorithm


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
    warnings: tuple[str, ...] = ()  # settings that are valid but almost surely not meant


def validate(cfg: DictConfig) -> Plan:
    """Check the composed config and the environment's spaces; raise ConfigError if unfit."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    config = dict(resolved)
    algo_values = dict(config.pop("algo"))
    algo_name = algo_values.pop("name", None)
    algo_class = get_algorithm(algo_name)
    algo_config = from_mapping(algo_class.Config, algo_values, prefix="algo.")
    run_config = from_mapping(RunConfig, config)
    if run_config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but CUDA is not available here; use device=cpu or device=auto")
    if (
        run_config.precision == "bfloat16"
        and resolve_device(run_config.device).type == "cuda"
        and not torch.cuda.is_bf16_supported()
    ):
        raise ConfigError("precision=bfloat16 but this GPU has no bfloat16 support; use precision=float32")
    check_env_id(run_config.env.id)
    obs_space, action_space = env_spaces(run_config.env)
    _check_action_space(algo_name, algo_class, run_config.env.id, action_space)
    algo_class.check_spaces(algo_config, obs_space, action_space)
    if run_config.env.backend == "envpool":
        from rlrun.envpool_backend import check_envpool

        check_envpool(run_config.env, algo_name, algo_config, obs_space, action_space)
    if run_config.video.every is not None:
        from rlrun.video import check_video_support

        check_video_support(run_config.env)
    warnings = tuple(_never_learns(algo_config, run_config.total_steps))
    return Plan(run_config, algo_name, algo_class, algo_config, resolved, obs_space, action_space, warnings)


def _never_learns(algo_config: Any, total_steps: int) -> list[str]:
    """Settings under which the algorithm would never update within total_steps."""
    found = []
    learning_starts = getattr(algo_config, "learning_starts", None)
    if learning_starts is not None and learning_starts >= total_steps:
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
    fitting = [name for name in ALGORITHMS if isinstance(space, get_algorithm(name).action_spaces)]
    wanted = " or ".join(t.__name__ for t in algo_class.action_spaces)
    fits = f"; algorithms that fit: {', '.join(fitting)}" if fitting else "; no registered algorithm fits it"
    raise ConfigError(f"algo={algo_name} needs a {wanted} action space, but {env_id} has a {space_name(space)} one{fits}")


def resolve_device(name: str) -> torch.device:
    """`device=auto` is CUDA when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
