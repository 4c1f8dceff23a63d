"""log.wandb.project=<name>: runs mirrored to Weights & Biases, checked in W&B's offline mode
(no network) by reading the offline run files back."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import yaml
from conftest import run_rlrun

pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2  # noqa: E402

SMOKE = ("experiment=smoke", "algo=sac", "env=Pendulum", "log.wandb.project=rlrun-test", "log.wandb.mode=offline")


def read_records(path: Path) -> list:
    """The protobuf records of an offline run's .wandb file: a 7-byte header, then 32 KiB blocks
    of records, each a 7-byte header (checksum, length, type: 1 whole, 2 first, 3 middle, 4
    last part) and its bytes (LevelDB's log format, which W&B's transaction log follows)."""
    data, offset, pending, records = path.read_bytes(), 7, b"", []
    assert data[:4] == b":W&B"
    while offset + 7 <= len(data):
        if (room := 32768 - offset % 32768) < 7:
            offset += room  # the block's tail is padding
            continue
        _, length, kind = struct.unpack("<IHB", data[offset : offset + 7])
        pending += data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def offline_runs(wandb_dir: Path) -> list[dict]:
    """Each offline run under wandb_dir: its id, group, config and logged rows."""
    runs = []
    for path in sorted(wandb_dir.glob("wandb/offline-run-*/run-*.wandb")):
        run = {"id": None, "group": None, "config": {}, "rows": []}
        for record in read_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run.update(id=record.run.run_id, group=record.run.run_group)
                run["config"].update({item.key: json.loads(item.value_json) for item in record.run.config.update})
            elif kind == "history":
                # W&B stores a key with slashes (eval/return_mean) as its parts, in nested_key.
                run["rows"].append(
                    {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
                )
        runs.append(run)
    return runs


def metric_rows(run_dir: Path) -> set[tuple[int, str, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {(row["step"], key, value) for row in rows for key, value in row.items() if key != "step"}


def logged(run: dict) -> set[tuple[int, str, float]]:
    return {
        (row["global_step"], key, value)
        for row in run["rows"]
        for key, value in row.items()
        if key != "global_step" and not key.startswith("_")
    }


@pytest.mark.slow
def test_scalars_and_config_go_to_wandb_and_a_resumed_run_continues_it(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    run_dir = tmp_path / "run"
    first = run_rlrun(*SMOKE, "total_steps=300", f"hydra.run.dir={run_dir}")
    assert first.returncode == 0, first.stderr
    before = metric_rows(run_dir)
    (started,) = offline_runs(tmp_path)
    assert started["id"] == (run_dir / "wandb-run-id").read_text().strip()
    assert logged(started) == before  # every scalar, at its environment step
    composed = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert started["config"]["algo.lr"] == composed["algo"]["lr"] and started["config"]["total_steps"] == 300
    assert started["config"]["env.id"] == "Pendulum-v1"
    assert started["group"] == ""  # a single run has no group
    assert list(run_dir.glob("events.out.tfevents.*"))  # TensorBoard as always

    resumed = run_rlrun(f"resume={run_dir}", "total_steps=600")
    assert resumed.returncode == 0, resumed.stderr
    runs = offline_runs(tmp_path)
    assert len(runs) == 2 and {run["id"] for run in runs} == {started["id"]}  # the same W&B run, continued
    assert logged(runs[0]) | logged(runs[1]) == metric_rows(run_dir)
    assert max(step for step, _, _ in logged(runs[1])) == 600


@pytest.mark.slow
def test_a_sweeps_jobs_share_a_group(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    sweep_dir = tmp_path / "sweep"
    result = run_rlrun("-m", *SMOKE, "total_steps=300", "seed=0,1", f"hydra.sweep.dir={sweep_dir}")
    assert result.returncode == 0, result.stderr
    runs = offline_runs(tmp_path)
    assert len(runs) == 2 and len({run["id"] for run in runs}) == 2
    assert [run["group"] for run in runs] == [str(sweep_dir)] * 2


def test_without_the_extra_the_run_stops_before_writing(tmp_path):
    hide_wandb = (
        "import importlib.util\n_find = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a: None if name == 'wandb' else _find(name, *a)"
    )
    result = run_rlrun(*SMOKE, f"hydra.run.dir={tmp_path / 'run'}", patch=hide_wandb)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "rlrun: error: log.wandb.project=rlrun-test needs the wandb extra: python -m pip install -c constraints.txt -e '.[wandb]'"
    )
    assert not (tmp_path / "run").exists()


def test_a_recorded_video_goes_to_wandb(tmp_path, monkeypatch):
    pytest.importorskip("moviepy")  # W&B encodes frames with it; the video extra
    import numpy as np
    import wandb

    from rlrun.config import WandbConfig
    from rlrun.core.tracking import WandbMirror

    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    mirror = WandbMirror(WandbConfig(project="rlrun-test", mode="offline"), tmp_path, {"seed": 0})
    mirror.video(100, "eval/video", np.zeros((12, 32, 48, 3), dtype=np.uint8), fps=30)
    mirror.close()
    wandb.teardown()  # the W&B service writes the run's files out when it stops, as at a run's exit
    assert len(list(tmp_path.glob("wandb/offline-run-*/files/media/videos/eval/video_*.mp4"))) == 1
    (run,) = offline_runs(tmp_path)
    assert any(row.get("global_step") == 100 and row.get("eval/video/_type") == "video-file" for row in run["rows"]), run


def test_a_wandb_run_that_cannot_start_stops_the_run_with_one_line(tmp_path):
    no_login = (
        "import wandb, wandb.errors\n"
        "def refuse(**kwargs):\n    raise wandb.errors.UsageError('api_key not configured (no-tty)')\n"
        "wandb.init = refuse"
    )
    run_dir = tmp_path / "run"
    result = run_rlrun(*SMOKE[:-1], f"hydra.run.dir={run_dir}", patch=no_login)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "rlrun: error: cannot start the W&B run for log.wandb.project=rlrun-test: api_key not configured (no-tty); "
        "set log.wandb.mode=offline to keep it in the run folder for a later `wandb sync`"
    )
