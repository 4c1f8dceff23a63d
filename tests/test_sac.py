"""SAC's loss pieces against hand-computed or numerical references."""

import math

import numpy as np
import pytest
import torch
from conftest import build_agent, random_batch

from rlrun.algos.sac import SAC, SACConfig, tanh_gaussian_log_prob


def test_tanh_gaussian_log_prob_matches_numerical_density():
    # Density of a = tanh(u), u ~ N(mean, std), from finite differences of the Normal CDF.
    mean, std = 0.3, 0.8
    normal = torch.distributions.Normal(torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64))
    h = 1e-6
    for a in [-0.95, -0.5, 0.0, 0.4, 0.99]:
        upper = normal.cdf(torch.atanh(torch.tensor(a + h, dtype=torch.float64)))
        lower = normal.cdf(torch.atanh(torch.tensor(a - h, dtype=torch.float64)))
        numerical = math.log((upper - lower).item() / (2 * h))
        u = torch.atanh(torch.tensor([[a]], dtype=torch.float64))
        analytic = tanh_gaussian_log_prob(
            u, torch.tensor([[mean]], dtype=torch.float64), torch.tensor([[math.log(std)]], dtype=torch.float64)
        )
        assert analytic.item() == pytest.approx(numerical, abs=1e-4), a


def test_log_prob_sums_over_action_dimensions():
    u = torch.tensor([[0.2, -1.0]])
    mean, log_std = torch.zeros(1, 2), torch.zeros(1, 2)
    joint = tanh_gaussian_log_prob(u, mean, log_std)
    separate = sum(tanh_gaussian_log_prob(u[:, i : i + 1], mean[:, i : i + 1], log_std[:, i : i + 1]) for i in range(2))
    torch.testing.assert_close(joint, separate)


def make_agent(**overrides) -> SAC:
    return build_agent(SAC, SACConfig(hidden_sizes=(16, 16), batch_size=4, **overrides))


def test_exploration_draws_the_action_that_sample_draws():
    agent = make_agent()
    obs = torch.tensor([[0.1, -0.4, 0.7], [0.3, 0.2, -0.5]])  # a vector step of two envs
    torch.manual_seed(3)
    actions = agent.explore(obs)
    torch.manual_seed(3)
    expected, _ = agent.actor.sample(obs)
    assert actions.shape == (2, 1)
    torch.testing.assert_close(actions, expected.detach(), rtol=0, atol=0)
    assert not torch.equal(actions, agent.explore(obs))  # and it is random


def test_critic_target_bootstraps_on_truncation_but_not_on_termination():
    agent = make_agent(gamma=0.9)
    data = random_batch([1.0, 0.0])
    torch.manual_seed(2)
    target = agent.critic_target(data)
    # Recompute the soft value of s' with the same noise.
    torch.manual_seed(2)
    next_action, next_log_prob = agent.actor.sample(data.next_obs)
    soft_value = agent.target_critic(data.next_obs, next_action).min(0).values - agent.log_alpha.exp() * next_log_prob
    # Terminal transition: the reward alone. Truncated (not terminated): reward + γ V(s').
    assert target[0].item() == 1.5
    torch.testing.assert_close(target[1], 1.5 + 0.9 * soft_value[1].detach())
    assert abs(soft_value[1].item()) > 1e-3  # the bootstrap term is really there


def test_critic_target_takes_the_minimum_over_critics():
    agent = make_agent(gamma=1.0, init_temperature=1e-8)
    with torch.no_grad():
        agent.target_critic.layers[-1].bias[1] += 100.0  # make the second critic optimistic
    data = random_batch([0.0, 0.0])
    torch.manual_seed(3)
    target = agent.critic_target(data)
    torch.manual_seed(3)
    next_action, _ = agent.actor.sample(data.next_obs)
    q = agent.target_critic(data.next_obs, next_action)
    torch.testing.assert_close(target, 1.5 + q[0], atol=1e-5, rtol=0)


def test_temperature_moves_toward_target_entropy():
    data = random_batch([0.0] * 4)
    # 1-D actions: entropy target -1. A target far above what the policy has makes α grow...
    agent = make_agent(target_entropy=50.0)
    before = agent.log_alpha.item()
    for _ in range(5):
        agent.update(data)
    assert agent.log_alpha.item() > before
    # ...and one far below makes it shrink.
    agent = make_agent(target_entropy=-50.0)
    before = agent.log_alpha.item()
    for _ in range(5):
        agent.update(data)
    assert agent.log_alpha.item() < before


def test_actions_are_rescaled_to_the_env_bounds():
    agent = make_agent()
    np.testing.assert_allclose(agent.actions.to_env(np.array([-1.0, 0.0, 1.0])), [-2.0, 0.0, 2.0])
    np.testing.assert_allclose(agent.actions.to_unit(agent.actions.to_env(np.array([0.3]))), [0.3], rtol=1e-6)
    action = agent.act(np.zeros(3, dtype=np.float32))
    assert action.shape == (1,) and -2.0 <= action[0] <= 2.0


def test_update_changes_all_networks_and_keeps_targets_lagging():
    agent = make_agent(tau=0.5)
    actor_before = [p.clone() for p in agent.actor.parameters()]
    target_before = [p.clone() for p in agent.target_critic.parameters()]
    agent.update(random_batch([0.0, 1.0, 0.0, 0.0]))
    assert all(not torch.equal(a, b) for a, b in zip(actor_before, agent.actor.parameters()))
    for old_target, target, critic in zip(target_before, agent.target_critic.parameters(), agent.critic.parameters()):
        torch.testing.assert_close(target, 0.5 * old_target + 0.5 * critic)
