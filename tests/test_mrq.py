"""MR.Q: its targets (two-hot, symlog, n-step returns, LAP priorities) against hand
computations, the sequence buffer's sampling rules, the hard target updates, and runs through
the command line."""

import copy
import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import build_agent

from rlrun.algos.mrq import MRQ, MRQConfig, TwoHot, lap_priority, multi_step_return, symexp, symlog
from rlrun.blocks.buffers import SequenceReplayBuffer
from rlrun.config import ConfigError

# ----- targets ------------------------------------------------------------------------------


def test_symlog_and_symexp_are_inverse_and_match_hand_values():
    x = torch.tensor([-(math.e**2 - 1), -1.0, 0.0, math.e - 1, 1000.0], dtype=torch.float64)
    np.testing.assert_allclose(symlog(x).numpy(), [-2.0, -math.log(2), 0.0, 1.0, math.log(1001)], rtol=1e-12)
    torch.testing.assert_close(symexp(symlog(x)), x)


def test_two_hot_round_trips_inside_the_support_and_clips_outside():
    two_hot = TwoHot(-3.0, 3.0, 7, torch.device("cpu"))  # bins symexp(-3..3): 0, ±(e−1), ±(e²−1), ±(e³−1)
    np.testing.assert_allclose(two_hot.bins.numpy(), symexp(torch.arange(-3.0, 4.0)).numpy(), rtol=1e-6)
    x = torch.tensor([-19.0, -5.0, -0.3, 0.0, 0.7, math.e - 1, 3.0, 19.08])
    weights = two_hot.encode(x)
    torch.testing.assert_close(weights.sum(-1), torch.ones(len(x)))
    torch.testing.assert_close((weights * two_hot.bins).sum(-1), x)
    # At most two neighbouring bins carry weight; 0.7 lies between bins 0 (at 3) and e − 1 (at 4).
    for w in weights:
        carried = np.flatnonzero(w.numpy() > 0)
        assert len(carried) in (1, 2) and carried[-1] - carried[0] <= 1
    expected = torch.zeros(7)
    expected[3], expected[4] = 1 - 0.7 / (math.e - 1), 0.7 / (math.e - 1)
    torch.testing.assert_close(weights[4], expected)
    # Outside the support: the nearest end bin.
    edges = two_hot.encode(torch.tensor([-1e6, 1e6]))
    assert edges[0, 0] == 1 and edges[1, -1] == 1
    # The cross-entropy is the two-hot distribution's entropy at its own logits, and larger elsewhere.
    logits = weights.clamp_min(1e-30).log()
    entropy = -(weights * logits).sum(-1)
    torch.testing.assert_close(two_hot.cross_entropy(logits, x), entropy)
    assert (two_hot.cross_entropy(torch.zeros_like(logits), x) > entropy).all()


def test_the_n_step_return_stops_at_a_termination_in_the_middle():
    rewards = torch.tensor([[1.0, 2.0, 4.0], [1.0, 2.0, 4.0], [1.0, 2.0, 4.0]])
    terminated = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    returns, bootstrap = multi_step_return(rewards, terminated, gamma=0.5)
    # No termination: 1 + 0.5·2 + 0.25·4, then γ³ times the next value. Terminated at the second
    # transition: its reward counts, the third (another episode's) does not, and no bootstrap.
    torch.testing.assert_close(returns, torch.tensor([3.0, 2.0, 1.0]))
    torch.testing.assert_close(bootstrap, torch.tensor([0.125, 0.0, 0.0]))


def test_lap_priority_is_the_larger_critic_error_floored_and_raised_to_alpha():
    q = torch.tensor([[0.0, 5.0, 2.0], [5.0, 1.0, 2.5]])  # (critics, batch)
    target = torch.tensor([1.0, 1.0, 2.0])
    # Errors |Q_i − y|: (1, 4), (4, 0), (0, 0.5) → max 4, 4, 0.5 → at least 1: 4, 4, 1 → √: 2, 2, 1.
    torch.testing.assert_close(lap_priority(q, target, alpha=0.5, min_priority=1.0), torch.tensor([2.0, 2.0, 1.0]))


# ----- the sequence buffer --------------------------------------------------------------------


def add(buffer, k, terminated=False, truncated=False):
    """Transition k: observation k, action k/100, reward k, next observation k + 0.5."""
    buffer.add_batch(
        np.array([[k]], np.float32), np.array([[k / 100]], np.float32), np.array([float(k)]),
        np.array([[k + 0.5]], np.float32), np.array([terminated]), np.array([truncated]),
    )  # fmt: skip


def test_sampled_windows_stay_in_one_episode_unless_it_terminates():
    buffer = SequenceReplayBuffer(20, (1,), (1,), torch.device("cpu"), seed=0, horizon=3)
    for k in range(4):  # an episode cut off by its time limit: windows from 0 and 1 only
        add(buffer, k, truncated=k == 3)
    for k in range(4, 6):  # one that terminates: windows from 4 and 5, running past the end
        add(buffer, k, terminated=k == 5)
    for k in range(6, 9):  # one still going: the window from 6 only
        add(buffer, k)
    assert np.flatnonzero(buffer.startable_host).tolist() == [0, 1, 4, 5, 6] and buffer.sampleable == 5
    assert buffer.any_terminated

    sample = buffer.sample_sequences(500, 3)
    starts = sample.start.tolist()
    assert set(starts) == {0, 1, 4, 5, 6}
    k = sample.obs[:, 0]
    torch.testing.assert_close(k, sample.start.float())
    window = k.unsqueeze(1) + torch.arange(3)  # consecutive transitions from the start
    torch.testing.assert_close(sample.rewards, window)
    torch.testing.assert_close(sample.next_obs[..., 0], window + 0.5)
    torch.testing.assert_close(sample.actions[..., 0], window / 100)
    torch.testing.assert_close(sample.terminated, (window == 5).float())


def test_overwritten_transitions_leave_no_windows_behind():
    buffer = SequenceReplayBuffer(5, (1,), (1,), torch.device("cpu"), seed=0, horizon=2)
    for k in range(7):  # one episode; transitions 0 and 1 are overwritten by 5 and 6
        add(buffer, k)
    # Windows (k, k + 1) with both stored: k = 2..5, in slots 2, 3, 4, 0.
    assert np.flatnonzero(buffer.startable_host).tolist() == [0, 2, 3, 4] and buffer.sampleable == 4
    sample = buffer.sample_sequences(300, 2)
    torch.testing.assert_close(sample.rewards[:, 1], sample.rewards[:, 0] + 1)


def test_starts_are_drawn_in_proportion_to_their_priorities():
    buffer = SequenceReplayBuffer(10, (1,), (1,), torch.device("cpu"), seed=0, horizon=1, initial_priority=2.0)
    for k in range(3):
        add(buffer, k)
    assert buffer.priority[:3].tolist() == [2.0, 2.0, 2.0]
    buffer.update_priorities(torch.tensor([0, 1, 1]), torch.tensor([1.0, 9.0, 3.0]))  # slot 1 keeps the larger
    assert buffer.priority[:3].tolist() == [1.0, 9.0, 2.0] and buffer.max_priority.item() == 9.0
    add(buffer, 3)  # a new transition gets the largest priority so far
    assert buffer.priority[3].item() == 9.0
    counts = np.bincount(buffer.sample_sequences(21_000, 1).start.numpy(), minlength=4)
    np.testing.assert_allclose(counts / counts.sum(), np.array([1, 9, 2, 9]) / 21, atol=0.01)


def test_the_buffer_state_round_trips():
    buffer = SequenceReplayBuffer(8, (1,), (1,), torch.device("cpu"), seed=0, horizon=2)
    for k in range(5):
        add(buffer, k, terminated=k == 2)
    buffer.update_priorities(torch.tensor([0]), torch.tensor([4.0]))
    restored = SequenceReplayBuffer(8, (1,), (1,), torch.device("cpu"), seed=1, horizon=2)
    restored.load_state_dict(copy.deepcopy(buffer.state_dict()))
    assert restored.sampleable == buffer.sampleable and restored.episode_length == buffer.episode_length == 2
    assert torch.equal(restored.sample_sequences(16, 2).start, buffer.sample_sequences(16, 2).start)
    add(buffer, 5), add(restored, 5)
    assert torch.equal(restored.startable, buffer.startable) and torch.equal(restored.priority, buffer.priority)


# ----- the agent ----------------------------------------------------------------------------


def make_agent(**overrides) -> MRQ:
    dims = dict(zs_dim=8, za_dim=4, zsa_dim=8, encoder_hidden_dim=16, value_hidden_dim=16, policy_hidden_dim=16)
    return build_agent(MRQ, MRQConfig(**(dims | dict(batch_size=4, buffer_size=100) | overrides)))


def filled_buffer(length=39):  # rewards 0, -1, -2, thirteen times each
    buffer = SequenceReplayBuffer(100, (3,), (1,), torch.device("cpu"), seed=0, horizon=5)
    rng = np.random.default_rng(0)
    for k in range(length):
        obs, next_obs = rng.normal(size=(2, 1, 3)).astype(np.float32)
        action = rng.uniform(-1, 1, size=(1, 1)).astype(np.float32)
        buffer.add_batch(obs, action, np.array([-float(k % 3)]), next_obs, np.array([k == 25]), np.array([False]))
    return buffer


def networks(agent, names):
    return {name: copy.deepcopy(getattr(agent, name).state_dict()) for name in names}


def same(a, b):
    return all(torch.equal(a[key], b[key]) for key in a)


def test_targets_are_hard_copies_taken_every_target_update_freq_updates():
    agent = make_agent(target_update_freq=3)
    buffer = filled_buffer()
    online, targets = ("encoder", "policy", "value"), ("encoder_target", "policy_target", "value_target")
    for update in range(7):
        before = networks(agent, online)
        old_targets = networks(agent, targets)
        old_scale = agent.reward_scale
        metrics = agent.update(buffer)
        now = networks(agent, targets)
        for name, target in zip(online, targets):
            if update % 3 == 0:  # a copy of the online network as it was before this update
                assert same(now[target], before[name])
                assert update == 0 or not same(now[target], old_targets[target])
            else:
                assert same(now[target], old_targets[target])
            # Critics and policy learn at every update, the encoder only at target updates.
            trained = name != "encoder" or update % 3 == 0
            assert same(networks(agent, online)[name], before[name]) != trained
        if update % 3 == 0:
            assert agent.target_reward_scale is old_scale
            torch.testing.assert_close(agent.reward_scale, torch.tensor(1.0))  # E|r| of rewards 0, -1, -2
            assert {"losses/encoder", "losses/dynamics", "losses/reward", "losses/termination"} <= set(metrics)
            assert metrics["losses/termination"] > 0  # the buffer holds a termination
        assert {"losses/value", "losses/actor", "train/q_mean"} <= set(metrics)


def test_the_encoder_trains_only_at_target_updates():
    agent = make_agent(target_update_freq=4)
    buffer = filled_buffer()
    agent.update(buffer)
    encoder = networks(agent, ("encoder",))["encoder"]
    for _ in range(3):
        agent.update(buffer)
    assert same(networks(agent, ("encoder",))["encoder"], encoder)


def test_a_loaded_state_continues_identically():
    agent, buffer = make_agent(target_update_freq=2), filled_buffer()
    agent.update(buffer)
    state, buffer_state = copy.deepcopy(agent.state_dict()), copy.deepcopy(buffer.state_dict())
    rng = torch.get_rng_state()
    first = [agent.update(buffer)["losses/value"] for _ in range(3)]
    other, other_buffer = make_agent(target_update_freq=2), filled_buffer(10)
    other.load_state_dict(state)
    other_buffer.load_state_dict(buffer_state)
    torch.set_rng_state(rng)
    assert [other.update(other_buffer)["losses/value"] for _ in range(3)] == first


def test_acting_is_deterministic_for_evaluation_and_noisy_in_training():
    agent = make_agent()
    obs = np.array([0.1, -0.2, 0.3], np.float32)
    assert np.array_equal(agent.act(obs), agent.act(obs)) and np.all(np.abs(agent.act(obs)) <= 2.0)
    explored = agent.explore(torch.tensor(obs).repeat(100, 1))
    assert explored.std() > 0.1 and explored.abs().max() <= 1.0
    exported = agent.policy_module()(torch.tensor(obs).unsqueeze(0))
    np.testing.assert_allclose(exported[0].detach().numpy(), agent.act(obs), rtol=1e-6)


def test_pixel_observations_are_refused_in_one_line():
    frames = gym.spaces.Box(0, 255, (3, 64, 64), np.uint8)
    with pytest.raises(ConfigError, match=r"^algo=mrq needs flat vector observations, got Box"):
        MRQ.check_spaces(MRQConfig(), frames, gym.spaces.Box(-1.0, 1.0, (1,), np.float32))


# ----- the command line ------------------------------------------------------------------------


def test_a_smoke_run_trains_evaluates_and_checkpoints(rlrun, tmp_path):
    result = rlrun("experiment=smoke", "algo=mrq", "env=Pendulum", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["algo"] == "mrq" and np.isfinite(summary["eval_return_mean"])
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*.pt")) == ["step_000000300.pt", "step_000000600.pt"]
    last = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if "losses/value" in line][-1]
    assert {"losses/encoder", "losses/reward", "losses/value", "losses/actor", "train/q_mean", "train/reward_scale"} <= set(last)
    assert all(np.isfinite(value) for value in last.values())


def test_a_resume_without_the_replay_buffer_refills_it_before_updating(rlrun, tmp_path):
    args = ["experiment=smoke", "algo=mrq", "env=Pendulum", "checkpoint.replay_buffer=false", f"hydra.run.dir={tmp_path}"]
    assert rlrun(*args).returncode == 0
    checkpoint = torch.load(tmp_path / "checkpoints" / "step_000000600.pt", weights_only=True)
    assert "buffer" not in checkpoint["loop"]  # the sequence buffer is a replay buffer, left out
    extended = rlrun(f"resume={tmp_path}", "total_steps=900")
    assert extended.returncode == 0, extended.stderr
    assert json.loads((tmp_path / "summary.json").read_text())["total_steps"] == 900
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = {row["step"]: row["losses/value"] for row in rows if "losses/value" in row}
    # No update while the 200 learning_starts transitions are stored again, then learning.
    assert losses[700] == losses[600] and losses[900] != losses[700]


@pytest.mark.parametrize(
    "override, message",
    [
        ("algo.reward_lower=10", "algo.reward_lower=10.0 must be below algo.reward_upper=10.0"),
        ("algo.num_bins=1", "algo.num_bins=1 must be at least 2"),
        ("algo.min_priority=0", "algo.min_priority=0.0 must be positive"),
        (
            "algo.buffer_size=4 algo.batch_size=2",
            "algo.buffer_size=4 cannot hold a subsequence of 5 transitions (algo.enc_horizon, algo.q_horizon)",
        ),
        (
            "env=CartPole",
            "algo=mrq needs a Box action space, but CartPole-v1 has a discrete (Discrete(2)) one; algorithms that fit: ppo, dqn, rainbow",
        ),
    ],
)
def test_bad_settings_get_one_line(rlrun, tmp_path, override, message):
    environment = [] if override.startswith("env=") else ["env=Pendulum"]
    result = rlrun("algo=mrq", *environment, *override.split(), f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"rlrun: error: {message}"), result.stderr
    assert not (tmp_path / "run").exists()
