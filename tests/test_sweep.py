"""Multiruns: one folder per job named after its overrides, sweep.csv, the end-of-sweep table."""

import csv
import json
import os
import re

from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer


def test_grid_sweep_writes_a_folder_per_job_and_a_summary(rlrun, tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = rlrun(
        "-m", "experiment=smoke", "algo=sac,td3", "env=Pendulum", "seed=0,1", "total_steps=250",
        "algo.learning_starts=100", "eval.every=250", "checkpoint.every=250", "threads=1", f"hydra.sweep.dir={sweep_dir}",
    )
    assert result.returncode == 0, result.stderr

    # Hydra's override_dirname: the job's overrides as sorted "key=value" strings.
    rest = "checkpoint.every=250,env=Pendulum,eval.every=250,experiment=smoke"
    expected = [f"{i}-algo.learning_starts=100,algo={a},{rest},seed={s},threads=1,total_steps=250"
                for i, (a, s) in enumerate([("sac", 0), ("sac", 1), ("td3", 0), ("td3", 1)])]
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == expected
    with open(sweep_dir / "sweep.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["status"] for row in rows] == ["completed"] * 4
    assert [("algo=sac" in r["overrides"], "seed=1" in r["overrides"]) for r in rows] == [
        (True, False), (True, True), (False, False), (False, True)
    ]
    assert all(float(row["eval_return_mean"]) < 0 and row["total_steps"] == "250" for row in rows)
    assert "eval_return_mean" in result.stdout and result.stdout.count("completed  ") == 4  # table cells

    # TensorBoard names each run by its folder, which spells out the job's overrides.
    multiplexer = EventMultiplexer().AddRunsFromDirectory(str(sweep_dir)).Reload()
    runs = sorted(multiplexer.Runs())
    assert len(runs) == 4
    assert all("algo=" in run and "seed=" in run for run in runs)


def test_a_crashing_job_does_not_stop_the_sweep(rlrun, tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = rlrun(
        "-m", "experiment=smoke", "algo=sac", "env=Pendulum", "env.id=tests.crashing_env:CrashingPendulum-v0,Pendulum-v1",
        "total_steps=250", "algo.learning_starts=100", "eval.every=250", "checkpoint.every=250",
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert result.returncode == 1
    assert "simulated crash at step 150" in result.stderr
    with open(sweep_dir / "sweep.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["status"] for row in rows] == ["failed", "completed"]  # the second job still ran
    assert "RuntimeError: simulated crash at step 150" in rows[0]["error"]
    assert rows[1]["total_steps"] == "250" and float(rows[1]["eval_return_mean"]) < 0


def test_rerunning_a_sweep_skips_finished_jobs_and_resumes_the_failed_one(rlrun, tmp_path, monkeypatch):
    sweep_dir = tmp_path / "sweep"
    command = [
        "-m", "experiment=smoke", "algo=sac", "env=Pendulum", "env.id=tests.crashing_env:CrashingPendulum-v0,Pendulum-v1",
        "total_steps=300", "algo.learning_starts=100", "eval.every=300", "checkpoint.every=100",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    assert rlrun(*command).returncode == 1  # the first job crashes at step 150, after its checkpoint at 100
    crashed, finished = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    finished_checkpoints = {p.name: p.stat().st_mtime_ns for p in (finished / "checkpoints").iterdir()}

    monkeypatch.setenv("RLRUN_TEST_CRASH_AT", "0")  # the fault is gone
    again = rlrun(*command)
    assert again.returncode == 0, again.stderr
    with open(sweep_dir / "sweep.csv") as file:
        assert [row["status"] for row in csv.DictReader(file)] == ["completed", "completed"]
    assert "resumed from step 100" in (crashed / "rlrun.log").read_text()
    assert "nothing to do" in (finished / "rlrun.log").read_text()
    assert {p.name: p.stat().st_mtime_ns for p in (finished / "checkpoints").iterdir()} == finished_checkpoints


def test_joblib_runs_jobs_in_separate_processes_with_a_share_of_the_cores(rlrun, tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = rlrun(
        "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "experiment=smoke", "algo=sac", "env=Pendulum",
        "seed=0,1", "total_steps=250", "algo.learning_starts=100", "eval.every=250", "checkpoint.every=250",
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert result.returncode == 0, result.stderr
    job_dirs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    pids = {re.search(r"pid (\d+)", (job / "rlrun.log").read_text()).group(1) for job in job_dirs}
    assert len(job_dirs) == 2 and len(pids) == 2 and str(os.getpid()) not in pids
    expected_threads = max(1, (os.cpu_count() or 1) // 2)
    for job in job_dirs:
        assert json.loads((job / "summary.json").read_text())["torch_threads"] == expected_threads
