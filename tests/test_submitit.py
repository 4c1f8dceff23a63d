"""hydra/launcher=slurm and submitit_local (hydra-submitit-launcher; the slurm extra): the Slurm
preset renders a valid sbatch script, a submitit_local sweep runs its jobs as real submitit
subprocesses, and a job signalled as Slurm signals a preempted or timed-out one is requeued by
submitit and continues from its latest checkpoint."""

import importlib.util
import json
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import start_rlrun
from omegaconf import OmegaConf

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
    reason="the slurm extra is not installed: python -m pip install -c constraints.txt -e '.[slurm]'",
)

JOB = ["algo=ppo", "env=CartPole", "experiment=smoke"]


def finish(process, timeout=300):
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr
    return stdout, stderr


def test_slurm_preset_renders_an_sbatch_script(tmp_path, monkeypatch):
    import submitit
    from hydra import compose, initialize_config_module

    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    with initialize_config_module("rlrun.configs", version_base="1.3"):
        cfg = compose(
            "config",
            overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path}"],
            return_hydra_config=True,
        )
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert params["_target_"].endswith("SlurmLauncher")
    assert (params["partition"], params["timeout_min"], params["cpus_per_task"], params["gpus_per_node"], params["mem_gb"]) == (
        "gpu",
        1440,
        4,
        1,
        16,
    )
    assert params["max_num_timeout"] == 3 and params["submitit_folder"] == f"{tmp_path}/.submitit/%j"

    # The executor the launcher builds, with its parameters named as the launcher names them
    # (hydra_submitit_launcher's BaseSubmititLauncher.launch); a stand-in srun makes it think
    # it is on a cluster. The script is what sbatch would get.
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    params.pop("_target_")
    executor = submitit.AutoExecutor(
        cluster="slurm", folder=params.pop("submitit_folder"), slurm_max_num_timeout=params.pop("max_num_timeout")
    )
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    script = executor._executor._make_submission_file_text("python -u -m submitit.core._submit", "0")
    for line in ("--partition=gpu", "--time=1440", "--cpus-per-task=4", "--gpus-per-node=1", "--mem=16GB", "--signal=USR2@120"):
        assert f"#SBATCH {line}" in script, script


@pytest.mark.slow
def test_submitit_local_sweep_runs_each_job_in_its_own_process(tmp_path):
    sweep_dir = tmp_path / "sweep"
    finish(start_rlrun("-m", "hydra/launcher=submitit_local", *JOB, "seed=0,1", f"hydra.sweep.dir={sweep_dir}"))
    jobs = sorted(p for p in sweep_dir.iterdir() if p.name[0].isdigit())
    assert [p.name for p in jobs] == [
        "0-algo=ppo,env=CartPole,experiment=smoke,seed=0",
        "1-algo=ppo,env=CartPole,experiment=smoke,seed=1",
    ]
    summaries = [json.loads((p / "summary.json").read_text()) for p in jobs]
    assert [s["status"] for s in summaries] == ["completed", "completed"]
    assert [s["total_steps"] for s in summaries] == [600, 600]
    pids = {job: next(line for line in (job / "rlrun.log").read_text().splitlines() if " pid " in line) for job in jobs}
    assert len({line.split(" pid ")[1].split(",")[0] for line in pids.values()}) == 2  # two processes
    assert len(list((sweep_dir / ".submitit").glob("*/*_submitted.pkl"))) == 2  # real submitit jobs


def descendants(pid):
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def command_line(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.slow
def test_a_preempted_job_is_requeued_and_continues_from_its_checkpoint(tmp_path):
    sweep_dir = tmp_path / "sweep"
    total = 10240
    process = start_rlrun(
        "-m",
        "hydra/launcher=submitit_local",
        *JOB,
        f"total_steps={total}",
        "checkpoint.every=1024",
        "eval.every=5120",
        f"hydra.sweep.dir={sweep_dir}",
    )
    try:
        deadline = time.monotonic() + 240
        while not list(sweep_dir.glob("0-*/checkpoints/step_*.pt")):
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        # What Slurm does before a time limit or on preemption with submitit's --signal: USR2 to
        # the job's task. submitit's handler requeues it (submitit_local restarts the task).
        tasks = [pid for pid in descendants(process.pid) if "submitit.core._submit" in command_line(pid)]
        assert len(tasks) == 1, [command_line(pid) for pid in descendants(process.pid)]
        os.kill(tasks[0], signal.SIGUSR2)
        finish(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    job = next(sweep_dir.glob("0-*"))
    summary = json.loads((job / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["total_steps"] == total
    log = (job / "rlrun.log").read_text()
    assert "resumed from step" in log, log
    resumed_at = int(log.split("resumed from step ")[1].split()[0])
    # The job checkpointed where USR2 stopped it, before submitit requeued it: no step is lost.
    stopped_at = int(log.split("stopped by SIGUSR2 at step ")[1].split()[0])
    assert 1024 <= resumed_at == stopped_at < total
    submitit_log = "".join(p.read_text() for p in (sweep_dir / ".submitit").glob("*/*_log.err"))
    assert "Caught signal SIGUSR2" in submitit_log and "this job is preempted" in submitit_log, submitit_log
