"""hydra/launcher=ray (rlrun's own launcher; the ray extra): a sweep of 2 jobs on a real local
Ray head bound to 127.0.0.1. Skipped without the extra; to run it:

    python -m pip install -c constraints.txt -e '.[test,ray]' && python -m pytest -m ray
"""

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_rlrun

pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(
        importlib.util.find_spec("ray") is None,
        reason="the ray extra is not installed: python -m pip install -c constraints.txt -e '.[ray]'",
    ),
]


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path, monkeypatch):
    """`ray start --head` on 127.0.0.1 with 2 CPUs, in a process group of its own, ended with it."""
    # Ray swaps 127.0.0.1 for the machine's network address unless clusters are "disabled" this
    # way; then the head, its workers and the driver all stay on loopback.
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    port = free_port()
    ray = Path(sys.executable).with_name("ray")
    log = tmp_path / "ray-head.log"
    head = subprocess.Popen(
        [
            str(ray) if ray.exists() else "ray",
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--object-store-memory=100000000",
            "--disable-usage-stats",
        ],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log.read_text():
            assert head.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
            try:
                os.killpg(head.pid, sig)  # the head and the Ray processes it started
            except ProcessLookupError:
                break
            try:
                head.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)  # stragglers of the group (the GCS server may linger)
        head.wait()


def test_two_jobs_run_as_tasks_on_a_local_ray_head(ray_head, tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_rlrun(
        "-m",
        "hydra/launcher=ray",
        f"hydra.launcher.address={ray_head}",
        "algo=ppo",
        "env=CartPole",
        "experiment=smoke",
        "seed=0,1",
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert f"Connecting to existing Ray cluster at address: {ray_head}" in output, output
    assert f"Ray launcher: 2 jobs on {ray_head}" in output, output
    jobs = sorted(p for p in sweep_dir.iterdir() if p.name[0].isdigit())
    assert [p.name for p in jobs] == [
        "0-algo=ppo,env=CartPole,experiment=smoke,seed=0",
        "1-algo=ppo,env=CartPole,experiment=smoke,seed=1",
    ]
    summaries = [json.loads((p / "summary.json").read_text()) for p in jobs]
    assert [(s["status"], s["total_steps"], s["seed"]) for s in summaries] == [("completed", 600, 0), ("completed", 600, 1)]
    # each job ran in a Ray worker process, apart from the driver and from each other
    pids = [
        next(line for line in (p / "rlrun.log").read_text().splitlines() if " pid " in line).split(" pid ")[1].split(",")[0]
        for p in jobs
    ]
    assert len(set(pids)) == 2
    config = (jobs[0] / ".hydra" / "hydra.yaml").read_text()
    assert "RlrunRayLauncher" in config
    assert (sweep_dir / "sweep.csv").exists()  # the sweep summary ran in the driver
    assert [s["torch_threads"] for s in summaries] == [1, 1]  # one per CPU a job holds (num_cpus=1)
