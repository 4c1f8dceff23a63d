"""Run folders read back for a report: settings, seed, environment and evaluation curve."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlrun.config import ConfigError
from rlrun.core.folders import folder_in_use
from rlrun.core.saved_run import read_stored_yaml

EVAL_METRIC = "eval/return_mean"
# Keys that never tell runs apart for a report: the seed is what a group aggregates over, the
# environment is the report's other axis, and the rest only places, shows, logs or saves a run
# without changing what it learns. Every other setting (env.kwargs.* included) does.
NOT_A_SETTING = ("seed", "env", "env.id", "trial", "progress", "hydra", "resume", "device", "threads", "compile")
NOT_A_SETTING_PREFIXES = ("hydra.", "hydra/", "trial.", "log.", "checkpoint.", "video.")


@dataclass(frozen=True)
class RunRecord:
    folder: Path
    env_id: str
    seed: int
    settings: dict[str, Any]  # the resolved config, flattened to dotted keys, and the Hydra group choices (algo, env, ...)
    overridden: tuple[str, ...]  # the keys the run's command line set
    steps: np.ndarray  # environment steps of its evaluations, increasing
    returns: np.ndarray  # mean evaluation return at each
    status: str  # summary.json's status; without one: running, killed or unknown (run_status)

    @property
    def name(self) -> str:
        return self.folder.name


def find_run_folders(folder: Path) -> list[Path]:
    """`folder` itself if it is a run folder, else every run folder below it (a sweep, or a
    folder of sweeps), in job-number order within each sweep."""
    if (folder / ".hydra" / "config.yaml").is_file():
        return [folder]

    def order(path: Path) -> tuple:
        return tuple(
            (int(m.group(1)), part) if (m := re.match(r"(\d+)", part)) else (1 << 62, part)
            for part in path.relative_to(folder).parts
        )

    return sorted((config.parent.parent for config in folder.rglob(".hydra/config.yaml")), key=order)


def flatten(mapping: Any, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return flat


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def load_run(folder: Path) -> RunRecord:
    """The run in `folder`; ConfigError naming the file if one of its files is damaged."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    hydra_dir = folder / ".hydra"
    stored = read_stored_yaml(hydra_dir / "config.yaml")
    if not isinstance(stored, dict):
        raise ConfigError(f"{hydra_dir / 'config.yaml'} is damaged (not a mapping of settings)")
    config = OmegaConf.create(stored)
    try:
        resolved = OmegaConf.to_container(config, resolve=True)
    except OmegaConfBaseException:
        resolved = stored
    settings = flatten(resolved)
    hydra_file = hydra_dir / "hydra.yaml"
    if hydra_file.is_file():
        choices = _mapping(_mapping(_mapping(read_stored_yaml(hydra_file)).get("hydra")).get("runtime")).get("choices")
        settings.update(
            {
                group: choice
                for group, choice in _mapping(choices).items()
                if not group.startswith("hydra/") and choice not in (None, "None") and "None-" not in str(choice)
            }
        )
    overrides_file = hydra_dir / "overrides.yaml"
    overrides = (read_stored_yaml(overrides_file) or []) if overrides_file.is_file() else []
    if not isinstance(overrides, list):
        raise ConfigError(f"{overrides_file} is damaged (not a list of overrides)")
    try:
        seed = int(settings.get("seed", 0))
    except (TypeError, ValueError):
        raise ConfigError(f"{hydra_dir / 'config.yaml'} is damaged (seed={settings.get('seed')!r})") from None
    status = run_status(folder)
    steps, returns = _evaluations(folder / "metrics.jsonl")
    return RunRecord(
        folder=folder,
        env_id=str(settings.get("env.id", "?")),
        seed=seed,
        settings=settings,
        overridden=tuple(_override_key(str(o)) for o in overrides),
        steps=steps,
        returns=returns,
        status=status,
    )


def _mapping(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def is_setting(key: str) -> bool:
    return key not in NOT_A_SETTING and not key.startswith(NOT_A_SETTING_PREFIXES)


def run_status(folder: Path) -> str:
    """summary.json's status; a run without one is running while a process holds its folder's
    lock, killed when none does (SIGKILL, out of memory: it ended without writing a summary),
    and unknown without a lock file."""
    summary_file = folder / "summary.json"
    if summary_file.is_file():
        try:
            status = json.loads(summary_file.read_text()).get("status", "unknown")
        except (OSError, json.JSONDecodeError, AttributeError):
            return "unknown"
        return str(status)
    return {True: "running", False: "killed", None: "unknown"}[folder_in_use(folder)]


def _evaluations(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(steps, mean returns) of the evaluations in metrics.jsonl; a step logged twice keeps its
    last value, and a last line cut short (a run still writing, or killed) is skipped. Any
    other line that is no row of numbers is damage: ConfigError naming the line."""
    by_step: dict[int, float] = {}
    lines = path.read_bytes().split(b"\n") if path.is_file() else []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"))
            if EVAL_METRIC in row:
                by_step[int(row["step"])] = float(row[EVAL_METRIC])
        except (ValueError, TypeError, KeyError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            if number == len(lines):  # no newline after it yet: cut short
                continue
            reason = "not UTF-8 text" if isinstance(error, UnicodeDecodeError) else "not a row of metrics"
            raise ConfigError(f"{path} is damaged (line {number} is {reason})") from None
    steps = sorted(by_step)
    return np.array(steps, dtype=np.int64), np.array([by_step[s] for s in steps], dtype=float)


def load_runs(folder_texts: list[str]) -> tuple[list[RunRecord], list[RunRecord], list[str]]:
    """The runs under the given folders: those with at least one evaluation, those without,
    and a line for each run that cannot be read (a damaged file), which the report leaves out."""
    folders = []
    for text in folder_texts:
        folder = Path(text)
        if not folder.is_dir():
            raise ConfigError(f"report={text}: no such folder; give run or sweep folders, e.g. report=multirun/<date>/<time>")
        found = find_run_folders(folder)
        if not found:
            raise ConfigError(f"report={text} holds no runs (no .hydra/config.yaml in it or below it)")
        folders.extend(f for f in found if f not in folders)
    runs, unreadable = [], []
    for folder in folders:
        try:
            runs.append(load_run(folder))
        except (ConfigError, OSError) as error:
            unreadable.append(str(error) if isinstance(error, ConfigError) else f"{folder}: {error.strerror}")
    evaluated = [run for run in runs if len(run.steps)]
    if not evaluated:
        where = " ".join(folder_texts)
        if unreadable:
            more = f"; {len(unreadable) - 1} more run(s) cannot be read either" if len(unreadable) > 1 else ""
            raise ConfigError(f"report={where}: {unreadable[0]}{more}; no other run has evaluated")
        raise ConfigError(
            f"report={where}: none of its {len(runs)} run(s) has evaluated yet (no {EVAL_METRIC} in metrics.jsonl; "
            "runs evaluate every eval.every steps and at the end)"
        )
    return evaluated, [run for run in runs if not len(run.steps)], unreadable
