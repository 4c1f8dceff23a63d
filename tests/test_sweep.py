"""Multiruns: one folder per job named after its overrides (bounded in length), sweep.csv,
the end-of-sweep table."""

import csv
import json
import os
import re

import pytest
import yaml
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

from rlrun.commands.sweep import _job_number, job_dirname
from rlrun.core.folders import NAME_MAX


@pytest.mark.slow
def test_grid_sweep_writes_a_folder_per_job_and_a_summary(rlrun, tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = rlrun(
        "-m",
        "experiment=smoke",
        "algo=sac,td3",
        "env=Pendulum",
        "seed=0,1",
        "total_steps=250",
        "algo.learning_starts=100",
        "eval.every=250",
        "checkpoint.every=250",
        "threads=1",
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert result.returncode == 0, result.stderr

    # Hydra's override_dirname: the job's overrides as sorted "key=value" strings.
    rest = "checkpoint.every=250,env=Pendulum,eval.every=250,experiment=smoke"
    expected = [
        f"{i}-algo.learning_starts=100,algo={a},{rest},seed={s},threads=1,total_steps=250"
        for i, (a, s) in enumerate([("sac", 0), ("sac", 1), ("td3", 0), ("td3", 1)])
    ]
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and p.name != "report") == expected
    with open(sweep_dir / "sweep.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["status"] for row in rows] == ["completed"] * 4
    assert [("algo=sac" in r["overrides"], "seed=1" in r["overrides"]) for r in rows] == [
        (True, False),
        (True, True),
        (False, False),
        (False, True),
    ]
    assert all(float(row["eval_return_mean"]) < 0 and row["total_steps"] == "250" for row in rows)
    assert "eval_return_mean" in result.stdout and result.stdout.count("completed  ") == 4  # table cells
    # The report across seeds follows the table (rlrun/report): a group per algorithm, 2 seeds each.
    with open(sweep_dir / "report" / "report.csv") as file:
        assert [(row["group"], row["seeds"]) for row in csv.DictReader(file)] == [("algo=sac", "2"), ("algo=td3", "2")]
    assert f"report: {sweep_dir / 'report' / 'report.md'}" in result.stdout

    # TensorBoard names each run by its folder, which spells out the job's overrides.
    multiplexer = EventMultiplexer().AddRunsFromDirectory(str(sweep_dir)).Reload()
    runs = sorted(multiplexer.Runs())
    assert len(runs) == 4
    assert all("algo=" in run and "seed=" in run for run in runs)


@pytest.mark.slow
def test_a_crashing_job_does_not_stop_the_sweep(rlrun, tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = rlrun(
        "-m",
        "experiment=smoke",
        "algo=sac",
        "env=Pendulum",
        "env.id=tests.crashing_env:CrashingPendulum-v0,Pendulum-v1",
        "total_steps=250",
        "algo.learning_starts=100",
        "eval.every=250",
        "checkpoint.every=250",
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert result.returncode == 1
    assert "simulated crash at step 150" in result.stderr
    with open(sweep_dir / "sweep.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["status"] for row in rows] == ["failed", "completed"]  # the second job still ran
    assert "CrashingPendulum-v0 raised RuntimeError in step(): simulated crash at step 150" in rows[0]["error"]
    assert rows[1]["total_steps"] == "250" and float(rows[1]["eval_return_mean"]) < 0


@pytest.mark.slow
def test_rerunning_a_sweep_skips_finished_jobs_and_resumes_the_failed_one(rlrun, tmp_path, monkeypatch):
    sweep_dir = tmp_path / "sweep"
    command = [
        "-m",
        "experiment=smoke",
        "algo=sac",
        "env=Pendulum",
        "env.id=tests.crashing_env:CrashingPendulum-v0,Pendulum-v1",
        "total_steps=300",
        "algo.learning_starts=100",
        "eval.every=300",
        "checkpoint.every=100",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    assert rlrun(*command).returncode == 1  # the first job crashes at step 150, after its checkpoint at 100
    crashed, finished = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name != "report")
    finished_checkpoints = {p.name: p.stat().st_mtime_ns for p in (finished / "checkpoints").iterdir()}

    monkeypatch.setenv("RLRUN_TEST_CRASH_AT", "0")  # the fault is gone
    again = rlrun(*command)
    assert again.returncode == 0, again.stderr
    with open(sweep_dir / "sweep.csv") as file:
        assert [row["status"] for row in csv.DictReader(file)] == ["completed", "completed"]
    assert "resumed from step 100" in (crashed / "rlrun.log").read_text()
    assert "nothing to do" in (finished / "rlrun.log").read_text()
    assert {p.name: p.stat().st_mtime_ns for p in (finished / "checkpoints").iterdir()} == finished_checkpoints


# Two short SAC Pendulum jobs, two at a time in joblib worker processes.
JOBLIB_SMOKE_GRID = [
    "-m",
    "hydra/launcher=joblib",
    "hydra.launcher.n_jobs=2",
    "experiment=smoke",
    "algo=sac",
    "env=Pendulum",
    "seed=0,1",
    "total_steps=250",
    "algo.learning_starts=100",
    "eval.every=250",
    "checkpoint.every=250",
]


@pytest.mark.slow
def test_joblib_runs_jobs_in_separate_processes_with_a_share_of_the_cores(rlrun, tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = rlrun(*JOBLIB_SMOKE_GRID, f"hydra.sweep.dir={sweep_dir}")
    assert result.returncode == 0, result.stderr
    job_dirs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name != "report")
    pids = {re.search(r"pid (\d+)", (job / "rlrun.log").read_text()).group(1) for job in job_dirs}
    assert len(job_dirs) == 2 and len(pids) == 2 and str(os.getpid()) not in pids
    expected_threads = max(1, (os.cpu_count() or 1) // 2)
    for job in job_dirs:
        assert json.loads((job / "summary.json").read_text())["torch_threads"] == expected_threads


def test_a_job_folder_is_named_after_its_overrides_while_they_fit_a_file_name():
    assert job_dirname(3, "algo=sac,seed=1") == "3-algo=sac,seed=1"
    assert job_dirname(0, "") == "0-"  # a job without overrides, as Hydra names it
    fits = "k=" + "v" * (NAME_MAX - len("12-k="))
    assert job_dirname(12, fits) == f"12-{fits}" and len(job_dirname(12, fits).encode()) == NAME_MAX
    assert re.fullmatch(r"12-k=v{98}-[0-9a-f]{8}", job_dirname(12, fits + "v"))  # one byte more


def test_a_long_job_folder_name_is_a_readable_prefix_and_a_hash_of_all_overrides():
    overrides = ",".join(f"algo.key{i}=välue{i}" for i in range(40))
    name = job_dirname(7, overrides)
    assert len(name.encode()) <= 120
    prefix, digest = re.fullmatch(r"7-(.+)-([0-9a-f]{8})", name).groups()
    assert overrides.startswith(prefix) and 90 <= len(prefix.encode()) <= 100
    assert job_dirname(7, overrides) == name  # a rerun of the sweep finds the folder again
    changed_at_the_end = job_dirname(7, overrides[:-1] + "X")
    assert changed_at_the_end != name and changed_at_the_end.rsplit("-", 1)[0] == name.rsplit("-", 1)[0]
    assert job_dirname(8, overrides).split("-", 1)[1] == name.split("-", 1)[1]
    assert _job_number(name) == 7  # sweep.csv orders jobs by this prefix
    # cut between whole characters: a 2-byte é across the 100-byte mark is left out, not split
    assert re.fullmatch(r"0-a{99}-[0-9a-f]{8}", job_dirname(0, "a" * 99 + "é" + "b" * 200))


# Overrides whose folder name would exceed 255 bytes: the shared settings spelled out.
LONG_OVERRIDES = [
    "checkpoint.keep=3",
    "log.every=250",
    "eval.episodes=1",
    "precision=float32",
    "device=cpu",
    "threads=1",
    "env.id=Pendulum-v1",
    "algo.lr=0.0003",
    "algo.gamma=0.99",
    "algo.tau=0.005",
    "algo.init_temperature=1.0",
    "algo.target_entropy=auto",
    "algo.updates_per_step=1",
    "algo.num_critics=2",
    "algo.batch_size=32",
    "algo.buffer_size=1000",
    "algo.hidden_sizes=[32,32]",
]


@pytest.mark.slow
def test_a_grid_with_long_overrides_runs_in_bounded_folders_that_a_rerun_finds(rlrun, tmp_path):
    sweep_dir = tmp_path / "sweep"
    command = [
        *JOBLIB_SMOKE_GRID,
        *LONG_OVERRIDES,
        f"hydra.sweep.dir={sweep_dir}",
    ]
    result = rlrun(*command)
    assert result.returncode == 0, result.stderr
    job_dirs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name != "report")
    assert len(job_dirs) == 2
    for number, job in enumerate(job_dirs):
        # named by the resolver in the joblib worker process, from the job's own override_dirname
        override_dirname = OmegaConf.load(job / ".hydra" / "hydra.yaml").hydra.job.override_dirname
        assert len(f"{number}-{override_dirname}".encode()) > NAME_MAX
        assert job.name == job_dirname(number, override_dirname) and len(job.name.encode()) <= 120
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        assert set(LONG_OVERRIDES) <= set(overrides) and f"seed={number}" in overrides  # all of them, in the folder
    with open(sweep_dir / "sweep.csv") as file:
        rows = list(csv.DictReader(file))
    assert [(row["job"], row["status"]) for row in rows] == [(job.name, "completed") for job in job_dirs]
    checkpoints = {p: p.stat().st_mtime_ns for job in job_dirs for p in (job / "checkpoints").iterdir()}

    again = rlrun(*command)
    assert again.returncode == 0, again.stderr
    assert sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name != "report") == job_dirs
    for job in job_dirs:
        assert "nothing to do" in (job / "rlrun.log").read_text()  # already completed: not trained again
    assert {p: p.stat().st_mtime_ns for job in job_dirs for p in (job / "checkpoints").iterdir()} == checkpoints
    with open(sweep_dir / "sweep.csv") as file:
        assert [row["status"] for row in csv.DictReader(file)] == ["completed", "completed"]
