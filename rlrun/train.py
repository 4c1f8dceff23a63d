"""Train a planned run in its folder: resume or start, build the agent, stop on signals,
write summary.json."""

from __future__ import annotations

import json
import os
import random
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rlrun.checkpoint import Checkpoint, check_resumable, describe_write_error, latest, load
from rlrun.config import RunError
from rlrun.logger import log
from rlrun.plan import Plan
from rlrun.protocols import Algorithm
from rlrun.run import DivergenceError, Run, StopRun, flatten_config


def execute(plan: Plan, run_dir: Path) -> dict[str, Any]:
    """Train the planned run in `run_dir`; write summary.json there and return it.

    A run folder that already holds a checkpoint continues from it (resume=, a rerun sweep, a
    requeued Slurm job); one whose checkpoint reached total_steps is left as it is.
    """
    settings = plan.run_config
    checkpoint_path = latest(run_dir)
    resumed = None
    if checkpoint_path is not None:
        header = check_resumable(
            checkpoint_path, plan.algo_name, settings.env.id, backend=settings.env.backend, total_steps=settings.total_steps
        )
        if header["step"] >= settings.total_steps:
            log.info("nothing to do: %s already reached total_steps=%d", checkpoint_path, settings.total_steps)
            return _completed_summary(plan, run_dir, header, checkpoint_path)
        # Loaded to the host: the agent and the loop's parts copy their tensors to the device,
        # and RNG states and host-side arrays must stay on the host.
        resumed = load(checkpoint_path, algo=plan.algo_name)
    seed_everything(settings.seed)
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    try:
        run = Run(plan, run_dir, resumed)
    except OSError as error:
        raise RunError(f"cannot write in the run folder {run_dir}: {describe_write_error(error)}") from error
    agent = build_agent(plan, run.device)
    if not run.logger.reused_folder:
        run.logger.hyperparameters(flatten_config(plan.config), ["eval/return_mean"])
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
        summary = {"algo": plan.algo_name, "env_id": settings.env.id, "seed": settings.seed, **run.summary(status)}
        if run.stop_signal is not None:
            summary["signal"] = run.stop_signal
        if error is not None:
            summary["error"] = str(error)
        # Never raised from here: an error already on its way out must not be replaced.
        closing_problems = _finish(run, run_dir, summary)
    if closing_problems:
        raise RunError(closing_problems[0])
    if run.stop_signal == "SIGUSR2" and run.requeue is not None:
        run.requeue(signal.SIGUSR2, None)  # submitit requeues the job; it will resume from the checkpoint
    return summary


def build_agent(plan: Plan, device: torch.device) -> Algorithm:
    """The planned algorithm on `device`, with the run's compile and precision switches."""
    agent = plan.algo_class(plan.algo_config, plan.obs_space, plan.action_space, device, plan.run_config.seed)
    if plan.run_config.compile:
        compile_networks(agent)
    if plan.run_config.precision == "bfloat16":
        bfloat16_updates(agent)
    return agent


def compile_networks(agent: object) -> None:
    """torch.compile, in place, every network the agent holds. A module without a forward of
    its own (PPO's ActorCritic, whose methods call its sub-networks) has those compiled instead.
    In-place compilation keeps parameter names, so checkpoints do not change."""

    def visit(module: nn.Module) -> None:
        if type(module).forward is nn.Module.forward:
            for child in module.children():
                visit(child)
        else:
            module.compile()

    for value in vars(agent).values():
        if isinstance(value, nn.Module):
            visit(value)


def bfloat16_updates(agent: object) -> None:
    """Mixed precision for the agent's gradient updates (every algorithm's `update`): hidden
    layers run under bfloat16 autocast, output layers in float32 (rlrun.nets.OutputLinear);
    weights and optimiser state stay float32. Acting and evaluation stay float32.

    Autocast's cache of bfloat16 weight copies is off: it lives until the autocast region
    ends, so PPO's many optimiser steps inside one `update` would otherwise all use the
    weights from before the first."""
    agent.update = torch.autocast(agent.device.type, dtype=torch.bfloat16, cache_enabled=False)(agent.update)


@contextmanager
def _stop_on_signals(run: Run) -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP (a closed terminal or a dropped SSH session) ask the run to
    stop after the current step with a checkpoint (see Run.after_step); a second one stops it
    at once. SIGUSR1, and SIGUSR2 outside a scheduler, write a checkpoint after the current
    step and training goes on. Under submitit (hydra/launcher=slurm), whose handler for SIGUSR2
    (Slurm's time-limit and preemption warning) requeues the job, SIGUSR2 stops the run like
    SIGTERM, and `run.requeue` is that handler, for execute to call once the checkpoint and
    summary are written."""

    def request_stop(signum: int, frame: Any) -> None:
        if run.stop_signal is not None:
            raise KeyboardInterrupt
        run.stop_signal = signal.Signals(signum).name
        log.warning("%s: stopping after this step with a checkpoint (Ctrl-C again stops at once)", run.stop_signal)

    def request_checkpoint(signum: int, frame: Any) -> None:
        run.checkpoint_signal = signal.Signals(signum).name

    # A signal ignored by whoever started us (nohup, a shell's background job) stays ignored.
    stopping = [sig for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) if signal.getsignal(sig) is not signal.SIG_IGN]
    checkpointing = [sig for sig in (signal.SIGUSR1, signal.SIGUSR2) if signal.getsignal(sig) is signal.SIG_DFL]
    if callable(requeue := signal.getsignal(signal.SIGUSR2)):
        stopping.append(signal.SIGUSR2)
        run.requeue = requeue
    try:
        previous = {sig: signal.signal(sig, request_stop) for sig in stopping}
        previous.update({sig: signal.signal(sig, request_checkpoint) for sig in checkpointing})
    except ValueError:  # not the main thread (some launchers): keep the default handlers
        previous = {}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _completed_summary(plan: Plan, run_dir: Path, header: Checkpoint, checkpoint_path: Path) -> dict[str, Any]:
    """The summary of a run that a checkpoint shows finished; summary.json is kept if it says so."""
    path = run_dir / "summary.json"
    if path.exists():
        summary = json.loads(path.read_text())
        if summary.get("status") == "completed":
            return summary
    last_eval = header["run"]["last_eval"]
    summary = {
        "algo": plan.algo_name,
        "env_id": plan.run_config.env.id,
        "seed": plan.run_config.seed,
        "status": "completed",
        "total_steps": header["step"],
        "eval_return_mean": None if last_eval is None else float(last_eval.mean()),
        "eval_return_std": None if last_eval is None else float(last_eval.std()),
        "wall_time_s": round(header["run"]["clock"]["elapsed"], 3),
        "checkpoint": str(checkpoint_path),
    }
    _write_summary(run_dir, summary)
    return summary


def _finish(run: Run, run_dir: Path, summary: dict[str, Any]) -> list[str]:
    """Write summary.json and close the run's environments and logs; returns what failed, one
    line each (also logged), instead of raising."""
    problems = []
    try:
        _write_summary(run_dir, summary)
    except OSError as error:
        problems.append(f"cannot write {run_dir / 'summary.json'}: {describe_write_error(error)}; the checkpoints are kept")
    try:
        run.close()
    except (OSError, RunError) as error:
        problems.append(
            str(error) if isinstance(error, RunError) else f"cannot close the run's logs: {describe_write_error(error)}"
        )
    for problem in problems:
        log.error("%s", problem)
    return problems


def _write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    temporary = run_dir / "summary.json.tmp"
    try:
        temporary.write_text(json.dumps(summary, indent=2) + "\n")
        os.replace(temporary, run_dir / "summary.json")
    finally:
        temporary.unlink(missing_ok=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
