"""Runs that are stopped or go wrong keep their work: signals, divergence, a full disk."""

import json
import os
import signal

import pytest
import torch
from conftest import checkpoint_file, run_rlrun, start_rlrun, wait_for
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlrun.core.run import Run

SAC_PENDULUM = ["experiment=smoke", "algo=sac", "env=Pendulum"]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_checkpoints_flushes_and_exits_with_one_line(tmp_path, sig):
    run_dir = tmp_path / "run"
    process = start_rlrun(*SAC_PENDULUM, "total_steps=20000", "checkpoint.every=300", f"hydra.run.dir={run_dir}")
    wait_for(checkpoint_file(run_dir, 300), process)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 128 + sig
    last_line = stderr.strip().splitlines()[-1]
    summary = json.loads((run_dir / "summary.json").read_text())
    step = summary["total_steps"]
    assert summary["status"] == "interrupted" and summary["signal"] == sig.name and 300 <= step < 20000
    assert last_line == (
        f"rlrun: {sig.name} at step {step}: saved {checkpoint_file(run_dir, step)}; continue with: rlrun resume={run_dir}"
    )
    assert torch.load(checkpoint_file(run_dir, step), weights_only=True)["step"] == step
    # TensorBoard was flushed on the way out: its last episode return is the last one logged.
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert events.Scalars("train/episode_return")[-1].step == max(r["step"] for r in rows if "train/episode_return" in r)
    assert max(r["step"] for r in rows) <= step


def test_a_second_interrupt_stops_at_once():
    run = Run.__new__(Run)  # only its signal state: no folder, no environments
    run.stop_signal = run.checkpoint_signal = run.requeue = None
    # As in a terminal (a shell's background job starts with SIGINT ignored, which rlrun keeps).
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with run.stopping_on_signals():
            os.kill(os.getpid(), signal.SIGINT)
            assert run.stop_signal == "SIGINT"  # the first asks for a clean stop
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers put back
    finally:
        signal.signal(signal.SIGINT, outer)


# Training that turns NaN after 350 updates: every reward is NaN from then on.
NAN_AFTER_350_UPDATES = """
import torch
from rlrun.algos.sac import SAC
original, calls = SAC.update, [0]
def update(self, batch):
    calls[0] += 1
    if calls[0] > 350:
        batch = batch._replace(rewards=batch.rewards * float("nan"))
    return original(self, batch)
SAC.update = update
"""


def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    # learning_starts=200: update 350 happens at step 550; the check at the next log step (600)
    # catches it, before the checkpoint at 600 is written.
    result = run_rlrun(*SAC_PENDULUM, "total_steps=900", f"hydra.run.dir={run_dir}", patch=NAN_AFTER_350_UPDATES)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"rlrun: error: training diverged by step 600: losses/critic is NaN or infinite (a training metric); "
        f"the last good checkpoint {checkpoint_file(run_dir, 300)} is intact"
    ]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt", "step_000000300.pt"]
    good = torch.load(checkpoint_file(run_dir, 300), weights_only=True)
    assert all(torch.isfinite(t).all() for t in good["agent"]["critic"].values())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged" and "losses/critic" in summary["error"]


# A disk that fills up while the second checkpoint (step 600) is written: half the file, then ENOSPC.
DISK_FULL_AT_SECOND_CHECKPOINT = """
import errno, torch
original = torch.save
def save(obj, path, *args, **kwargs):
    if "step_000000600" in str(path):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    return original(obj, path, *args, **kwargs)
torch.save = save
"""


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    result = run_rlrun(*SAC_PENDULUM, f"hydra.run.dir={run_dir}", patch=DISK_FULL_AT_SECOND_CHECKPOINT)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"rlrun: error: cannot write checkpoint {checkpoint_file(run_dir, 600)}: No space left on device; "
        f"the previous checkpoint {checkpoint_file(run_dir, 300)} is intact"
    ]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt", "step_000000300.pt"]  # no .tmp left
    assert torch.load(checkpoint_file(run_dir, 300), weights_only=True)["step"] == 300
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "No space left on device" in summary["error"]

    # Once there is room again, the same folder continues from the intact checkpoint.
    resumed = run_rlrun(f"resume={run_dir}")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
