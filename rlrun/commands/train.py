"""`rlrun [key=value ...]`, `rlrun -m ...` and `rlrun resume=<run folder>`: Hydra composes the
config, rlrun checks it, then trains.

Before Hydra creates any run folder, every job of the command line (one, or each job of a
`-m` grid) is composed and validated, so a typo or an unfit algorithm × environment pair
gets a one-line error and nothing is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib.resources
import json
import logging
import os
import shlex
import signal
import sys
from pathlib import Path

import hydra
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

import rlrun.commands.sweep  # noqa: F401  registers the resolver that names sweep job folders (configs/config.yaml)
from rlrun.config import ConfigError, RunError
from rlrun.core.checkpoint import latest
from rlrun.core.folders import FolderInUse, ParentWatch, check_writable, lock_run_folder, release_run_folder
from rlrun.core.logger import library_warnings_to_log
from rlrun.core.plan import Plan, validate
from rlrun.core.saved_run import read_stored_yaml
from rlrun.core.training import execute, execute_group, record_failure
from rlrun.envs.make import check_stored_wrappers, nested_target

CONFIG_MODULE = "rlrun.configs"
SLURM_INSTALL = "python -m pip install -c constraints.txt -e '.[slurm]'"
log = logging.getLogger("rlrun")

MULTIRUN_FLAGS = {"-m", "--multirun"}  # the one Hydra flag the preflight runs with (see preflight)
_MAX_REPORTED_JOBS = 20
# Plans the preflight made, by the job's overrides: a launcher that runs jobs in this process
# (the basic one) reuses them instead of validating each job again. Launchers that run jobs in
# other processes or on other machines (joblib, Slurm, Ray) validate there, where the job's
# imports and devices are the ones that count.
_PREFLIGHT_PLANS: dict[tuple[str, ...], Plan] = {}


def main(args: list[str]) -> None:
    """Train: one run, a sweep (-m), or a resumed run; Hydra's own flags (--help, --cfg, ...)
    pass through to Hydra."""
    try:
        if all(a in MULTIRUN_FLAGS for a in args if a.startswith("-")):  # other flags take values: Hydra's to parse
            # resume= is rlrun's, not Hydra's: its value is a folder, commas and all (a sweep job's).
            check_overrides([a for a in args if not a.startswith(("-", "resume="))])
        args = expand_resume(args)
    except ConfigError as error:
        print(f"rlrun: error: {error}", file=sys.stderr)
        sys.exit(2)
    # Flags (-m, --cfg, ...) and hydra.mode= are Hydra's to handle; a plain run is ours.
    if not any(a.startswith("-") or override_key(a) == "hydra.mode" for a in args):
        _run_one(args)
        return
    errors = preflight(args)
    if errors:
        for line in errors:
            print(f"rlrun: error: {line}", file=sys.stderr)
        sys.exit(2)
    sys.argv = [sys.argv[0], *args]  # what Hydra parses
    _hydra_main()


def _run_one(overrides: list[str]) -> None:
    """A single run (no -m, no Hydra flags): what Hydra's own `run` does, with the config
    composed once, where the preflight and Hydra's `run` composed it three times (Hydra
    once just to learn the run mode), a few tenths of a second each. Bad values get one line
    before Hydra creates the run folder.

    Hydra's public API cannot do this: `hydra.main` and `compose` either compose again or
    skip the run folder, its .hydra/ files, logging and callbacks. So this calls what
    `hydra.main` calls (run_job with Callbacks, private to Hydra 1.3);
    tests/test_cli.py::test_smoke_run_writes_the_run_folder pins what it writes.
    """
    from hydra._internal.callbacks import Callbacks  # private: see the docstring
    from hydra._internal.utils import run_and_report
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import run_job
    from hydra.types import HydraContext

    with initialize_config_module(CONFIG_MODULE, job_name="rlrun", version_base="1.3"):
        hydra_app = GlobalHydra.instance().hydra
        try:
            cfg = hydra_app.compose_config("config", overrides, run_mode=RunMode.RUN, with_log_configuration=True)
            plan = _check_job(cfg, multirun=False)
            for warning in plan.warnings:
                _say(f"rlrun: warning: {warning}")
            lock_run_folder(Path(cfg.hydra.run.dir))  # held until this process ends
        except (ConfigError, HydraException) as error:
            print(f"rlrun: error: {describe_error(error, overrides)}", file=sys.stderr)
            sys.exit(2)
        cfg.hydra.mode = RunMode.RUN
        callbacks = Callbacks(cfg)
        callbacks.on_run_start(config=cfg, config_name="config")
        result = run_job(
            hydra_context=HydraContext(config_loader=hydra_app.config_loader, callbacks=callbacks),
            task_function=lambda job_cfg: _job(job_cfg, plan),
            config=cfg,
            job_dir_key="hydra.run.dir",
            job_subdir_key=None,
        )
        callbacks.on_run_end(config=cfg, config_name="config", job_return=result)
        run_and_report(lambda: result.return_value)  # a crash: Hydra's short traceback, exit 1


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name="config")
def _hydra_main(cfg: DictConfig) -> dict | None:
    """One job of a sweep (or of a command with Hydra flags); see _job."""
    return _job(cfg)


def _job(cfg: DictConfig, plan=None) -> dict | None:
    """One job. Returns its summary (what summary.json holds), which sweepers read from
    Hydra's JobReturn; None if the job failed. `plan` is `cfg` already validated, if it was."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    library_warnings_to_log()  # into this job's rlrun.log, now open
    if multirun:
        try:
            lock_run_folder(run_dir)
        except FolderInUse as error:  # a survivor of an earlier attempt still trains here: leave its files alone
            log.error("job skipped: %s", error)
            return None
    # A joblib worker outlives a killed sweep unless it watches for it.
    parent_watch = ParentWatch() if multirun and HydraConfig.get().launcher.get("n_jobs") is not None else None
    try:
        return _train_job(cfg, plan, run_dir, multirun)
    finally:
        if multirun:
            release_run_folder(run_dir)
        if parent_watch is not None:
            parent_watch.stop()
            parent_watch.exit_if_orphaned()


def _train_job(cfg: DictConfig, plan: Plan | None, run_dir: Path, multirun: bool) -> dict | None:
    try:
        if plan is None:
            preflight_plan = _PREFLIGHT_PLANS.pop(tuple(HydraConfig.get().overrides.task), None)
            plan = (preflight_plan or validate(cfg)).in_folder(run_dir)
        if plan.run_config.threads is None and (threads := _threads_per_parallel_job()) is not None:
            plan = dataclasses.replace(plan, run_config=dataclasses.replace(plan.run_config, threads=threads))
        if multirun and plan.run_config.log.wandb.project is not None and plan.run_config.log.wandb.group is None:
            plan = _with_wandb_group(plan, str(HydraConfig.get().sweep.dir))
        log.info(
            "%s on %s, seed %d, %d steps, pid %d, %s torch threads → %s",
            plan.algo_name,
            plan.run_config.env.id,
            plan.run_config.seed,
            plan.run_config.total_steps,
            os.getpid(),
            plan.run_config.threads or "default",
            run_dir,
        )
        summary = execute(plan, run_dir)
    except Exception as error:
        one_line = isinstance(error, (ConfigError, RunError)) and os.environ.get("HYDRA_FULL_ERROR") != "1"
        if not multirun:
            if one_line:
                print(f"rlrun: error: {error}", file=sys.stderr)
                sys.exit(2 if isinstance(error, ConfigError) else 1)
            raise
        # One job's failure must not stop a sweep: record it, and let the sweep summary
        # (rlrun/commands/sweep.py) report it and exit non-zero once every job has run.
        log.error("job failed: %s: %s", type(error).__name__, error, exc_info=not one_line)
        record_failure(run_dir, error)
        return None
    if summary["status"] == "interrupted":
        # Stops a sweep too: Ctrl-C or a scheduler's SIGTERM means stop, not "next job".
        then = (
            "a run on env.backend=envpool cannot resume"
            if plan.run_config.env.backend == "envpool"
            else f"continue with: rlrun {shlex.quote(f'resume={run_dir}')}"
        )
        _say(f"rlrun: {summary['signal']} at step {summary['total_steps']}: saved {summary['checkpoint']}; {then}")
        sys.exit(128 + signal.Signals[summary["signal"]])
    evaluated = summary["eval_return_mean"] is not None
    log.info(
        "%s after %d steps: eval return %s, %s steps/s, %.0f s",
        summary["status"],
        summary["total_steps"],
        f"{summary['eval_return_mean']:.1f} ± {summary['eval_return_std']:.1f}" if evaluated else "none",
        f"{summary['sps']:.0f}" if summary.get("sps") else "?",
        summary["wall_time_s"],
    )
    return summary


def plan_group_job(cfg: DictConfig) -> Plan:
    """A job of a batched group (hydra/launcher=batched), planned in its folder but not run:
    the launcher trains the group's plans together with train_seed_group."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    preflight_plan = _PREFLIGHT_PLANS.get(tuple(HydraConfig.get().overrides.task))
    plan = (preflight_plan or validate(cfg)).in_folder(run_dir)
    if plan.run_config.log.wandb.project is not None and plan.run_config.log.wandb.group is None:
        plan = _with_wandb_group(plan, str(HydraConfig.get().sweep.dir))
    return plan


def train_seed_group(plans: list[Plan], run_dirs: list[Path]) -> list[dict | None]:
    """Train the jobs of a sweep that differ only in their seed as one batched group
    (docs/batched-seeds.md), each in its own run folder; returns each job's summary, None
    for a failed one (its summary.json says why), as _job does for one job."""
    held = []
    try:
        for run_dir in run_dirs:
            lock_run_folder(run_dir)
            held.append(run_dir)
        summaries = execute_group(plans, run_dirs)
    except FolderInUse as error:  # a survivor of an earlier attempt still trains there
        log.error("batched group skipped: %s", error)
        return [None] * len(plans)
    except Exception as error:
        one_line = isinstance(error, (ConfigError, RunError)) and os.environ.get("HYDRA_FULL_ERROR") != "1"
        log.error("batched group failed: %s: %s", type(error).__name__, error, exc_info=not one_line)
        for run_dir in run_dirs:
            if not _stopped_alone(run_dir):
                record_failure(run_dir, error)
        return [None] * len(plans)
    finally:
        for run_dir in held:
            release_run_folder(run_dir)
    interrupted = next((summary for summary in summaries if summary["status"] == "interrupted"), None)
    if interrupted is not None:
        folders = ", ".join(str(run_dir) for run_dir in run_dirs)
        _say(
            f"rlrun: {interrupted['signal']} at step {interrupted['total_steps']}: saved a checkpoint in each of {folders}; "
            "rerun the sweep with hydra.sweep.dir=<its folder> to continue each seed"
        )
        sys.exit(128 + signal.Signals[interrupted["signal"]])
    for summary in summaries:
        log.info(
            "seed %d %s after %d steps: eval return %s",
            summary["seed"],
            summary["status"],
            summary["total_steps"],
            "none" if summary["eval_return_mean"] is None else f"{summary['eval_return_mean']:.1f}",
        )
    # A seed that stopped alone is a failed job, as its separate run would be (its summary.json says why).
    return [None if summary["status"] in ("failed", "diverged") else summary for summary in summaries]


def _stopped_alone(run_dir: Path) -> bool:
    """Whether the seed of a batched group in `run_dir` had already stopped with its own
    reason (summary.json: its status, error and group) before the group failed."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    return summary.get("status") in ("failed", "diverged") and "error" in summary and "seed_group" in summary


def _say(line: str) -> None:
    """A line on stderr, unless stderr is gone (the terminal of a dropped SSH session)."""
    with contextlib.suppress(OSError):
        print(line, file=sys.stderr)


def check_overrides(overrides: list[str]) -> None:
    """Catch what Hydra would report with a parser trace or accept silently: an override it
    cannot parse, a list given to a config group, and `~key`, which removes a setting so that
    rlrun would fall back to a default the saved config does not show."""
    parser = OverridesParser.create()
    groups = _config_groups()
    for text in overrides:
        try:
            override = parser.parse_overrides([text])[0]
        except OverrideParseException:
            raise ConfigError(
                f"cannot parse the override {text!r}: keys are dotted ASCII names such as algo.lr, and a value with "
                "spaces or special characters goes in quotes (key='a value')"
            ) from None
        key = override.key_or_group
        if override.is_delete() and key not in groups and not key.startswith("hydra"):
            raise ConfigError(f"{text}: removing a setting is not supported; give it a value instead ({key}=...)")
        if key in groups and not override.is_sweep_override() and not isinstance(override.value(), (str, type(None))):
            raise ConfigError(
                f"{text}: the config group {key} takes one name ({key}=<name>); for several, run a sweep: "
                f"rlrun -m {key}=<name>,<name>"
            )


def _config_groups() -> set[str]:
    """The config groups (folders) of rlrun's configs: algo, env, experiment, tuned, ..."""
    root = importlib.resources.files(CONFIG_MODULE)
    return {entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith(("_", "."))}


def _with_wandb_group(plan, group: str):
    """`plan` with its W&B group set: a sweep's jobs share their sweep folder's path (W&B keeps
    128 characters of a group)."""
    settings = plan.run_config
    wandb = dataclasses.replace(settings.log.wandb, group=group[-128:])
    log_settings = dataclasses.replace(settings.log, wandb=wandb)
    return dataclasses.replace(plan, run_config=dataclasses.replace(settings, log=log_settings))


def expand_resume(args: list[str]) -> list[str]:
    """`resume=<run folder>` → that run's own overrides, then the command line's (which win),
    with Hydra writing into the folder again and keeping its original .hydra/ config."""
    resumes = [a for a in args if a.startswith("resume=")]
    if not resumes:
        return args
    folder_text = _unquoted(resumes[-1].split("=", 1)[1])
    folder = Path(folder_text)
    if any(a in MULTIRUN_FLAGS for a in args):
        raise ConfigError("resume= continues one run; to continue a sweep, rerun its command with hydra.sweep.dir=<its folder>")
    if not folder.is_dir():
        raise ConfigError(f"resume={folder_text}: no such folder; give a run folder such as outputs/<date>/<time>")
    saved_file = folder / ".hydra" / "overrides.yaml"
    if not saved_file.is_file():
        raise ConfigError(f"resume={folder_text} is not an rlrun run folder (no .hydra/overrides.yaml)")
    if latest(folder) is None:
        raise ConfigError(
            f"resume={folder_text} has no checkpoint to continue from (checkpoints/step_*.pt is written every "
            "checkpoint.every steps, at the end, and on Ctrl-C or SIGTERM)"
        )
    given = [a for a in args if not a.startswith("resume=")]
    given_keys = {override_key(a) for a in given}
    try:
        saved_overrides = read_stored_yaml(saved_file) or []
    except ConfigError as error:
        raise ConfigError(f"resume={folder_text}: {error}") from None
    if not isinstance(saved_overrides, list) or not all(isinstance(o, str) for o in saved_overrides):
        raise ConfigError(
            f"resume={folder_text}: {saved_file} is damaged (not a list of overrides); it lists the run's overrides"
        )
    saved = [o for o in saved_overrides if override_key(o) not in given_keys | {"hydra.run.dir"}]
    for override in saved:
        _check_stored_override(override, f"resume={folder_text}: {saved_file}")
    # A run composed from config folders of the user's (an Optuna study's best config) needs
    # them again; a searchpath on the command line replaces the stored one.
    folders = [] if "hydra.searchpath" in given_keys else _stored_searchpath(folder, f"resume={folder_text}")
    searchpath = [f"hydra.searchpath=[{','.join(hydra_quoted(f'file://{f}', 'resume=') for f in folders)}]"] if folders else []
    expanded = [*searchpath, *saved, *given, f"hydra.run.dir={hydra_quoted(str(folder), 'resume=')}", "hydra.output_subdir=null"]
    if folders:
        _check_searchpath_configs(expanded, folders, given_keys, f"resume={folder_text}")
    return expanded


def _stored_searchpath(folder: Path, what: str) -> list[Path]:
    """The config folders a run folder's run searched besides rlrun's own (its
    `hydra.searchpath`, among the Hydra overrides in .hydra/hydra.yaml), as absolute paths:
    a relative one is relative to the folder the run started in."""
    hydra_file = folder / ".hydra" / "hydra.yaml"
    if not hydra_file.is_file():  # a folder made by hand with overrides.yaml alone: nothing to carry
        return []
    damaged = f"{what}: {hydra_file} is damaged"
    stored = read_stored_yaml(hydra_file)
    try:
        hydra_overrides = stored["hydra"]["overrides"]["hydra"]
        started_in = Path(stored["hydra"]["runtime"]["cwd"])
    except (KeyError, TypeError) as error:
        raise ConfigError(f"{damaged} ({type(error).__name__}); it holds the run's Hydra settings") from None
    if not isinstance(hydra_overrides, list) or not all(isinstance(o, str) for o in hydra_overrides):
        raise ConfigError(f"{damaged} (hydra.overrides.hydra is not a list of overrides)")
    given = [o for o in hydra_overrides if override_key(o) == "hydra.searchpath"]
    if not given:
        return []
    try:
        entries = OverridesParser.create().parse_overrides(given[-1:])[0].value()
    except OverrideParseException:
        raise ConfigError(f"{damaged} (cannot parse {given[-1][:80]})") from None
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise ConfigError(f"{damaged} (hydra.searchpath is not a list of folders)")
    folders = []
    for entry in entries:
        scheme, separator, path = entry.partition("://")
        if separator and scheme != "file":  # pkg://: an installed package's configs, found as at the start
            raise ConfigError(
                f"{what}: the run searched configs in {entry}; resume= carries file:// folders only: "
                f"give hydra.searchpath=[...] with resume= on the command line"
            )
        found = started_in / (path if separator else entry)
        if not found.is_dir():
            raise ConfigError(
                f"{what}: the run composed its config with configs from {entry}, and {found} is no folder now; "
                "give the folder that holds them: rlrun 'hydra.searchpath=[file://<folder>]' "
                f"{shlex.quote(f'resume={folder}')}"
            )
        folders.append(found.resolve())
    return folders


def _check_searchpath_configs(overrides: list[str], folders: list[Path], given_keys: set[str], what: str) -> None:
    """Config files that a stored searchpath brings in are as untrusted as the stored
    overrides: they may set values, and env.wrappers as check_stored_wrappers allows, but not
    Hydra's own settings (callbacks, logging, launcher) nor any other `_target_`."""
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        try:
            defaults = GlobalHydra.instance().hydra.config_loader.compute_defaults_list("config", overrides, RunMode.RUN)
        except HydraException:
            return  # the composition itself fails and reports it; nothing gets built
    for default in defaults.defaults:
        if default.config_path is None:
            continue
        name = default.config_path if default.config_path.endswith((".yaml", ".yml")) else f"{default.config_path}.yaml"
        for config_file in (folder / name for folder in folders):
            if config_file.is_file():
                _check_searchpath_config(config_file, default.package or "", given_keys, what)


def _check_searchpath_config(config_file: Path, package: str, given_keys: set[str], what: str) -> None:
    source = f"{what}: {config_file}"
    content = read_stored_yaml(config_file) or {}
    if not isinstance(content, dict):
        raise ConfigError(f"{source} is not a config (a mapping of settings)")
    content = {key: value for key, value in content.items() if key != "defaults"}
    for part in reversed([p for p in package.split(".") if p]):
        content = {part: content}
    if "hydra" in content:
        raise ConfigError(
            f"{source} sets Hydra's own settings, which may run code; refused (give it on the command line if you trust it)"
        )
    env = content.get("env") if isinstance(content.get("env"), dict) else {}
    if "wrappers" in env and "env.wrappers" not in given_keys:
        check_stored_wrappers(env["wrappers"], source)
    rest = {**content, "env": {key: value for key, value in env.items() if key != "wrappers"}}
    found = "_target_" if "_target_" in rest else nested_target(rest)
    if found is not None:
        raise ConfigError(f"{source} names a _target_ ({found}); a stored config may not make rlrun call code")


def _unquoted(text: str) -> str:
    """A value with the quotes a user put around it for Hydra ("resume='runs/a b'") taken off."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def hydra_quoted(text: str, what: str) -> str:
    """`text` as one quoted Hydra override value, so that the commas, '=', spaces and brackets
    of a folder name (a sweep job's, say) stay part of it instead of making a sweep or a list."""
    for quote in ("'", '"'):
        if quote not in text:
            return f"{quote}{text}{quote}"
    raise ConfigError(f"{what}{text}: a folder name with both ' and \" cannot be given to Hydra; rename the folder")


def _check_stored_override(override: str, source: str) -> None:
    """A run folder's stored override may set values, but not make rlrun call code: env.wrappers
    only as check_stored_wrappers allows, no other _target_, no Hydra callbacks. Giving the
    same key on the command line replaces the stored one."""
    key = override_key(override)
    if key.startswith(("hydra.callbacks", "hydra/callbacks")):
        raise ConfigError(f"{source} sets {key}, which would run code; refused (give it on the command line if you trust it)")
    if "_target_" not in override:
        return
    if key != "env.wrappers":
        raise ConfigError(f"{source}: {override[:80]} names a _target_; a stored override may not make rlrun call code")
    try:
        value = OverridesParser.create().parse_overrides([override])[0].value()
    except OverrideParseException:
        raise ConfigError(f"{source}: cannot parse {override[:80]}; the file is damaged") from None
    check_stored_wrappers(OmegaConf.to_container(OmegaConf.create({"w": value}))["w"], source)


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _threads_per_parallel_job() -> int | None:
    """Cores ÷ parallel jobs when a launcher runs jobs side by side on this machine (joblib's
    n_jobs), so that they do not oversubscribe the CPU; None otherwise."""
    n_jobs = HydraConfig.get().launcher.get("n_jobs")
    if n_jobs is None:
        return None
    cores = os.cpu_count() or 1
    parallel = cores if n_jobs < 0 else min(n_jobs, cores)  # joblib: -1 means one job per core
    return max(1, cores // parallel)


def preflight(args: list[str]) -> list[str]:
    """Compose and validate every job `args` describe; one error line per bad job.

    Skipped when Hydra's own flags (--help, --cfg, -cn, ...) are present: those print or
    change the config source, and Hydra reports their problems itself.
    """
    flags = [a for a in args if a.startswith("-")]
    if any(flag not in MULTIRUN_FLAGS for flag in flags):
        return []
    overrides = [a for a in args if not a.startswith("-")]
    try:
        multirun = bool(flags) or "hydra.mode=MULTIRUN" in overrides
        jobs = _expand(overrides) if multirun else [overrides]
    except HydraException as error:
        return [describe_error(error, overrides)]

    errors, warnings = [], []
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        for job in jobs:
            prefix = f"job {' '.join(job)}: " if len(jobs) > 1 else ""
            try:
                plan = _check_job(compose("config", overrides=job, return_hydra_config=True), multirun)
                _PREFLIGHT_PLANS[tuple(job)] = plan
                warnings += [prefix + warning for warning in plan.warnings]
            except (ConfigError, HydraException) as error:
                errors.append(prefix + describe_error(error, job))
    if not errors:  # warnings matter once the command can run
        for warning in dict.fromkeys(warnings):
            _say(f"rlrun: warning: {warning}")
    if len(errors) > _MAX_REPORTED_JOBS:
        errors = errors[:_MAX_REPORTED_JOBS] + [f"... and {len(errors) - _MAX_REPORTED_JOBS} more bad jobs"]
    return errors


def _check_job(cfg: DictConfig, multirun: bool):
    """Validate one composed job (`cfg` with its hydra node, left as it is) and the folder it
    will write to; returns its Plan (for a single run, in its folder) or raises ConfigError."""
    job_cfg = cfg.copy()
    with open_dict(job_cfg):
        del job_cfg["hydra"]
    plan = validate(job_cfg)
    # Read from `cfg`: a folder may interpolate other hydra keys (${hydra.job.override_dirname}).
    if multirun:
        check_writable("hydra.sweep.dir", Path(cfg.hydra.sweep.dir))
        if plan.run_config.init is not None:
            plan.check_init()  # each job checks it again in its folder, where it may resume instead
        return plan
    # The run folder must be writable, and a checkpoint already in it (a rerun or resume=)
    # one this run can continue: checked before Hydra writes anything there.
    check_writable("hydra.run.dir", Path(cfg.hydra.run.dir))
    return plan.in_folder(Path(cfg.hydra.run.dir))


def _expand(overrides: list[str]) -> list[list[str]]:
    """The jobs of a basic-sweeper grid (`a=1,2 b=range(3)`), each as its override list."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # the grid as Hydra's own sweeper expands it

    parsed = OverridesParser.create().parse_overrides(overrides)
    if any(o.is_hydra_override() and o.key_or_group.startswith("hydra/sweeper") for o in parsed):
        return []  # another sweeper (e.g. Optuna) chooses its own jobs
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def describe_error(error: Exception, overrides: list[str]) -> str:
    """One line for a composition or validation error, naming the bad value."""
    if isinstance(error, ConfigError):
        return str(error)
    missing = error.missing_cfg_file if isinstance(error, MissingConfigException) else None
    if missing and missing.startswith("hydra/launcher/submitit_"):  # the plugin's own configs, absent without it
        return f"hydra/launcher={missing.rpartition('/')[2]} needs the slurm extra (hydra-submitit-launcher): {SLURM_INSTALL}"
    if isinstance(error, MissingConfigException) and error.options is not None and error.missing_cfg_file:
        group, _, value = error.missing_cfg_file.rpartition("/")
        extra = "; or keep env= and set env.id=<any Gymnasium id>" if group == "env" else ""
        return f"unknown {group} {value!r}; choose one of: {', '.join(sorted(error.options))}{extra}"
    cause = error.__cause__
    if isinstance(cause, OmegaConfBaseException) and cause.full_key:
        siblings = list(cause.parent_node.keys()) if cause.parent_node is not None else []
        close = difflib.get_close_matches(str(cause.key), [str(k) for k in siblings], n=1)
        parent = cause.full_key.rpartition(".")[0]
        hint = (
            f"; did you mean '{parent + '.' if parent else ''}{close[0]}'?"
            if close
            else (f"; valid keys here: {', '.join(map(str, siblings))}" if siblings else "")
        )
        return f"unknown config key '{cause.full_key}'{hint}"
    return str(error).strip().splitlines()[0]
