"""From a composed config to a finished run: validate, build the parts, train, summarise."""

from __future__ import annotations

import json
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator, Mapping

import gymnasium as gym
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from rlrun.checkpoint import Checkpointer
from rlrun.config import ConfigError, RunConfig, from_mapping
from rlrun.envs import check_env_id, env_spaces, make_env, make_vector_env, space_name
from rlrun.evaluate import evaluate
from rlrun.logger import RunLogger, log
from rlrun.registry import ALGORITHMS, get_algorithm

EVAL_SEED_OFFSET = 10_000  # the evaluation env's seed is seed + this, apart from training's


class StopRun(Exception):
    """Raised inside a training loop to end the run early but cleanly: the run's summary gets
    `status` (e.g. "pruned" for an Optuna trial the study stopped) and the job does not fail."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Plan:
    """A validated run: everything needed to build it, as plain values."""

    run: RunConfig
    algo_name: str
    algo_class: type
    algo: Any  # the algorithm's own Config dataclass
    config: dict  # the composed config, resolved, for checkpoints and hyperparameter logs
    obs_space: gym.Space  # as the agent sees them (after any Atari preprocessing)
    action_space: gym.Space


def validate(cfg: DictConfig) -> Plan:
    """Check the composed config and the environment's spaces; raise ConfigError if unfit."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    config = dict(resolved)
    algo_values = dict(config.pop("algo"))
    algo_name = algo_values.pop("name", None)
    algo_class = get_algorithm(algo_name)
    algo = from_mapping(algo_class.Config, algo_values, prefix="algo.")
    run = from_mapping(RunConfig, config)
    if run.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but CUDA is not available here; use device=cpu or device=auto")
    check_env_id(run.env.id)
    obs_space, action_space = env_spaces(run.env)
    _check_action_space(algo_name, algo_class, run.env.id, action_space)
    algo_class.check_spaces(algo, obs_space, action_space)
    return Plan(run, algo_name, algo_class, algo, resolved, obs_space, action_space)


def _check_action_space(algo_name: str, algo_class: type, env_id: str, space: gym.Space) -> None:
    if isinstance(space, algo_class.action_spaces):
        return
    fitting = [name for name in ALGORITHMS if isinstance(space, get_algorithm(name).action_spaces)]
    wanted = " or ".join(t.__name__ for t in algo_class.action_spaces)
    fits = f"; algorithms that fit: {', '.join(fitting)}" if fitting else "; no registered algorithm fits it"
    raise ConfigError(f"algo={algo_name} needs a {wanted} action space, but {env_id} has a {space_name(space)} one{fits}")


class Run:
    """What an algorithm's training loop talks to: the env, the clock, logs, eval, checkpoints."""

    def __init__(self, plan: Plan, run_dir: Path) -> None:
        self.config = plan.run
        self.seed = plan.run.seed
        self.total_steps = plan.run.total_steps
        self.device = resolve_device(plan.run.device)
        self.eval_env = make_env(plan.run.env, self.seed + EVAL_SEED_OFFSET, training=False)
        self.logger = RunLogger(run_dir, plan.run.total_steps, plan.run.progress)
        self.checkpointer = Checkpointer(run_dir, plan.algo_name, plan.run.env.id, plan.config, plan.run.checkpoint.keep)
        self.step = 0
        self.last_eval: np.ndarray | None = None
        self._start = self._last_log_time = time.perf_counter()
        self._last_log_step = 0
        # Seconds spent evaluating and checkpointing, left out of the training SPS.
        self._paused_total = self._paused_since_log = 0.0
        self._envs: list[Any] = []
        self.trial = None
        if plan.run.trial is not None:  # only Optuna sweeps need optuna
            from rlrun.tuning import TrialReporter

            self.trial = TrialReporter(plan.run.trial)

    @cached_property
    def env(self) -> gym.Env:
        """The training environment, for algorithms that step one at a time."""
        env = make_env(self.config.env, self.seed, training=True)
        self._envs.append(env)
        return env

    def make_vector_env(self, num_envs: int, asynchronous: bool) -> gym.vector.VectorEnv:
        """`num_envs` training environments stepped together, seeded seed, seed+1, ..."""
        env = make_vector_env(self.config.env, self.seed, num_envs, asynchronous, training=True)
        self._envs.append(env)
        return env

    def episode_end(self, step: int, episode_return: float, episode_length: int) -> None:
        """Record a finished training episode."""
        self.logger.episode(step, float(episode_return), int(episode_length))

    def after_step(self, step: int, agent: Any, metrics: Mapping[str, Any] | None) -> None:
        """Called after each environment step (or vector step: `step` may jump by num_envs);
        logs, evaluates and checkpoints when `step` crosses each schedule's next multiple."""
        previous, self.step = self.step, step
        config = self.config
        last = step >= self.total_steps
        if step // config.log.every > previous // config.log.every:
            now = time.perf_counter()
            sps = (step - self._last_log_step) / max(now - self._last_log_time - self._paused_since_log, 1e-9)
            self._last_log_step, self._last_log_time, self._paused_since_log = step, now, 0.0
            self.logger.scalars(step, {**(metrics or {}), "perf/sps": sps})
            self.logger.progress(step, sps)
        if step // config.eval.every > previous // config.eval.every or last:
            with self._paused():
                returns = evaluate(agent.policy, self.eval_env, config.eval.episodes, self.seed + EVAL_SEED_OFFSET)
            self.last_eval = returns
            self.logger.scalars(step, {"eval/return_mean": returns.mean(), "eval/return_std": returns.std()})
            log.info("step %d: eval return %.1f ± %.1f", step, returns.mean(), returns.std())
            if self.trial is not None:
                self.trial.report(step, float(returns.mean()))  # raises TrialPruned to stop early
        if step // config.checkpoint.every > previous // config.checkpoint.every or last:
            with self._paused():
                self.checkpointer.save(step, agent.state_dict())

    @contextmanager
    def _paused(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self._paused_total += elapsed
            self._paused_since_log += elapsed

    def summary(self, status: str) -> dict[str, Any]:
        wall = time.perf_counter() - self._start
        evaluated = self.last_eval is not None
        return {
            "status": status,
            "total_steps": self.step,
            "eval_return_mean": float(self.last_eval.mean()) if evaluated else None,
            "eval_return_std": float(self.last_eval.std()) if evaluated else None,
            "wall_time_s": round(wall, 3),
            "sps": round(self.step / max(wall - self._paused_total, 1e-9), 2),
            "torch_threads": torch.get_num_threads(),
        }

    def close(self) -> None:
        for env in [*self._envs, self.eval_env]:
            env.close()
        self.logger.close()


def execute(plan: Plan, run_dir: Path) -> dict[str, Any]:
    """Train the planned run in `run_dir`; write summary.json there and return it."""
    seed_everything(plan.run.seed)
    if plan.run.threads is not None:
        torch.set_num_threads(plan.run.threads)
    run = Run(plan, run_dir)
    agent = plan.algo_class(plan.algo, plan.obs_space, plan.action_space, run.device, plan.run.seed)
    run.logger.hyperparameters(_flatten(plan.config), ["eval/return_mean"])
    status = "failed"
    try:
        agent.train(run)
        status = "completed"
    except StopRun as stop:
        status = stop.status
        log.info("stopped at step %d: %s", run.step, stop)
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        summary = {"algo": plan.algo_name, "env_id": plan.run.env.id, "seed": plan.run.seed, **run.summary(status)}
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        run.close()
    return summary


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
