"""Train a planned run in its folder: continue or start, build the agent, train it, write
summary.json."""

from __future__ import annotations

import contextlib
import json
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rlrun.blocks.buffers import ReplayBuffer
from rlrun.blocks.stacking import SeedGroup, SeedStack
from rlrun.config import ConfigError, RunError
from rlrun.core.checkpoint import load
from rlrun.core.finetune import FineTuned
from rlrun.core.folders import describe_write_error, strict_json
from rlrun.core.logger import log
from rlrun.core.plan import Plan
from rlrun.core.registry import BATCHED_ALGORITHMS
from rlrun.core.run import DivergenceError, Run, StopRun
from rlrun.protocols import Algorithm


def execute(plan: Plan, run_dir: Path) -> dict[str, Any]:
    """Train the planned run in `run_dir`; write summary.json there and return it.

    The plan says whether the run continues from a checkpoint (Plan.in_folder); one whose
    checkpoint reached total_steps is left as it is.
    """
    settings = plan.run_config
    resumed = None
    if plan.resume is not None:
        if plan.resume.finished:
            log.info("nothing to do: %s already reached total_steps=%d", plan.resume.checkpoint, settings.total_steps)
            return _completed_summary(plan, run_dir)
        # Loaded to the host: the agent and the loop's parts copy their tensors to the device,
        # and RNG states and host-side arrays must stay on the host.
        resumed = load(plan.resume.checkpoint, algo=plan.algo_name)
    seed_everything(settings.seed)
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    try:
        run = Run(plan, run_dir, resumed)
    except OSError as error:
        raise RunError(f"cannot write in the run folder {run_dir}: {describe_write_error(error)}") from error
    agent = build_agent(plan)
    if plan.init is not None and resumed is None:
        agent.load_offline_start()
    del resumed  # the run holds it until the loop has restored itself
    outcome = Outcome()
    try:
        with outcome.recorded(run), run.stopping_on_signals():
            agent.train(run)
    finally:
        summary = run_summary(plan, run, outcome.status, outcome.error)
        # Never raised from here: an error already on its way out must not be replaced.
        closing_problems = finish(run, run_dir, summary)
    if closing_problems:
        raise RunError(closing_problems[0])
    run.requeue_if_asked()
    return summary


def run_summary(plan: Plan, run: Run, status: str, error: Exception | None, **extra: Any) -> dict[str, Any]:
    """summary.json's content for a run that ended with `status`: what ran, the run's own
    numbers, `extra`, and the signal or error that ended it."""
    settings = plan.run_config
    summary = {"algo": plan.algo_name, "env_id": settings.env.id, "seed": settings.seed, **run.summary(status), **extra}
    if run.stop_signal is not None:
        summary["signal"] = run.stop_signal
    if error is not None:
        summary["error"] = str(error)
    return summary


def why_not_batched(plans: Sequence[Plan]) -> str | None:
    """Why these planned runs (one configuration, one run per seed) cannot train as one
    batched group (docs/batched-seeds.md); None if they can."""
    first, settings = plans[0], plans[0].run_config
    algo_config = first.algo_config
    if len(plans) < 2:
        return "a group of one seed trains as a separate run"
    if first.algo_name not in BATCHED_ALGORITHMS:
        return f"algo={first.algo_name} does not batch seeds yet (algorithms that do: {', '.join(BATCHED_ALGORITHMS)})"
    unsupported = [
        ("precision=bfloat16", settings.precision != "float32"),
        ("compile=true", settings.compile),
        (f"env.backend={settings.env.backend}", settings.env.backend != "gymnasium"),
        ("algo.critic_loss=hl_gauss", getattr(algo_config, "critic_loss", "mse") != "mse"),
        ("log.wandb.project", settings.log.wandb.project is not None),
    ]
    for setting, given in unsupported:
        if given:
            return f"{setting} is not stacked across seeds yet"
    if any(plan.resume is not None for plan in plans):
        return "a seed's folder holds a checkpoint: each seed continues from its own as a separate run"
    return None


def execute_group(plans: Sequence[Plan], run_dirs: Sequence[Path]) -> list[dict[str, Any]]:
    """Train the planned runs of a batched group (why_not_batched says None) side by side in
    one process, each in its own folder with its own summary.json; returns the summaries.

    Each seed's agent is built as its separate run builds it (under its seed), then the
    agents are stacked into one (rlrun/blocks/stacking.py), which the algorithm's
    train_seeds trains. A seed that fails alone (its environment, a divergence) stops with its
    own status and error while the others go on; anything else stops the group (every
    summary.json names it)."""
    first = plans[0]
    seeds = [plan.run_config.seed for plan in plans]
    check_group_memory(plans)
    if first.run_config.threads is not None:
        torch.set_num_threads(first.run_config.threads)
    agents = []
    for plan in plans:
        seed_everything(plan.run_config.seed)
        agents.append(build_agent(plan))

    def build(stack: SeedStack) -> Algorithm:
        return first.algo_class(first.algo_config, first.obs_space, first.action_space, first.device, stack.seeds[0], stack=stack)

    group = SeedGroup(build, SeedStack(seeds, first.device), agents[0])
    group.stacked.load_state_dict(group.layout.stack([agent.state_dict() for agent in agents]))
    del agents
    seed_everything(seeds[0])
    runs: list[Run] = []
    try:
        for plan, run_dir in zip(plans, run_dirs):
            runs.append(Run(plan, run_dir))
    except OSError as error:
        for run in runs:
            run.close()
        raise RunError(f"cannot write in the run folder {run_dir}: {describe_write_error(error)}") from error
    log.info("batched group of seeds %s: one stacked %s agent", ", ".join(map(str, seeds)), first.algo_name)
    outcome = Outcome()
    try:
        with outcome.recorded(runs[0]), runs[0].stopping_on_signals(group=runs[1:]):
            group.stacked.train_seeds(group, runs)
    finally:
        summaries, problems = [], []
        for plan, run, run_dir in zip(plans, runs, run_dirs):
            own = group.stopped.get(plan.run_config.seed)
            status, error = (Outcome.of(own), own) if own is not None else (outcome.status, outcome.error)
            summary = run_summary(plan, run, status, error, seed_group=seeds)
            problems += finish(run, run_dir, summary)
            summaries.append(summary)
    if problems:
        raise RunError(problems[0])
    return summaries


def check_group_memory(plans: Sequence[Plan]) -> None:
    """Refuse, before anything is allocated, a batched group whose seeds' replay buffers do not
    fit in the memory its device has free (a group allocates them all at once, and an
    oversized one would be killed mid-run by the kernel, not stopped with a message)."""
    first = plans[0]
    capacity = min(first.algo_config.buffer_size, first.run_config.total_steps)
    per_seed = ReplayBuffer.bytes_needed(capacity, first.obs_space.shape, first.action_space.shape)
    needed, free = len(plans) * per_seed, free_memory(first.device)
    if free is not None and needed > free:
        gib = 2**30
        raise ConfigError(
            f"a batched group of {len(plans)} seeds needs about {needed / gib:.1f} GiB for its replay buffers "
            f"({per_seed / gib:.2f} GiB a seed: {capacity} transitions), more than the {free / gib:.1f} GiB free on "
            f"{first.device}; give the group fewer seeds or a smaller algo.buffer_size"
        )


def free_memory(device: torch.device) -> int | None:
    """Bytes free on `device`: the GPU's, or the host's available memory (None where unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


@dataclass
class Outcome:
    """How training ended, for summary.json: completed, stopped (StopRun's status),
    interrupted, diverged or failed, with the error that ended it."""

    status: str = "failed"
    error: RunError | None = None

    @contextlib.contextmanager
    def recorded(self, run: Run) -> Iterator[None]:
        """Record the outcome of the block; a StopRun ends it quietly, anything else goes on up."""
        try:
            yield
            self.status = "completed"
        except StopRun as stop:
            self.status = stop.status
            log.info("stopped at step %d: %s", run.step, stop)
        except KeyboardInterrupt:
            self.status = "interrupted"
            raise
        except RunError as failure:
            self.status, self.error = self.of(failure), failure
            raise

    @staticmethod
    def of(failure: RunError) -> str:
        """The status of a run that `failure` ended."""
        return "diverged" if isinstance(failure, DivergenceError) else "failed"


def build_agent(plan: Plan) -> Algorithm:
    """The planned algorithm on the plan's device, with the run's compile and precision
    switches; behind its offline start's input normalisation if it has one (init=)."""
    agent = plan.algo_class(plan.algo_config, plan.obs_space, plan.action_space, plan.device, plan.run_config.seed)
    if plan.run_config.compile:
        compile_networks(agent)
    if plan.run_config.init is not None:
        agent = FineTuned(agent, plan.algo_name, plan.obs_space, plan.run_config.finetune, plan.init)
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
    layers run under bfloat16 autocast, output layers in float32 (rlrun.blocks.nets.OutputLinear);
    weights and optimiser state stay float32. Acting and evaluation stay float32.

    Autocast's cache of bfloat16 weight copies is off: it lives until the autocast region
    ends, so PPO's many optimiser steps inside one `update` would otherwise all use the
    weights from before the first."""
    agent.update = torch.autocast(agent.device.type, dtype=torch.bfloat16, cache_enabled=False)(agent.update)


def _completed_summary(plan: Plan, run_dir: Path) -> dict[str, Any]:
    """The summary of a run that its checkpoint shows finished: summary.json as it is if it
    says completed, else with its status, step and checkpoint brought up to date and every
    other field it had kept."""
    path = run_dir / "summary.json"
    try:
        summary = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, json.JSONDecodeError):
        summary = {}
    if not isinstance(summary, dict):
        summary = {}
    if summary.get("status") == "completed":
        return summary
    resume = plan.resume
    found = {
        "algo": plan.algo_name,
        "env_id": plan.run_config.env.id,
        "seed": plan.run_config.seed,
        "total_steps": resume.step,
        "eval_return_mean": None if resume.last_eval is None else resume.last_eval[0],
        "eval_return_std": None if resume.last_eval is None else resume.last_eval[1],
        "wall_time_s": round(resume.elapsed, 3),
        "checkpoint": str(resume.checkpoint),
    }
    kept = {key: found[key] if value is None and key in found else value for key, value in summary.items()}
    summary = {**found, **kept, "status": "completed", "total_steps": resume.step, "checkpoint": str(resume.checkpoint)}
    _write_summary(run_dir, summary)
    return summary


def finish(run: Run, run_dir: Path, summary: dict[str, Any]) -> list[str]:
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
        temporary.write_text(strict_json(summary))
        os.replace(temporary, run_dir / "summary.json")
    finally:
        temporary.unlink(missing_ok=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def record_failure(run_dir: Path, error: Exception) -> None:
    """Make sure a failed job's summary.json says it failed and why (a one-line error as it is
    worded, anything else with its exception type); a folder that cannot be written is left."""
    path = run_dir / "summary.json"
    try:
        summary = json.loads(path.read_text()) if path.exists() else {"status": "failed"}
    except (OSError, json.JSONDecodeError):
        summary = {"status": "failed"}
    summary["error"] = str(error) if isinstance(error, (ConfigError, RunError)) else f"{type(error).__name__}: {error}"
    try:
        path.write_text(strict_json(summary))
    except OSError as write_error:
        log.error("cannot write %s: %s", path, write_error.strerror)
