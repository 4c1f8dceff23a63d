"""From a composed config to a finished run: validate, build the parts, train, summarise."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import gymnasium as gym
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from rlrun.buffers import ReplayBuffer
from rlrun.checkpoint import Checkpointer, check_resumable, latest, load, restore_rng_state, rng_state
from rlrun.config import ConfigError, RunConfig, RunError, from_mapping
from rlrun.envs import check_env_id, env_spaces, env_state, make_env, make_vector_env, restore_env, space_name
from rlrun.evaluate import evaluate
from rlrun.logger import RunLogger, log
from rlrun.nets import bfloat16_updates, compile_networks
from rlrun.registry import ALGORITHMS, get_algorithm

EVAL_SEED_OFFSET = 10_000  # the evaluation env's seed is seed + this, apart from training's


class StopRun(Exception):
    """Raised inside a training loop to end the run early but cleanly: the run's summary gets
    `status` (e.g. "pruned" for an Optuna trial the study stopped) and the job does not fail."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


class DivergenceError(RunError):
    """A NaN or infinity in a metric, parameter or optimiser state; the message names it."""


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
    if run.precision == "bfloat16" and resolve_device(run.device).type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("precision=bfloat16 but this GPU has no bfloat16 support; use precision=float32")
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
    """What an algorithm's training loop talks to: the env, the clock, logs, eval, checkpoints.

    A loop calls `start` once (which resumes from `resumed`, a loaded checkpoint, if given),
    `episode_end` when an episode ends, and `after_step` after every environment step.
    """

    def __init__(self, plan: Plan, run_dir: Path, resumed: dict[str, Any] | None = None) -> None:
        self.config = plan.run
        self.run_dir = run_dir
        self.seed = plan.run.seed
        self.total_steps = plan.run.total_steps
        self.device = resolve_device(plan.run.device)
        self.resumed = resumed
        self.step = resumed["step"] if resumed else 0
        self.eval_env = make_env(plan.run.env, self.seed + EVAL_SEED_OFFSET, training=False)
        self.logger = RunLogger(run_dir, plan.run.total_steps, plan.run.progress, start_step=self.step)
        self.checkpointer = Checkpointer(run_dir, plan.algo_name, plan.run.env.id, plan.config, plan.run.checkpoint.keep)
        clock = resumed["run"]["clock"] if resumed else {"elapsed": 0.0, "paused": 0.0}
        last_eval = resumed["run"]["last_eval"] if resumed else None
        self.last_eval: np.ndarray | None = None if last_eval is None else last_eval.numpy()
        self.last_checkpoint: Path | None = latest(run_dir)
        self._checkpointed_step = self.step if resumed else None
        self.stop_signal: str | None = None  # set by a SIGINT/SIGTERM handler (see execute)
        self.requeue: Callable[[int, Any], None] | None = None  # submitit's SIGUSR2 handler, if any
        self._start = time.perf_counter() - clock["elapsed"]  # wall time counts across resumes
        self._last_log_time = time.perf_counter()
        self._last_log_step = self.step
        # Seconds spent evaluating and checkpointing, left out of the training SPS.
        self._paused_total, self._paused_since_log = clock["paused"], 0.0
        self.training_env: gym.Env | gym.vector.VectorEnv | None = None
        self._agent: Any = None
        self._parts: dict[str, Any] = {}
        self._metrics: Mapping[str, Any] | None = None
        self.trial = None
        if plan.run.trial is not None:  # only Optuna sweeps need optuna
            from rlrun.tuning import TrialReporter

            self.trial = TrialReporter(plan.run.trial)

    @cached_property
    def env(self) -> gym.Env:
        """The training environment, for algorithms that step one at a time."""
        self.training_env = make_env(self.config.env, self.seed, training=True)
        return self.training_env

    def make_vector_env(self, num_envs: int, asynchronous: bool) -> gym.vector.VectorEnv:
        """`num_envs` training environments stepped together, seeded seed, seed+1, ..."""
        self.training_env = make_vector_env(self.config.env, self.seed, num_envs, asynchronous, training=True)
        return self.training_env

    def start(self, agent: Any, **parts: Any) -> tuple[np.ndarray, int, Mapping[str, Any] | None]:
        """Begin training, or continue it from the checkpoint this run resumes.

        `parts` are the loop's own stateful objects (a replay buffer, a rollout), each with
        state_dict() and load_state_dict(); checkpoints save them with the agent. Returns
        (observation, step, metrics): for a new run the training env's first, seeded
        observation, step 0 and no metrics; for a resumed one the observation, step and
        latest metrics at the checkpoint, with agent, parts, env and every RNG restored.
        """
        if self.training_env is None:
            raise RuntimeError("take the training env from run.env or run.make_vector_env() before run.start()")
        self._agent = agent
        # checkpoint.replay_buffer=false leaves replay buffers out (then a resumed run refills its own).
        keep_buffers = self.config.checkpoint.replay_buffer
        self._parts = {name: part for name, part in parts.items() if keep_buffers or not isinstance(part, ReplayBuffer)}
        if self.resumed is None:
            obs, _ = self.training_env.reset(seed=self.seed)
            return obs, 0, None
        state = self.resumed
        agent.load_state_dict(state["agent"])
        for name, part in self._parts.items():
            if name in state["loop"]:
                part.load_state_dict(state["loop"][name])
        obs = restore_env(self.training_env, state["run"]["env"])
        restore_rng_state(state["run"]["rng"])
        self._metrics = state["run"]["metrics"]
        self.resumed = None  # free the checkpoint's memory (a replay buffer can be large)
        log.info("resumed from step %d (%s)", self.step, self.last_checkpoint)
        return obs, self.step, self._metrics

    def episode_end(self, step: int, episode_return: float, episode_length: int) -> None:
        """Record a finished training episode."""
        self.logger.episode(step, float(episode_return), int(episode_length))

    def after_step(self, step: int, metrics: Mapping[str, Any] | None) -> None:
        """Called after each environment step (or vector step: `step` may jump by num_envs);
        logs, evaluates and checkpoints when `step` crosses each schedule's next multiple.

        Also where a run stops: on a non-finite metric or parameter (RunError), and after a
        SIGINT/SIGTERM, with a checkpoint (StopRun "interrupted")."""
        previous, self.step = self.step, step
        self._metrics = metrics
        config = self.config
        last = step >= self.total_steps
        if step // config.log.every > previous // config.log.every:
            self._check_finite(step)
            now = time.perf_counter()
            sps = (step - self._last_log_step) / max(now - self._last_log_time - self._paused_since_log, 1e-9)
            self._last_log_step, self._last_log_time, self._paused_since_log = step, now, 0.0
            self.logger.scalars(step, {**(metrics or {}), "perf/sps": sps})
            self.logger.progress(step, sps)
        if step // config.eval.every > previous // config.eval.every or last:
            with self._paused():
                returns = evaluate(self._agent.policy, self.eval_env, config.eval.episodes, self.seed + EVAL_SEED_OFFSET)
            self.last_eval = returns
            self.logger.scalars(step, {"eval/return_mean": returns.mean(), "eval/return_std": returns.std()})
            log.info("step %d: eval return %.1f ± %.1f", step, returns.mean(), returns.std())
            if self.trial is not None:
                self.trial.report(step, float(returns.mean()))  # raises StopRun("pruned") to stop early
        if step // config.checkpoint.every > previous // config.checkpoint.every or last:
            self.checkpoint(step)
        if self.stop_signal is not None:
            if self._checkpointed_step != step:
                self.checkpoint(step)
            raise StopRun("interrupted", f"stopped by {self.stop_signal} at step {step}")

    def checkpoint(self, step: int) -> None:
        """Save everything needed to continue from `step`, unless training has diverged."""
        self._check_finite(step)
        with self._paused():
            self.logger.flush()  # what is logged up to here survives a crash right after
            wall = time.perf_counter() - self._start
            state = {
                "agent": self._agent.state_dict(),
                "loop": {name: part.state_dict() for name, part in self._parts.items()},
                "run": {
                    "env": env_state(self.training_env),
                    "rng": rng_state(),
                    "metrics": dict(self._metrics) if self._metrics is not None else None,
                    "last_eval": None if self.last_eval is None else torch.from_numpy(self.last_eval),
                    "clock": {"elapsed": wall, "paused": self._paused_total},
                },
            }
            self.last_checkpoint = self.checkpointer.save(step, state)
            self._checkpointed_step = step

    def _check_finite(self, step: int) -> None:
        """Raise RunError naming the first NaN/inf among the latest metrics, the networks and the
        optimiser state (which turns non-finite once a gradient was). One host sync."""
        bad = first_nonfinite({"metrics": self._metrics or {}, "agent": self._agent.state_dict()})
        if bad is None:
            return
        what = "a training metric" if bad.startswith("metrics.") else (
            "optimiser state: a gradient was not finite" if "optimizer" in bad else "a network parameter"
        )
        kept = f"the last good checkpoint {self.last_checkpoint} is intact" if self.last_checkpoint else "no checkpoint had been written"
        raise DivergenceError(f"training diverged by step {step}: {bad.split('.', 1)[1]} is NaN or infinite ({what}); {kept}")

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
            "device": str(self.device),
            "torch_threads": torch.get_num_threads(),
            "checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
        }

    def close(self) -> None:
        envs = [self.eval_env] + ([self.training_env] if self.training_env is not None else [])
        for env in envs:
            env.close()
        self.logger.close()


def first_nonfinite(tree: Any, name: str = "") -> str | None:
    """The dotted name of the first float tensor or float in `tree` (nested dicts, lists)
    holding a NaN or an infinity; None if all are finite."""
    leaves: list[tuple[str, Any]] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                walk(value, f"{path}.{i}")
        elif (isinstance(node, torch.Tensor) and node.is_floating_point()) or isinstance(node, float):
            leaves.append((path, node))

    walk(tree, name)
    if not leaves:
        return None
    finite = torch.stack([
        torch.isfinite(v).all().cpu() if isinstance(v, torch.Tensor) else torch.tensor(math.isfinite(v)) for _, v in leaves
    ]).tolist()
    return next((path for (path, _), ok in zip(leaves, finite) if not ok), None)


def execute(plan: Plan, run_dir: Path) -> dict[str, Any]:
    """Train the planned run in `run_dir`; write summary.json there and return it.

    A run folder that already holds a checkpoint continues from it (resume=, a rerun sweep, a
    requeued Slurm job); one whose checkpoint reached total_steps is left as it is.
    """
    checkpoint_path = latest(run_dir)
    resumed = None
    if checkpoint_path is not None:
        header = check_resumable(checkpoint_path, plan.algo_name, plan.run.env.id)
        if header["step"] >= plan.run.total_steps:
            log.info("nothing to do: %s already reached total_steps=%d", checkpoint_path, plan.run.total_steps)
            return _completed_summary(plan, run_dir, header, checkpoint_path)
        # Loaded to the host: the agent and the loop's parts copy their tensors to the device,
        # and RNG states and host-side arrays must stay on the host.
        resumed = load(checkpoint_path, algo=plan.algo_name)
    seed_everything(plan.run.seed)
    if plan.run.threads is not None:
        torch.set_num_threads(plan.run.threads)
    run = Run(plan, run_dir, resumed)
    agent = plan.algo_class(plan.algo, plan.obs_space, plan.action_space, run.device, plan.run.seed)
    if plan.run.compile:
        compile_networks(agent)
    if plan.run.precision == "bfloat16":
        bfloat16_updates(agent)
    if not run.logger.reused_folder:
        run.logger.hyperparameters(_flatten(plan.config), ["eval/return_mean"])
    del resumed  # the run holds it until the loop has restored itself
    status, error = "failed", None
    try:
        with _stop_on_signals(run):
            agent.train(run)
        status = "completed"
    except StopRun as stop:
        status = stop.status
        log.info("stopped at step %d: %s", run.step, stop)
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except RunError as failure:
        status, error = ("diverged" if isinstance(failure, DivergenceError) else "failed"), failure
        raise
    finally:
        summary = {"algo": plan.algo_name, "env_id": plan.run.env.id, "seed": plan.run.seed, **run.summary(status)}
        if run.stop_signal is not None:
            summary["signal"] = run.stop_signal
        if error is not None:
            summary["error"] = str(error)
        _write_summary(run_dir, summary)
        run.close()
    if run.stop_signal == "SIGUSR2" and run.requeue is not None:
        run.requeue(signal.SIGUSR2, None)  # submitit requeues the job; it will resume from the checkpoint
    return summary


@contextmanager
def _stop_on_signals(run: Run) -> Iterator[None]:
    """SIGINT and SIGTERM ask the run to stop after the current step with a checkpoint (see
    Run.after_step); a second one stops it at once. Under submitit (hydra/launcher=slurm),
    whose handler for SIGUSR2 (Slurm's time-limit and preemption warning) requeues the job,
    SIGUSR2 does the same first, and `run.requeue` is that handler, for execute to call once
    the checkpoint and summary are written."""

    def request_stop(signum: int, frame: Any) -> None:
        if run.stop_signal is not None:
            raise KeyboardInterrupt
        run.stop_signal = signal.Signals(signum).name
        log.warning("%s: stopping after this step with a checkpoint (Ctrl-C again stops at once)", run.stop_signal)

    # A signal ignored by whoever started us (nohup, a shell's background job) stays ignored.
    signals = [sig for sig in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(sig) is not signal.SIG_IGN]
    if callable(requeue := signal.getsignal(signal.SIGUSR2)):
        signals.append(signal.SIGUSR2)
        run.requeue = requeue
    try:
        previous = {sig: signal.signal(sig, request_stop) for sig in signals}
    except ValueError:  # not the main thread (some launchers): keep the default handlers
        previous = {}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _completed_summary(plan: Plan, run_dir: Path, header: dict[str, Any], checkpoint_path: Path) -> dict[str, Any]:
    """The summary of a run that a checkpoint shows finished; summary.json is kept if it says so."""
    path = run_dir / "summary.json"
    if path.exists():
        summary = json.loads(path.read_text())
        if summary.get("status") == "completed":
            return summary
    last_eval = header["run"]["last_eval"]
    summary = {
        "algo": plan.algo_name, "env_id": plan.run.env.id, "seed": plan.run.seed, "status": "completed",
        "total_steps": header["step"],
        "eval_return_mean": None if last_eval is None else float(last_eval.mean()),
        "eval_return_std": None if last_eval is None else float(last_eval.std()),
        "wall_time_s": round(header["run"]["clock"]["elapsed"], 3), "checkpoint": str(checkpoint_path),
    }
    _write_summary(run_dir, summary)
    return summary


def _write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    temporary = run_dir / "summary.json.tmp"
    temporary.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(temporary, run_dir / "summary.json")


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
