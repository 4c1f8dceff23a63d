"""Multirun bookkeeping: job folder names, one row per job in `sweep.csv`, a table on the
console at the end, the report across seeds (rlrun/report), and a non-zero exit when any job
failed."""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from rlrun.commands.report import sweep_report
from rlrun.core.folders import NAME_MAX

# configs/config.yaml: hydra.sweep.subdir: ${rlrun_job_dirname:${hydra.job.num},${hydra.job.override_dirname}}
JOB_DIRNAME_RESOLVER = "rlrun_job_dirname"
READABLE_PREFIX_BYTES = 100


def job_dirname(num: int, override_dirname: str) -> str:
    """A sweep job's folder name: `<num>-<overrides>` as Hydra writes it, or, where that is
    longer than a file name may be, `<num>-<the overrides' first ~100 bytes>-<8 hex digits>`
    with a hash of all the overrides. A pure function of the job, so a rerun of the sweep finds
    its folders; the full overrides are in the folder's .hydra/overrides.yaml."""
    name = f"{num}-{override_dirname}"
    if len(name.encode()) <= NAME_MAX:
        return name
    digest = hashlib.sha256(override_dirname.encode()).hexdigest()[:8]
    readable = override_dirname.encode()[:READABLE_PREFIX_BYTES].decode("utf-8", errors="ignore")  # whole characters
    return f"{num}-{readable}-{digest}"


# Registered on import: rlrun.cli imports this module, and every launcher's worker process
# unpickles the SweepSummary callback (hydra.callbacks) before it names the job's folder.
if not OmegaConf.has_resolver(JOB_DIRNAME_RESOLVER):
    OmegaConf.register_new_resolver(JOB_DIRNAME_RESOLVER, job_dirname)

COLUMNS = ["job", "overrides", "status", "eval_return_mean", "eval_return_std", "total_steps", "sps", "wall_time_s", "error"]


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """A row per job folder under `sweep_dir`, in job order, from its summary.json."""
    rows = []
    for overrides_file in sweep_dir.glob("*/.hydra/overrides.yaml"):
        job_dir = overrides_file.parent.parent
        overrides = yaml.safe_load(overrides_file.read_text()) or []
        summary_file = job_dir / "summary.json"
        summary = json.loads(summary_file.read_text()) if summary_file.exists() else {"status": "no summary.json"}
        # An Optuna trial's `trial={storage: ...}` override is bookkeeping, not a setting.
        shown = [o for o in overrides if not o.startswith("trial=")]
        row = {"job": job_dir.name, "overrides": " ".join(shown)}
        row.update({key: summary.get(key) for key in COLUMNS[2:]})
        rows.append(row)
    return sorted(rows, key=lambda row: _job_number(row["job"]))


def _job_number(name: str) -> int:
    prefix = name.split("-", 1)[0]
    return int(prefix) if prefix.isdigit() else sys.maxsize


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def format_table(rows: list[dict[str, Any]]) -> str:
    def cell(value: Any) -> str:
        return f"{value:.1f}" if isinstance(value, float) else "" if value is None else str(value)

    shown = ["overrides", "status", "eval_return_mean", "total_steps", "sps", "wall_time_s"]
    cells = [shown] + [[cell(row[key]) for key in shown] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(shown))]
    return "\n".join("  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip() for line in cells)


class SweepSummary(Callback):
    """Hydra callback (configs/config.yaml, hydra.callbacks) run once after all jobs."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = collect(sweep_dir)
        write_csv(rows, sweep_dir / "sweep.csv")
        print(format_table(rows))
        print(f"sweep summary: {sweep_dir / 'sweep.csv'}")
        sweep_report(sweep_dir)  # statistics across seeds, in <sweep>/report/; never fails the sweep
        # A pruned Optuna trial ended as its study asked: not a failure.
        failed = [row for row in rows if row["status"] not in ("completed", "pruned")]
        if failed:
            for row in failed:
                print(f"rlrun: job {row['job']} {row['status']}: {row['error'] or 'see its rlrun.log'}", file=sys.stderr)
            raise SystemExit(1)
