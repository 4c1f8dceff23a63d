"""TD3's and DDPG's loss pieces, and both through the CLI."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlrun.algos.ddpg import DDPG, DDPGConfig
from rlrun.algos.td3 import TD3, TD3Config
from rlrun.blocks.buffers import Batch
from rlrun.core import checkpoint

OBS_SPACE = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
ACTION_SPACE = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)


def make(cls, config):
    torch.manual_seed(0)
    return cls(config, OBS_SPACE, ACTION_SPACE, torch.device("cpu"), seed=0)


def batch(n: int, terminated: float = 0.0) -> Batch:
    torch.manual_seed(1)
    return Batch(torch.randn(n, 3), torch.rand(n, 2) * 2 - 1, torch.ones(n), torch.randn(n, 3), torch.full((n,), terminated))


def test_target_smoothing_noise_is_clipped_and_actions_stay_in_bounds():
    agent = make(TD3, TD3Config(hidden_sizes=(16,), policy_noise=10.0, noise_clip=0.3))
    next_obs = torch.randn(2000, 3)
    mean = agent.target_actor(next_obs).detach()
    smoothed = agent.smoothed_target_action(next_obs)
    assert smoothed.abs().max() <= 1.0
    offset = smoothed - mean
    assert offset.abs().max() <= 0.3 + 1e-6
    # With σ=10, P(|ε| < 0.3) ≈ 2.4%: nearly every offset sits exactly at the clip ±0.3,
    # except where the action bound cut it shorter.
    inside = (mean + 0.3 < 1.0) & (mean - 0.3 > -1.0)
    at_clip = torch.isclose(offset[inside].abs(), torch.tensor(0.3), atol=1e-6).float().mean()
    assert at_clip > 0.95


def test_td3_target_takes_the_smaller_critic_and_stops_at_terminations():
    agent = make(TD3, TD3Config(hidden_sizes=(16,), gamma=0.5, policy_noise=0.0))
    with torch.no_grad():
        agent.target_critic.layers[-1].bias[0] += 100.0  # the first critic is now optimistic
    data = batch(4)
    q = agent.target_critic(data.next_obs, agent.target_actor(data.next_obs))
    torch.testing.assert_close(agent.critic_target(data), 1.0 + 0.5 * q[1])
    torch.testing.assert_close(agent.critic_target(batch(4, terminated=1.0)), torch.ones(4))


def test_actor_and_targets_update_only_every_policy_delay_critic_updates():
    agent = make(TD3, TD3Config(hidden_sizes=(16,), policy_delay=3, tau=1.0))
    data = batch(8)
    actor_before = [p.clone() for p in agent.actor.parameters()]
    for _ in range(2):
        agent.update(data)
    assert all(torch.equal(a, b) for a, b in zip(actor_before, agent.actor.parameters()))
    assert not torch.equal(next(agent.critic.parameters()), next(agent.target_critic.parameters()))
    agent.update(data)
    assert not all(torch.equal(a, b) for a, b in zip(actor_before, agent.actor.parameters()))
    # τ = 1: the targets are now copies of the online networks.
    for target, online in zip(agent.target_critic.parameters(), agent.critic.parameters()):
        assert torch.equal(target, online)


def test_ddpg_is_td3_with_one_critic_no_smoothing_no_delay():
    agent = make(DDPG, DDPGConfig(hidden_sizes=(16,)))
    assert agent.critic.n == 1 and agent.config.policy_delay == 1
    next_obs = torch.randn(5, 3)
    torch.testing.assert_close(agent.smoothed_target_action(next_obs), agent.target_actor(next_obs))


def test_exploration_adds_clipped_gaussian_noise():
    agent = make(TD3, TD3Config(hidden_sizes=(16,), exploration_noise=0.5))
    obs = np.zeros(3, np.float32)
    actions = agent.explore(torch.zeros(500, 3))  # a vector step of 500 envs in the same state
    assert actions.abs().max() <= 1.0
    assert 0.3 < actions.std(0).mean() < 0.6
    np.testing.assert_allclose(agent.act(obs), agent.act(obs))  # evaluation is deterministic


@pytest.mark.parametrize("algo", ["td3", "ddpg"])
def test_smoke_run(rlrun, tmp_path, algo):
    run_dir = tmp_path / "run"
    result = rlrun("experiment=smoke", f"algo={algo}", "env=Pendulum", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["algo"] == algo
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # Learning started before the end: losses were logged, after learning_starts=200.
    loss_steps = [row["step"] for row in rows if "losses/critic" in row and "losses/actor" in row]
    assert loss_steps and min(loss_steps) > 200 and max(loss_steps) == 600
    assert [row["step"] for row in rows if "eval/return_mean" in row] == [300, 600]
    state = checkpoint.load(run_dir / "checkpoints" / "step_000000600.pt", algo=algo)
    assert state["step"] == 600 and "target_actor" in state["agent"]
