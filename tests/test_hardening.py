"""What users and machines really do: huge step counts, two writers on one folder, a killed
sweep, a dropped terminal, failing disks and environments, hostile command lines. Each case is
a real failure where the machine allows one (a file-size limit, a SIGKILL, a raising env)."""

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, _env, checkpoint_file, run_rlrun, start_rlrun, wait_for

SAC_PENDULUM = ["experiment=smoke", "algo=sac", "env=Pendulum", "threads=1"]


def one_line_error(result, code: int) -> str:
    assert result.returncode == code, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rlrun: error: "), result.stderr[-3000:]
    return lines[0]


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


# ----- 1. step counts past 999,999,999 ------------------------------------------------------
def test_checkpoints_past_a_billion_steps_are_ordered_by_step_not_name(tmp_path):
    run_dir = tmp_path / "run"
    assert run_rlrun(*SAC_PENDULUM, "total_steps=300", f"hydra.run.dir={run_dir}").returncode == 0
    # The same run, as if it had reached step 999,999,700: its checkpoint renamed and relabelled.
    state = torch.load(checkpoint_file(run_dir, 300), weights_only=True)
    state["step"] = 999_999_700
    checkpoint_file(run_dir, 300).unlink()
    (run_dir / "checkpoints" / "best.pt").unlink()
    torch.save(state, checkpoint_file(run_dir, 999_999_700))
    (run_dir / "summary.json").unlink()

    result = run_rlrun(f"resume={run_dir}", "total_steps=1000000200", "checkpoint.every=100", "eval.every=250")
    assert result.returncode == 0, result.stderr[-3000:]
    kept = sorted(p.name for p in (run_dir / "checkpoints").glob("step_*.pt"))
    assert kept == ["step_1000000000.pt", "step_1000000100.pt", "step_1000000200.pt"]  # checkpoint.keep=3, newest
    summary = summary_of(run_dir)
    assert summary["status"] == "completed" and Path(summary["checkpoint"]).is_file()
    assert Path(summary["checkpoint"]).name == "step_1000000200.pt"


def test_a_budget_past_what_can_be_counted_is_refused(tmp_path):
    line = one_line_error(run_rlrun(*SAC_PENDULUM, "total_steps=1e20", f"hydra.run.dir={tmp_path / 'run'}"), 2)
    assert "total_steps=100000000000000000000 is more than rlrun can count" in line
    assert not (tmp_path / "run").exists()


# ----- 2. one writer per run folder -----------------------------------------------------------
@pytest.mark.slow
def test_a_second_writer_is_refused_and_a_killed_writer_leaves_no_stale_lock(tmp_path):
    run_dir = tmp_path / "run"
    first = start_rlrun(*SAC_PENDULUM, "total_steps=20000", f"hydra.run.dir={run_dir}")
    wait_for(checkpoint_file(run_dir, 300), first)
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file() and p.suffix != ".jsonl"}

    second = run_rlrun(*SAC_PENDULUM, "total_steps=20000", f"hydra.run.dir={run_dir}")
    line = one_line_error(second, 2)
    assert f"is in use by another rlrun process (pid {first.pid})" in line
    resumed = run_rlrun(f"resume={run_dir}")
    assert f"(pid {first.pid})" in one_line_error(resumed, 2)

    first.kill()  # SIGKILL: no chance to clean up
    first.communicate(timeout=60)
    for path, mtime in before.items():
        if path.exists() and path.name.startswith("step_"):
            assert path.stat().st_mtime_ns == mtime  # the refused writers changed nothing
    # The lock is free again: a resume takes it (to the killed run's last checkpoint, where it finds nothing to train).
    reached = max(int(path.stem.removeprefix("step_")) for path in (run_dir / "checkpoints").glob("step_*.pt"))
    again = run_rlrun(f"resume={run_dir}", f"total_steps={reached}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert summary_of(run_dir)["status"] == "completed" and summary_of(run_dir)["total_steps"] == reached


# ----- 3. a killed joblib sweep leaves no workers ----------------------------------------------
@pytest.mark.slow
def test_the_workers_of_a_killed_joblib_sweep_stop_with_a_checkpoint(tmp_path):
    sweep_dir = tmp_path / "sweep"
    parent = start_rlrun(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        *SAC_PENDULUM,
        "seed=0,1",
        "total_steps=50000",
        "checkpoint.every=100000",
        f"hydra.sweep.dir={sweep_dir}",
    )
    deadline = time.monotonic() + 240
    while len(list(sweep_dir.glob("*/metrics.jsonl"))) < 2 or not all(
        path.stat().st_size > 0 for path in sweep_dir.glob("*/metrics.jsonl")
    ):
        assert parent.poll() is None and time.monotonic() < deadline, parent.communicate()[1][-3000:]
        time.sleep(0.2)
    workers = {int((job / ".rlrun.lock").read_text()) for job in sweep_dir.glob("*-*") if (job / ".rlrun.lock").exists()}
    assert len(workers) == 2 and parent.pid not in workers
    parent.kill()
    parent.wait(timeout=60)  # not communicate(): the workers hold the same output pipes

    deadline = time.monotonic() + 90
    while any(_alive(pid) for pid in workers):
        assert time.monotonic() < deadline, f"workers {workers} still run after their sweep was killed"
        time.sleep(0.5)
    parent.stdout.close()
    parent.stderr.close()
    for job in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").is_dir()):
        summary = summary_of(job)
        assert summary["status"] == "interrupted" and summary["signal"] == "SIGTERM", summary
        assert Path(summary["checkpoint"]).is_file()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has ended; only its parent has not reaped it
        return stat.read().split(") ", 1)[1][0] != "Z"


# ----- 4. hang-ups and the user signals -------------------------------------------------------
def test_a_hangup_stops_the_run_like_sigterm(tmp_path):
    run_dir = tmp_path / "run"
    process = start_rlrun(*SAC_PENDULUM, "total_steps=20000", f"hydra.run.dir={run_dir}")
    wait_for(checkpoint_file(run_dir, 300), process)
    process.send_signal(signal.SIGHUP)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGHUP
    summary = summary_of(run_dir)
    assert summary["status"] == "interrupted" and summary["signal"] == "SIGHUP"
    assert checkpoint_file(run_dir, summary["total_steps"]).is_file()
    assert stderr.strip().splitlines()[-1].startswith(f"rlrun: SIGHUP at step {summary['total_steps']}: saved ")


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGUSR2], ids=["SIGUSR1", "SIGUSR2"])
def test_a_user_signal_writes_a_checkpoint_and_training_goes_on(tmp_path, sig):
    run_dir = tmp_path / "run"
    process = start_rlrun(*SAC_PENDULUM, "total_steps=1500", "checkpoint.every=100000", f"hydra.run.dir={run_dir}")
    wait_for(run_dir / "metrics.jsonl", process)
    time.sleep(2)
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    assert f"{sig.name}: wrote " in stdout + stderr  # the run's log, on the console
    steps = sorted(int(p.stem.removeprefix("step_")) for p in (run_dir / "checkpoints").glob("step_*.pt"))
    assert len(steps) == 2 and 0 < steps[0] < 1500 and steps[1] == 1500, steps
    assert summary_of(run_dir)["status"] == "completed"


# ----- 5. writes that fail as the OS reports them ---------------------------------------------
def _limited_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    return apply


def test_a_file_size_limit_gets_one_line_and_leaves_no_temporary_file(tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "rlrun.cli", *SAC_PENDULUM, f"hydra.run.dir={run_dir}"],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=REPO,
        timeout=300,
        preexec_fn=_limited_file_size(100_000),
    )
    line = one_line_error(result, 1)
    assert "cannot write checkpoint" in line and "File too large (the file-size limit, ulimit -f, is 100000 bytes)" in line
    assert not list(run_dir.rglob("*.tmp"))
    summary = summary_of(run_dir)
    assert summary["status"] == "failed" and "File too large" in summary["error"]


def test_a_full_file_system_gets_one_line_and_keeps_the_earlier_checkpoint(tmp_path):
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount_point)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"this machine cannot mount a small tmpfs ({mounted.stderr.decode().strip()})")
    try:
        run_dir = mount_point / "run"
        result = run_rlrun(*SAC_PENDULUM, "total_steps=3000", "checkpoint.keep=5", f"hydra.run.dir={run_dir}")
        line = one_line_error(result, 1)
        assert "No space left on device" in line, line
        assert not list(run_dir.rglob("*.tmp"))
        kept = list((run_dir / "checkpoints").glob("step_*.pt"))
        assert kept and all(torch.load(path, weights_only=True)["step"] > 0 for path in kept)
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def test_a_checkpoints_folder_locked_mid_run_gets_one_line_and_keeps_its_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    process = start_rlrun(*SAC_PENDULUM, "total_steps=20000", f"hydra.run.dir={run_dir}")
    wait_for(checkpoint_file(run_dir, 300), process)
    # Immutable: nothing can be created in it, not even by root (chmod would not stop root).
    locked = subprocess.run(["chattr", "+i", str(run_dir / "checkpoints")], capture_output=True)
    if locked.returncode != 0:
        process.kill()
        process.communicate()
        pytest.skip(f"this file system cannot make a folder immutable ({locked.stderr.decode().strip()})")
    try:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 1, stderr[-3000:]
        lines = stderr.strip().splitlines()
        assert len(lines) == 1, stderr[-3000:]
        assert lines[0].startswith("rlrun: error: cannot write checkpoint") and "Operation not permitted" in lines[0]
        assert f"the previous checkpoint {checkpoint_file(run_dir, 300)} is intact" in lines[0]
        assert torch.load(checkpoint_file(run_dir, 300), weights_only=True)["step"] == 300
        assert summary_of(run_dir)["status"] == "failed"
    finally:
        subprocess.run(["chattr", "-i", str(run_dir / "checkpoints")], check=False)


# ----- 6, 7. environments that fail ---------------------------------------------------------------
ENV_FAILURES = [
    (
        "CrashingPendulum-v0",
        {"RLRUN_TEST_CRASH_AT": "700"},
        "CrashingPendulum-v0 raised RuntimeError in step(): simulated crash at step 700",
    ),
    (
        "BrokenResetPendulum-v0",
        {"RLRUN_TEST_RESETS_OK": "4"},
        "BrokenResetPendulum-v0 raised OSError in reset(): simulator connection lost",
    ),
    ("NaNRewardPendulum-v0", {"RLRUN_TEST_NAN_AT": "700"}, "NaNRewardPendulum-v0 returned a non-finite reward (nan) at step"),
    (
        "NaNObservationPendulum-v0",
        {"RLRUN_TEST_NAN_AT": "700"},
        "NaNObservationPendulum-v0 returned a non-finite observation at step",
    ),
]


@pytest.mark.parametrize("env_id,variables,words", ENV_FAILURES, ids=[case[0] for case in ENV_FAILURES])
def test_a_failing_environment_is_named_and_the_checkpoints_are_kept(tmp_path, monkeypatch, env_id, variables, words):
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    run_dir = tmp_path / "run"
    # Steps of the training and evaluation envs together: the fault comes after the step-300 checkpoint.
    result = run_rlrun(*SAC_PENDULUM, f"env.id=tests.crashing_env:{env_id}", f"hydra.run.dir={run_dir}")
    line = one_line_error(result, 1)
    assert words in line, line
    assert checkpoint_file(run_dir, 300).is_file()
    summary = summary_of(run_dir)
    assert summary["status"] == "failed" and words in summary["error"]


@pytest.mark.slow
def test_an_environment_that_fails_to_construct_or_import_is_a_config_error(tmp_path):
    for env_id, words in [
        ("tests.crashing_env:BrokenConstructor-v0", "BrokenConstructor-v0 raised ValueError when made: licence file not found"),
        ("tests.raising_module:Anything-v0", "importing 'tests.raising_module' raised RuntimeError: this module is broken"),
        ("tests.exiting_module:Anything-v0", "importing 'tests.exiting_module' called sys.exit(0); a module that registers"),
        (":Foo-v0", "'' is not an importable module name"),
        (".relative:Foo-v0", "'.relative' is not an importable module name"),
    ]:
        line = one_line_error(run_rlrun(*SAC_PENDULUM, f"env.id={env_id}", f"hydra.run.dir={tmp_path / 'run'}"), 2)
        assert words in line, line
    assert not (tmp_path / "run").exists()


def test_an_environment_failing_in_a_subprocess_vector_env_gets_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("RLRUN_TEST_CRASH_AT", "100")
    result = run_rlrun(
        "experiment=smoke",
        "algo=ppo",
        "env=Pendulum",
        "algo.num_envs=2",
        "algo.async_envs=true",
        "env.id=tests.crashing_env:CrashingPendulum-v0",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert "CrashingPendulum-v0 raised RuntimeError in step(): simulated crash at step 100" in one_line_error(result, 1)


# ----- 8. the config surface ------------------------------------------------------------------
CONFIG_CASES = [
    (["seed=4294967296"], "seed=4294967296 must lie in [0, 2147483647]"),
    (["seed=-1"], "seed=-1 must lie in [0, 2147483647]"),
    (["algo.lr=nan"], "algo.lr=nan must be a finite number"),
    (["algo.tau=inf"], "algo.tau=inf must be a finite number"),
    (["algo.lré=1"], "cannot parse the override 'algo.lré=1'"),
    (["é=1"], "cannot parse the override 'é=1'"),
    (["algo=[sac,td3]"], "the config group algo takes one name"),
    (["~algo.lr"], "~algo.lr: removing a setting is not supported"),
    (["eval.episodes=1e20"], "eval.episodes=100000000000000000000 is more than the limit of 1,000,000"),
]


@pytest.mark.parametrize("overrides,words", CONFIG_CASES, ids=[" ".join(c[0]) for c in CONFIG_CASES])
def test_hostile_overrides_get_one_line(tmp_path, overrides, words):
    line = one_line_error(run_rlrun(*SAC_PENDULUM, *overrides, f"hydra.run.dir={tmp_path / 'run'}"), 2)
    assert words in line, line
    assert not (tmp_path / "run").exists()


def test_settings_that_never_learn_get_a_warning(tmp_path):
    result = run_rlrun("experiment=smoke", "algo=ppo", "env=CartPole", "total_steps=100", f"hydra.run.dir={tmp_path / 'a'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "rlrun: warning: a rollout of algo.num_envs × algo.num_steps = 256 transitions is longer than total_steps=100"
        in result.stderr
    )
    result = run_rlrun(*SAC_PENDULUM, "total_steps=150", "algo.learning_starts=200", f"hydra.run.dir={tmp_path / 'b'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rlrun: warning: algo.learning_starts=200 is not below total_steps=150" in result.stderr


def test_damaged_run_folders_given_to_resume_get_one_line(tmp_path):
    run_dir = tmp_path / "run"
    assert run_rlrun(*SAC_PENDULUM, "total_steps=300", f"hydra.run.dir={run_dir}").returncode == 0
    overrides = run_dir / ".hydra" / "overrides.yaml"
    saved = overrides.read_bytes()
    overrides.write_bytes(b"- algo=sac\n- [unclosed\n")
    assert "overrides.yaml is damaged" in one_line_error(run_rlrun(f"resume={run_dir}", "total_steps=600"), 2)
    overrides.write_bytes(saved)

    state = torch.load(checkpoint_file(run_dir, 300), weights_only=True)
    del state["run"]["clock"]
    torch.save(state, checkpoint_file(run_dir, 300))
    line = one_line_error(run_rlrun(f"resume={run_dir}", "total_steps=600"), 2)
    assert "is a damaged rlrun checkpoint: it lacks run.clock" in line


def test_library_warnings_go_to_the_run_log_not_the_terminal(tmp_path):
    """A UserWarning from outside rlrun (torch, Optuna, matplotlib issue them) during training."""
    patch = (
        "import sys, warnings\n"
        "sys.warnoptions.clear()\n"
        "warnings.resetwarnings()  # as without the tests' PYTHONWARNINGS=ignore\n"
        "import rlrun.core.run as run\n"
        "_evaluate = run.Run.evaluate\n"
        "def evaluate(self, step):\n"
        "    warnings.warn('a library warning', UserWarning)\n"
        "    return _evaluate(self, step)\n"
        "run.Run.evaluate = evaluate\n"
    )
    run_dir = tmp_path / "run"
    result = run_rlrun(*SAC_PENDULUM, "total_steps=300", f"hydra.run.dir={run_dir}", patch=patch)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "a library warning" not in result.stderr + result.stdout
    assert "UserWarning: a library warning" in (run_dir / "rlrun.log").read_text()
