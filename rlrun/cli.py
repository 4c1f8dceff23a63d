"""The `rlrun` command: Hydra composes the config, rlrun checks it, then trains.

Before Hydra creates any run folder, every job of the command line (one, or each job of a
`-m` grid) is composed and validated, so a typo or an unfit algorithm × environment pair
gets a one-line error and nothing is written.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from rlrun.config import ConfigError

CONFIG_MODULE = "rlrun.configs"
log = logging.getLogger("rlrun")

# The one Hydra flag the preflight runs with (see preflight).
_MULTIRUN_FLAGS = {"-m", "--multirun"}
_MAX_REPORTED_JOBS = 20


def main() -> None:
    errors = preflight(sys.argv[1:])
    if errors:
        for line in errors:
            print(f"rlrun: error: {line}", file=sys.stderr)
        sys.exit(2)
    _hydra_main()


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name="config")
def _hydra_main(cfg: DictConfig) -> dict | None:
    """One job. Returns its summary (what summary.json holds), which sweepers read from
    Hydra's JobReturn; None if the job failed."""
    from rlrun.dispatch import execute, validate

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        plan = validate(cfg)
        if plan.run.threads is None and (threads := _threads_per_parallel_job()) is not None:
            plan = dataclasses.replace(plan, run=dataclasses.replace(plan.run, threads=threads))
        log.info(
            "%s on %s, seed %d, %d steps, pid %d, %s torch threads → %s", plan.algo_name, plan.run.env.id,
            plan.run.seed, plan.run.total_steps, os.getpid(), plan.run.threads or "default", run_dir,
        )
        summary = execute(plan, run_dir)
    except Exception as error:
        if not multirun:
            if isinstance(error, ConfigError):
                print(f"rlrun: error: {error}", file=sys.stderr)
                sys.exit(2)
            raise
        # One job's failure must not stop a sweep: record it, and let the sweep summary
        # (rlrun/sweep.py) report it and exit non-zero once every job has run.
        log.error("job failed: %s: %s", type(error).__name__, error, exc_info=not isinstance(error, ConfigError))
        record_failure(run_dir, error)
        return None
    log.info(
        "%s: eval return %.1f ± %.1f after %d steps, %.0f steps/s, %.0f s", summary["status"],
        summary["eval_return_mean"], summary["eval_return_std"], summary["total_steps"], summary["sps"], summary["wall_time_s"],
    )
    return summary


def _threads_per_parallel_job() -> int | None:
    """Cores ÷ parallel jobs when a launcher runs jobs side by side on this machine (joblib's
    n_jobs), so that they do not oversubscribe the CPU; None otherwise."""
    n_jobs = HydraConfig.get().launcher.get("n_jobs")
    if n_jobs is None:
        return None
    cores = os.cpu_count() or 1
    parallel = cores if n_jobs < 0 else min(n_jobs, cores)  # joblib: -1 means one job per core
    return max(1, cores // parallel)


def record_failure(run_dir: Path, error: Exception) -> None:
    """Make sure a failed job's summary.json says it failed and why."""
    path = run_dir / "summary.json"
    summary = json.loads(path.read_text()) if path.exists() else {"status": "failed"}
    summary["error"] = f"{type(error).__name__}: {error}"
    path.write_text(json.dumps(summary, indent=2) + "\n")


def preflight(args: list[str]) -> list[str]:
    """Compose and validate every job `args` describe; one error line per bad job.

    Skipped when Hydra's own flags (--help, --cfg, -cn, ...) are present: those print or
    change the config source, and Hydra reports their problems itself.
    """
    flags = [a for a in args if a.startswith("-")]
    if any(flag not in _MULTIRUN_FLAGS for flag in flags):
        return []
    overrides = [a for a in args if not a.startswith("-")]
    try:
        jobs = _expand(overrides) if flags else [overrides]
    except HydraException as error:
        return [_describe(error, overrides)]

    from hydra import compose, initialize_config_module

    from rlrun.dispatch import validate

    errors = []
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        for job in jobs:
            try:
                validate(compose("config", overrides=job))
            except (ConfigError, HydraException) as error:
                prefix = f"job {' '.join(job)}: " if len(jobs) > 1 else ""
                errors.append(prefix + _describe(error, job))
    if len(errors) > _MAX_REPORTED_JOBS:
        errors = errors[:_MAX_REPORTED_JOBS] + [f"... and {len(errors) - _MAX_REPORTED_JOBS} more bad jobs"]
    return errors


def _expand(overrides: list[str]) -> list[list[str]]:
    """The jobs of a basic-sweeper grid (`a=1,2 b=range(3)`), each as its override list."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    if any(o.is_hydra_override() and o.key_or_group.startswith("hydra/sweeper") for o in parsed):
        return []  # another sweeper (e.g. Optuna) chooses its own jobs
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def _describe(error: Exception, overrides: list[str]) -> str:
    """One line for a composition or validation error, naming the bad value."""
    if isinstance(error, ConfigError):
        return str(error)
    if isinstance(error, MissingConfigException) and error.options is not None and error.missing_cfg_file:
        group, _, value = error.missing_cfg_file.rpartition("/")
        extra = "; or keep env= and set env.id=<any Gymnasium id>" if group == "env" else ""
        return f"unknown {group} {value!r}; choose one of: {', '.join(sorted(error.options))}{extra}"
    cause = error.__cause__
    if isinstance(cause, OmegaConfBaseException) and cause.full_key:
        siblings = list(cause.parent_node.keys()) if cause.parent_node is not None else []
        close = difflib.get_close_matches(str(cause.key), [str(k) for k in siblings], n=1)
        parent = cause.full_key.rpartition(".")[0]
        hint = f"; did you mean '{parent + '.' if parent else ''}{close[0]}'?" if close else (
            f"; valid keys here: {', '.join(map(str, siblings))}" if siblings else ""
        )
        return f"unknown config key '{cause.full_key}'{hint}"
    return str(error).strip().splitlines()[0]


if __name__ == "__main__":
    main()
