"""DQN: the TD targets, the dueling head, the Q-network's torso, ε's schedule, the CLI."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from rlrun.algos.dqn import DQN, DQNConfig, DuelingHead, QNetwork, linear_epsilon
from rlrun.blocks.buffers import Batch
from rlrun.blocks.nets import NatureCNN
from rlrun.config import EnvConfig
from rlrun.core import checkpoint
from rlrun.envs.make import env_spaces

SCALARS = {"losses/td", "train/q_mean", "train/epsilon", "eval/return_mean", "eval/return_std", "perf/sps"}


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here on one torch thread (conftest.one_torch_thread)."""


class FixedQ(nn.Module):
    """A stand-in network whose Q-values are given, whatever the observation."""

    def __init__(self, values: list[list[float]]) -> None:
        super().__init__()
        self.values = torch.tensor(values)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.values


def agent_with(online: list[list[float]], target: list[list[float]], double: bool, gamma: float = 0.9) -> DQN:
    obs_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    agent = DQN(DQNConfig(gamma=gamma, double=double), obs_space, gym.spaces.Discrete(3), torch.device("cpu"), 0)
    agent.q, agent.target_q = FixedQ(online), FixedQ(target)
    return agent


def next_state_batch(rewards: list[float], terminated: list[float]) -> Batch:
    n = len(rewards)
    obs = torch.zeros(n, 4)
    return Batch(obs, torch.zeros(n, dtype=torch.int64), torch.tensor(rewards), obs, torch.tensor(terminated))


# Two next states: the online and target networks disagree on the best action in both.
ONLINE = [[1.0, 5.0, 2.0], [4.0, 0.0, 3.0]]  # argmax: action 1, action 0
TARGET = [[10.0, 3.0, 7.0], [2.0, 6.0, 8.0]]  # max: 10 (action 0), 8 (action 2)


def test_double_dqn_target_uses_online_argmax_and_target_value():
    agent = agent_with(ONLINE, TARGET, double=True)
    y = agent.td_target(next_state_batch([1.0, -1.0], [0.0, 0.0]))
    # y = r + γ Q̄(s', argmax_a Q(s', a)): Q̄(s'_1, 1) = 3, Q̄(s'_2, 0) = 2
    torch.testing.assert_close(y, torch.tensor([1.0 + 0.9 * 3.0, -1.0 + 0.9 * 2.0]))


def test_vanilla_target_uses_the_max_of_the_target_network():
    agent = agent_with(ONLINE, TARGET, double=False)
    y = agent.td_target(next_state_batch([1.0, -1.0], [0.0, 0.0]))
    torch.testing.assert_close(y, torch.tensor([1.0 + 0.9 * 10.0, -1.0 + 0.9 * 8.0]))


@pytest.mark.parametrize("double", [False, True])
def test_termination_stops_bootstrapping(double):
    agent = agent_with(ONLINE, TARGET, double=double)
    y = agent.td_target(next_state_batch([1.0, -1.0], [1.0, 1.0]))
    torch.testing.assert_close(y, torch.tensor([1.0, -1.0]))


def test_update_descends_the_huber_loss_toward_the_target():
    obs_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    torch.manual_seed(0)
    agent = DQN(DQNConfig(lr=1e-2, gamma=0.0), obs_space, gym.spaces.Discrete(2), torch.device("cpu"), 0)
    obs = torch.randn(8, 4)
    batch = Batch(obs, torch.ones(8, dtype=torch.int64), torch.full((8,), 0.5), obs, torch.zeros(8))
    losses = [agent.update(batch)["losses/td"] for _ in range(50)]
    assert not losses[0].requires_grad
    assert losses[-1] < 0.1 * losses[0]  # with γ = 0 the target is r = 0.5 for action 1


def test_dueling_advantage_is_mean_centred():
    torch.manual_seed(0)
    head = DuelingHead(8, 5)
    features = torch.randn(16, 8)
    q = head(features)
    value = head.value(features)
    advantage = head.advantage(features)
    torch.testing.assert_close((q - value).mean(dim=1), torch.zeros(16), atol=1e-6, rtol=0)
    torch.testing.assert_close(q - value, advantage - advantage.mean(dim=1, keepdim=True))


def test_q_network_picks_mlp_or_nature_cnn_and_head():
    vector = QNetwork(gym.spaces.Box(-1.0, 1.0, (4,), np.float32), 3, (16, 8), dueling=True)
    assert isinstance(vector.head, DuelingHead) and vector(torch.zeros(2, 4)).shape == (2, 3)
    frames = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    cnn = QNetwork(frames, 6, (16,), dueling=False)
    assert isinstance(cnn.torso, NatureCNN) and isinstance(cnn.head, nn.Linear)
    assert cnn(torch.zeros(2, 4, 84, 84, dtype=torch.uint8)).shape == (2, 6)


def test_epsilon_falls_linearly_then_stays():
    assert linear_epsilon(0, 1.0, 0.05, 100) == 1.0
    assert linear_epsilon(50, 1.0, 0.05, 100) == pytest.approx(0.525)
    assert linear_epsilon(100, 1.0, 0.05, 100) == 0.05
    assert linear_epsilon(10_000, 1.0, 0.05, 100) == 0.05
    assert linear_epsilon(0, 1.0, 0.05, 0) == 0.05  # exploration_fraction = 0


def _check_run_folder(run_dir, env_id: str, total_steps: int, extra_scalars: set[str] = frozenset()) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["total_steps"] == total_steps
    assert summary["algo"] == "dqn" and summary["env_id"] == env_id
    events = EventAccumulator(str(run_dir)).Reload()
    assert SCALARS | extra_scalars <= set(events.Tags()["scalars"])
    state = checkpoint.load(run_dir / "checkpoints" / f"step_{total_steps:09d}.pt")  # weights_only=True
    assert state["algo"] == "dqn" and state["env_id"] == env_id and state["step"] == total_steps
    return state


def test_smoke_run_on_cartpole(rlrun, tmp_path):
    run_dir = tmp_path / "run"
    result = rlrun("experiment=smoke", "algo=dqn", "env=CartPole", "threads=1", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    state = _check_run_folder(run_dir, "CartPole-v1", 600, {"train/episode_return"})
    hidden = tuple(state["config"]["algo"]["hidden_sizes"])
    env = gym.make("CartPole-v1")
    agent = DQN(DQNConfig(hidden_sizes=hidden), env.observation_space, env.action_space, torch.device("cpu"), 0)
    agent.load_state_dict(state["agent"])
    torch.testing.assert_close(agent.q.state_dict(), state["agent"]["q"])
    assert agent.act(np.zeros(4, dtype=np.float32)) in (0, 1)


@pytest.mark.slow
def test_smoke_run_on_pong_with_the_cnn(rlrun, tmp_path):
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    # 300 steps: 100 of them learning (25 updates of the CNN), one greedy evaluation game.
    run_dir = tmp_path / "run"
    result = rlrun("experiment=smoke", "algo=dqn", "env=Pong", "total_steps=300", "threads=1", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    state = _check_run_folder(run_dir, "ALE/Pong-v5", 300)
    assert state["loop"]["buffer"]["frames"].shape[-2:] == (84, 84)  # the frame-once buffer
    summary = json.loads((run_dir / "summary.json").read_text())
    assert -21 <= summary["eval_return_mean"] <= 21  # the game score, unclipped
    obs_space, action_space = env_spaces(EnvConfig("ALE/Pong-v5", 300))
    agent = DQN(DQNConfig(), obs_space, action_space, torch.device("cpu"), 0)
    assert isinstance(agent.q.torso, NatureCNN)
    agent.load_state_dict(state["agent"])
    assert 0 <= agent.act(np.zeros(obs_space.shape, dtype=np.uint8)) < action_space.n
