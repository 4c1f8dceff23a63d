"""Checkpoint files: atomic, pruned to the newest few, and loaded safely with clear errors."""

import pytest
import torch

from rlrun.config import ConfigError
from rlrun.core import checkpoint

RUN_STATE = {"env": {}, "rng": {}, "metrics": None, "last_eval": None, "clock": {"elapsed": 0.0, "paused": 0.0}}


def saver(tmp_path, keep=2):
    return checkpoint.Checkpointer(tmp_path, "sac", "Pendulum-v1", {"seed": 0}, keep=keep)


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    checkpointer = saver(tmp_path, keep=2)
    for step in (100, 200, 300):
        checkpointer.save(step, {"w": torch.full((2,), float(step))}, {}, RUN_STATE)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_000000200.pt", "step_000000300.pt"]
    assert checkpoint.latest(tmp_path).name == "step_000000300.pt"
    state = checkpoint.load(checkpoint.latest(tmp_path), algo="sac")
    assert state["step"] == 300 and state["env_id"] == "Pendulum-v1" and torch.equal(state["agent"]["w"], torch.full((2,), 300.0))


def test_checkpoints_are_ordered_by_step_also_past_the_names_zero_padding(tmp_path):
    checkpointer = saver(tmp_path, keep=2)
    for step in (999_999_800, 999_999_900, 1_000_000_000, 1_000_000_100):
        checkpointer.save(step, {}, {}, RUN_STATE)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_1000000000.pt", "step_1000000100.pt"]
    assert checkpoint.latest(tmp_path).name == "step_1000000100.pt"


def test_a_checkpoint_of_another_algorithm_is_refused(tmp_path):
    path = saver(tmp_path).save(100, {}, {}, RUN_STATE)
    with pytest.raises(ConfigError, match="is from algo=sac, not algo=td3"):
        checkpoint.load(path, algo="td3")


def test_truncated_and_foreign_files_give_one_line_errors(tmp_path):
    path = saver(tmp_path).save(100, {"w": torch.zeros(1000)}, {}, RUN_STATE)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:500])
    with pytest.raises(ConfigError, match="cannot read checkpoint .*truncated.pt"):
        checkpoint.load(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(ConfigError, match="is not an rlrun checkpoint"):
        checkpoint.load(foreign)
    with pytest.raises(ConfigError, match="cannot read checkpoint"):
        checkpoint.load(tmp_path / "missing.pt")


def test_a_checkpoint_with_code_in_it_is_not_executed(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "agent": Payload()}, path)
    with pytest.raises(ConfigError, match="cannot read checkpoint"):
        checkpoint.load(path)
