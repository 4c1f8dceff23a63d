"""Checkpoint files: atomic, pruned to the newest few, and loaded safely with clear errors."""

import numpy as np
import pytest
import torch
from conftest import build_agent

from rlrun.algos.sac import SAC, SACConfig
from rlrun.blocks.state import Checkpointed
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


def test_an_agent_state_without_a_declared_part_gets_one_line():
    agent = build_agent(SAC, SACConfig(hidden_sizes=(16, 16)))
    state = agent.state_dict()
    assert list(state) == list(SAC.checkpointed)
    del state["log_alpha"], state["alpha_optimizer"]
    with pytest.raises(
        ConfigError, match=r"^the checkpoint's SAC state lacks log_alpha, alpha_optimizer: .*start a new run folder$"
    ):
        agent.load_state_dict(state)


def test_declared_state_restores_every_kind_of_part():
    """Networks and optimisers through their state_dict, a learnt tensor in place (its
    optimiser holds it), plain tensors, NumPy arrays, random generators, numbers and nested paths."""

    class Agent(Checkpointed):
        checkpointed = {
            "net": "net",
            "log_alpha": "log_alpha",
            "scale": "scale",
            "rng": "rng",
            "count": "count",
            "returns": "stats.returns",
        }

        def __init__(self, seed):
            torch.manual_seed(seed)
            self.device = torch.device("cpu")
            self.net = torch.nn.Linear(2, 2)
            self.log_alpha = torch.zeros((), requires_grad=True)
            self.scale, self.rng, self.count = torch.ones(()), np.random.default_rng(seed), 0
            self.stats = type("Stats", (), {})()
            self.stats.returns = np.zeros(3)

    saved = Agent(1)
    with torch.no_grad():
        saved.log_alpha += 0.5
    saved.scale, saved.count, saved.stats.returns = torch.tensor(3.0), 7, np.array([1.0, 2.0, 3.0])
    saved.rng.random()
    restored = Agent(2)
    held = restored.log_alpha
    restored.load_state_dict(saved.state_dict())
    torch.testing.assert_close(restored.net.state_dict(), saved.net.state_dict())
    assert restored.log_alpha is held and held.item() == 0.5
    assert restored.scale.item() == 3.0 and restored.count == 7
    assert restored.stats.returns.tolist() == [1.0, 2.0, 3.0] and restored.stats.returns.dtype == np.float64
    assert restored.rng.random() == saved.rng.random()
