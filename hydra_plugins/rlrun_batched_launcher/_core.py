"""Groups a sweep's jobs by everything but their seed; each group of two or more seeds of an
algorithm that batches trains as one batched group (rlrun.commands.train.train_seed_group),
every other job runs alone in this process, as Hydra's basic launcher runs it.

A group's jobs are first set up by Hydra's own run_job with a task that only plans them
(their folders, .hydra/ files and logging are then a separate job's), then trained together;
their JobReturns get the summaries afterwards."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from omegaconf import open_dict

import rlrun.commands.sweep  # noqa: F401  the resolver that names the job's folder (hydra.sweep.subdir)
from rlrun.commands import train
from rlrun.core.training import why_not_batched

log = logging.getLogger(__name__)


def all_but_seed(overrides: Sequence[str]) -> tuple[str, ...]:
    """A job's overrides other than seed=, which name its configuration."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return tuple(text for text, override in zip(overrides, parsed) if override.key_or_group != "seed")


def seed_groups(job_overrides: Sequence[Sequence[str]]) -> list[list[int]]:
    """The jobs' indices grouped by their overrides other than seed=, in first-seen order."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for index, overrides in enumerate(job_overrides):
        groups.setdefault(all_but_seed(overrides), []).append(index)
    return list(groups.values())


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    setup_globals()
    config, context = launcher.config, launcher.hydra_context
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    groups = seed_groups(job_overrides)
    log.info(
        "batched launcher: %d jobs in %d group(s) of seeds; each group trains in one process, one group after another",
        len(job_overrides),
        len(groups),
    )
    returns: list[JobReturn | None] = [None] * len(job_overrides)

    def job_config(index: int):
        sweep_config = context.config_loader.load_sweep_config(config, list(job_overrides[index]))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = sweep_config.hydra.job.num = initial_job_idx + index
        return sweep_config

    def run_alone(index: int) -> JobReturn:
        log.info("\t#%d : %s", initial_job_idx + index, " ".join(filter_overrides(job_overrides[index])))
        job_return = run_job(
            hydra_context=context,
            task_function=launcher.task_function,
            config=job_config(index),
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)
        return job_return

    for group in groups:
        planned = [
            run_job(
                hydra_context=context,
                task_function=train.plan_group_job,
                config=job_config(index),
                job_dir_key="hydra.sweep.dir",
                job_subdir_key="hydra.sweep.subdir",
            )
            for index in group
        ]
        failed = next((job for job in planned if job.status != JobStatus.COMPLETED), None)
        reason = str(failed._return_value) if failed is not None else why_not_batched([job._return_value for job in planned])
        described = " ".join(filter_overrides(all_but_seed(job_overrides[group[0]]))) or "the default configuration"
        if reason is not None:
            if len(group) > 1:
                log.warning("batched launcher: the %d seeds of %s run one after another: %s", len(group), described, reason)
            for index in group:
                returns[index] = run_alone(index)
            continue
        plans = [job._return_value for job in planned]
        run_dirs = [Path(job.hydra_cfg.hydra.runtime.output_dir) for job in planned]
        log.info("batched launcher: seeds %s of %s as one group", ", ".join(str(p.run_config.seed) for p in plans), described)
        with _logging_to(run_dirs[:-1]):  # run_job left the last seed's rlrun.log configured
            summaries = train.train_seed_group(plans, run_dirs)
        for index, job, summary in zip(group, planned, summaries):
            job.return_value = summary
            returns[index] = job
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    return returns


class _logging_to:
    """The group's log also in each of these run folders' rlrun.log."""

    def __init__(self, run_dirs: Sequence[Path]) -> None:
        self.handlers = [logging.FileHandler(run_dir / "rlrun.log") for run_dir in run_dirs]

    def __enter__(self) -> None:
        existing = next((h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)), None)
        for handler in self.handlers:
            if existing is not None:
                handler.setFormatter(existing.formatter)
            logging.getLogger().addHandler(handler)

    def __exit__(self, *exc: object) -> None:
        for handler in self.handlers:
            logging.getLogger().removeHandler(handler)
            handler.close()
