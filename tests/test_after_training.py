"""The after-training commands (`evaluate=`, `export=`, `report=`) under real faults: a
file-size limit (`ulimit -f`), a run folder nothing can be written in (`chattr +i`), damaged
files in one run of a sweep, a stored YAML file with a Python tag. Each gets one line, leaves
no temporary or empty file, and keeps what was written before."""

import contextlib
import csv
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, _env, run_rlrun

from rlrun.config import ConfigError
from rlrun.core.saved_run import read_stored_yaml

SAC_PENDULUM = ["experiment=smoke", "algo=sac", "env=Pendulum", "threads=1", "device=cpu"]


def one_line_error(result, code: int) -> str:
    assert result.returncode == code, result.stdout[-2000:] + result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rlrun: error: "), result.stderr[-3000:]
    return lines[0]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` with its content hash."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def run_limited(*args: str, file_size: int) -> subprocess.CompletedProcess:
    """`rlrun args` with the file-size limit (ulimit -f) at `file_size` bytes."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))

    return subprocess.run(
        [sys.executable, "-m", "rlrun.cli", *args],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=REPO,
        timeout=300,
        preexec_fn=limit,
    )


class ReadOnly:
    """Make a folder and everything in it unwritable: `chattr +i` (which stops root too), or
    without it chmod; the test is skipped where neither stops this process writing."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.chattr = subprocess.run(["chattr", "-R", "+i", str(folder)], capture_output=True).returncode == 0
        if not self.chattr:
            for path in [folder, *folder.rglob("*")]:
                path.chmod(path.stat().st_mode & ~0o222)
        try:
            (folder / "probe").touch()
        except OSError:
            return
        (folder / "probe").unlink()
        self.undo()
        pytest.skip("this machine lets this process write in a chattr +i or chmod a-w folder")

    def undo(self) -> None:
        if self.chattr:
            subprocess.run(["chattr", "-R", "-i", str(self.folder)], check=True)
        else:
            for path in [self.folder, *self.folder.rglob("*")]:
                path.chmod(path.stat().st_mode | 0o200)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("after") / "run"
    result = run_rlrun(*SAC_PENDULUM, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    return run_dir


@pytest.fixture
def run_copy(trained_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy


# ----- writes that fail: one line, no temporary or empty file, nothing lost ------------------
WRITES = {
    "evaluate": (["eval.episodes=2"], "cannot write the evaluation's result"),
    "evaluate-video": (["eval.episodes=1", "video=true"], "cannot write the video"),  # ffmpeg's writes fail quietly
    "export-onnx": (["format=onnx"], "cannot write the exported policy"),
    "export-torchscript": (["format=torchscript"], "cannot write the exported policy"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(WRITES))
def test_a_file_size_limit_gets_one_line_and_leaves_no_file(run_copy, case):
    options, words = WRITES[case]
    command = case.split("-")[0]
    pytest.importorskip({"export-onnx": "onnxscript", "evaluate-video": "moviepy"}.get(case, "torch"))
    before = snapshot(run_copy)
    # Smaller than the evaluation's JSON and than either policy file.
    result = run_limited(f"{command}={run_copy}", *options, file_size=200)
    line = one_line_error(result, 1)
    assert words in line and "File too large (the file-size limit, ulimit -f, is 200 bytes)" in line, line
    assert "Traceback" not in result.stdout + result.stderr
    assert snapshot(run_copy) == before  # no temporary file, no empty file, nothing changed

    # Without the limit the same command writes complete files.
    result = run_rlrun(f"{command}={run_copy}", *options)
    assert result.returncode == 0, result.stderr
    written = set(snapshot(run_copy)) - set(before)
    assert written and all((run_copy / name).stat().st_size > 0 for name in written)
    if command == "export":
        policy = next(run_copy / name for name in written if not name.endswith(".json"))
        if case == "export-torchscript":
            torch.jit.load(str(policy))
        assert json.loads(next(run_copy / n for n in written if n.endswith(".json")).read_text())["file"] == policy.name


@pytest.fixture
def full_disk(tmp_path):
    """A small tmpfs (where this machine lets the tests mount one), filled to its last byte."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"this machine cannot mount a small tmpfs ({mounted.stderr.decode().strip()})")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def fill(folder: Path) -> None:
    # Unbuffered, and stopped by the first No space left on device.
    with open(folder / "filler", "wb", buffering=0) as file, contextlib.suppress(OSError):
        while True:
            file.write(b"x" * 512)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(WRITES))
def test_a_full_disk_gets_one_line_and_leaves_no_file(run_copy, full_disk, case):
    options, words = WRITES[case]
    command = case.split("-")[0]
    pytest.importorskip({"export-onnx": "onnxscript", "evaluate-video": "moviepy"}.get(case, "torch"))
    fill(full_disk)
    result = run_rlrun(f"{command}={run_copy}", *options, f"out={full_disk / 'results'}")
    line = one_line_error(result, 1)
    assert words in line and "No space left on device" in line, line
    assert [p for p in full_disk.rglob("*") if p.is_file()] == [full_disk / "filler"]


def test_a_full_disk_keeps_the_earlier_report(tmp_path, full_disk):
    pytest.importorskip("matplotlib")
    sweep = fake_sweep(tmp_path / "sweep")
    out = full_disk / "report"
    assert run_rlrun(f"report={sweep}", "report.resamples=50", f"report.out={out}").returncode == 0
    before = snapshot(out)
    fill(full_disk)
    line = one_line_error(run_rlrun(f"report={sweep}", "report.resamples=60", f"report.out={out}"), 1)
    assert "cannot write the report's file" in line and "No space left on device" in line, line
    assert snapshot(out) == before


@pytest.mark.slow
@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_a_read_only_run_folder_gets_one_line_and_out_writes_elsewhere(run_copy, tmp_path, command):
    options = ["eval.episodes=1"] if command == "evaluate" else ["format=torchscript"]
    before = snapshot(run_copy)
    locked = ReadOnly(run_copy)
    try:
        result = run_rlrun(f"{command}={run_copy}", *options)
        folder = run_copy / ("evaluations" if command == "evaluate" else "export")
        line = one_line_error(result, 2)
        assert f"{folder} is not writable" in line and "write elsewhere with out=<folder>" in line, line

        elsewhere = tmp_path / "elsewhere"
        result = run_rlrun(f"{command}={run_copy}", *options, f"out={elsewhere}")
        assert result.returncode == 0, result.stderr
    finally:
        locked.undo()
    assert snapshot(run_copy) == before
    written = sorted(p.relative_to(elsewhere).as_posix() for p in elsewhere.rglob("*") if p.is_file())
    if command == "evaluate":
        assert written == ["evaluations/step_000000600.json"]
        assert json.loads((elsewhere / written[0]).read_text())["run"] == str(run_copy)
    else:
        assert written == ["export/policy-step_000000600.torchscript.json", "export/policy-step_000000600.ts.pt"]


# ----- report= ----------------------------------------------------------------------------------
def fake_sweep(root: Path, seeds: int = 4) -> Path:
    """A sweep of SAC on Pendulum, `seeds` seeds with known evaluation curves (fake run folders,
    as tests/test_report.py writes them)."""
    for seed in range(seeds):
        folder = root / f"{seed}-seed={seed}"
        hydra = folder / ".hydra"
        hydra.mkdir(parents=True)
        config = {"seed": seed, "total_steps": 1000, "env": {"id": "Pendulum-v1"}, "algo": {"name": "sac", "lr": 0.001}}
        (hydra / "config.yaml").write_text(yaml.safe_dump(config))
        (hydra / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": {"algo": "sac"}}}}))
        (hydra / "overrides.yaml").write_text(yaml.safe_dump([f"seed={seed}"]))
        rows = [{"step": step, "eval/return_mean": -1000.0 + step + seed} for step in (500, 1000)]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        (folder / "summary.json").write_text(json.dumps({"status": "completed"}))
    return root


def test_a_report_under_a_file_size_limit_keeps_the_earlier_report(tmp_path):
    pytest.importorskip("matplotlib")
    sweep = fake_sweep(tmp_path / "sweep")
    result = run_rlrun(f"report={sweep}", "report.resamples=50", "report.format=html")
    assert result.returncode == 0, result.stderr
    before = snapshot(sweep / "report")
    assert before["curves-Pendulum-v1.png"] and (sweep / "report" / "curves-Pendulum-v1.png").stat().st_size > 8000

    # report.md and report.csv fit in 8000 bytes, the figure does not.
    result = run_limited(f"report={sweep}", "report.resamples=60", "report.format=html", file_size=8000)
    line = one_line_error(result, 1)
    assert "cannot write the report's file" in line and "File too large" in line, line
    assert snapshot(sweep / "report") == before  # the earlier report whole, no temporary or empty file


def test_a_read_only_sweep_folder_gets_one_line_and_report_out_writes_elsewhere(tmp_path):
    pytest.importorskip("matplotlib")
    sweep = fake_sweep(tmp_path / "sweep")
    locked = ReadOnly(sweep)
    try:
        line = one_line_error(run_rlrun(f"report={sweep}", "report.resamples=50"), 2)
        assert f"report.out={sweep / 'report'} is not writable" in line, line
        result = run_rlrun(f"report={sweep}", "report.resamples=50", f"report.out={tmp_path / 'elsewhere'}")
        assert result.returncode == 0, result.stderr
    finally:
        locked.undo()
    assert (tmp_path / "elsewhere" / "report.md").is_file() and not (sweep / "report").exists()


def test_damaged_runs_are_left_out_of_a_report_with_a_note_naming_each(tmp_path):
    pytest.importorskip("matplotlib")
    sweep = fake_sweep(tmp_path / "sweep", seeds=6)
    marker = tmp_path / "ran"
    damaged = {
        "1-seed=1": (".hydra/config.yaml", b"seed: [1, 2\nalgo: {name: sac\n"),
        "2-seed=2": ("metrics.jsonl", os.urandom(4000).replace(b"\n", b"\x00") + b"\n" + os.urandom(4000)),
        "3-seed=3": (".hydra/config.yaml", f"seed: !!python/object/apply:os.system ['touch {marker}']\n".encode()),
        "4-seed=4": (".hydra/overrides.yaml", f"- !!python/object/apply:os.system ['touch {marker}']\n".encode()),
    }
    for job, (name, data) in damaged.items():
        (sweep / job / name).write_bytes(data)
    result = run_rlrun(f"report={sweep}", "report.resamples=50")
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    text = (sweep / "report" / "report.md").read_text()
    assert "| algo=sac | 2 |" in text  # seeds 0 and 5
    note = next(line for line in text.splitlines() if "run(s) left out, which cannot be read" in line)
    assert note.startswith("- 4 run(s) left out")
    assert f"{sweep / '1-seed=1' / '.hydra' / 'config.yaml'} is damaged (not YAML: expected ',' or ']'" in note
    assert f"{sweep / '2-seed=2' / 'metrics.jsonl'} is damaged (line 1 is not UTF-8 text)" in note
    for job in ("3-seed=3", "4-seed=4"):
        assert f"{sweep / job / '.hydra'}/" in note
    assert note.count("holds the YAML tag !!python/object/apply:os.system") == 2

    # A report of that one damaged run alone is one line.
    line = one_line_error(run_rlrun(f"report={sweep / '3-seed=3'}", "report.resamples=50"), 2)
    assert "holds the YAML tag !!python/object/apply:os.system" in line and "refused" in line, line


# ----- a stored YAML file with a Python tag ----------------------------------------------------
PYTHON_TAGS = [
    "!!python/object/apply:os.system ['touch {marker}']",
    "!!python/object/new:subprocess.Popen [['touch', '{marker}']]",
    "!!python/name:os.system",
    "!!python/module:os",
    "!<tag:yaml.org,2002:python/object/apply:os.system> ['touch {marker}']",
]


@pytest.mark.parametrize("tag", PYTHON_TAGS)
def test_a_python_tag_in_a_stored_yaml_file_is_refused_and_runs_nothing(tmp_path, tag):
    marker = tmp_path / "ran"
    path = tmp_path / "config.yaml"
    path.write_text(f"seed: 0\nenv:\n  id: {tag.format(marker=marker)}\n")
    with pytest.raises(ConfigError, match=r"holds the YAML tag !!python/(object|name|module)[^;]*; rlrun reads only plain"):
        read_stored_yaml(path)
    assert not marker.exists()


@pytest.mark.slow
def test_resume_refuses_a_python_tag_in_the_stored_overrides(run_copy, tmp_path):
    marker = tmp_path / "ran"
    overrides = run_copy / ".hydra" / "overrides.yaml"
    overrides.write_text(overrides.read_text() + f"- !!python/object/apply:os.system ['touch {marker}']\n")
    before = snapshot(run_copy)
    line = one_line_error(run_rlrun(f"resume={run_copy}", "total_steps=900"), 2)
    assert f"resume={run_copy}: {overrides} holds the YAML tag !!python/object/apply:os.system" in line, line
    assert not marker.exists() and snapshot(run_copy) == before


# ----- evaluate=<sweep> goes on past a job that fails ------------------------------------------
@pytest.mark.slow
def test_evaluating_a_sweep_goes_on_past_a_job_whose_environment_fails(trained_run, tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    jobs = [sweep / f"{n}-seed=0" for n in range(3)]
    for job in jobs:
        shutil.copytree(trained_run, job)
    # Job 1's environment raises in its first evaluation episode; job 2 has no checkpoint.
    path = sorted((jobs[1] / "checkpoints").glob("step_*.pt"))[-1]
    state = torch.load(path, weights_only=True)
    state["config"]["env"]["id"] = "tests.crashing_env:CrashingPendulum-v0"
    torch.save(state, path)
    shutil.rmtree(jobs[2] / "checkpoints")
    monkeypatch.setenv("RLRUN_TEST_CRASH_AT", "5")

    result = run_rlrun(f"evaluate={sweep}", "eval.episodes=1")
    line = one_line_error(result, 1)
    assert line.startswith("rlrun: error: 2 of 3 jobs not evaluated (1-seed=0: CrashingPendulum-v0 raised RuntimeError"), line
    assert "and 1 more" in line
    table = next((sweep / "evaluations").glob("sweep-*.csv"))
    assert f"the table {table} lists each" in line
    with open(table, newline="") as file:
        rows = {row["job"]: row for row in csv.DictReader(file)}
    assert rows["0-seed=0"]["return_mean"] and not rows["0-seed=0"]["error"]
    assert "simulated crash at step 5" in rows["1-seed=0"]["error"] and not rows["1-seed=0"]["return_mean"]
    assert "has no checkpoint" in rows["2-seed=0"]["error"]
    assert [p.name for p in (jobs[0] / "evaluations").iterdir()] == ["step_000000600.json"]
    assert not (jobs[1] / "evaluations").exists() or not any((jobs[1] / "evaluations").iterdir())
