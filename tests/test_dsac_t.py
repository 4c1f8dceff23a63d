"""DSAC-T's loss pieces against hand-computed references, and its update's bookkeeping."""

import json

import numpy as np
import pytest
import torch
from conftest import build_agent, random_batch

from rlrun.algos.dsac_t import DSACT, DSACTConfig, critic_loss
from rlrun.core import checkpoint


def huber(x: float, delta: float) -> float:
    return 0.5 * x * x if abs(x) <= delta else delta * (abs(x) - 0.5 * delta)


def hand_loss(mean, std, target_mean, target_sample, std_average, xi, eps, delta):
    """The critic loss and its gradients, one scalar at a time."""
    total, d_mean, d_std = 0.0, [], []
    n = len(target_mean)
    for i in range(2):
        omega = std_average[i] ** 2
        row_loss, row_d_mean, row_d_std = 0.0, [], []
        for j in range(n):
            q, s = mean[i][j], std[i][j]
            weight = min(max(omega / (s * s + eps), 0.1), 10.0)
            bound = xi * std_average[i]
            clipped = q + min(max(target_sample[j] - q, -bound), bound)
            row_loss += weight * (huber(q - target_mean[j], delta) + s * (s * s - huber(q - clipped, delta)) / (s + eps))
            # d/dQ of the Huber term: the error, capped at ±δ; d/dσ: σ is constant elsewhere.
            error = q - target_mean[j]
            row_d_mean.append(weight * max(-delta, min(delta, error)) / n)
            row_d_std.append(weight * (s * s - huber(q - clipped, delta)) / (s + eps) / n)
        total += row_loss / n
        d_mean.append(row_d_mean)
        d_std.append(row_d_std)
    return total, d_mean, d_std


def test_critic_loss_and_its_gradients_match_a_hand_computation():
    # Chosen so that each branch is taken: a weight clipped at 10 (σ tiny) and one at 0.1
    # (σ huge), a sampled target clipped from above and one from below, a mean error in
    # Huber's linear part (|−60| > δ = 50), and unclipped cases.
    mean_values = [[1.0, -2.0, 0.5, 3.0], [0.0, 1.5, -1.0, 70.0]]
    std_values = [[0.8, 0.01, 2.0, 1.2], [0.5, 1.0, 30.0, 0.3]]
    target_mean, target_sample = [1.5, -1.0, 0.0, 10.0], [8.0, -1.2, -9.0, 2.0]
    std_average = [1.5, 0.7]
    xi, eps, delta = 3.0, 0.1, 50.0

    mean = torch.tensor(mean_values, dtype=torch.float64, requires_grad=True)
    std = torch.tensor(std_values, dtype=torch.float64, requires_grad=True)
    loss = critic_loss(
        mean,
        std,
        torch.tensor(target_mean, dtype=torch.float64),
        torch.tensor(target_sample, dtype=torch.float64),
        torch.tensor(std_average, dtype=torch.float64),
        xi,
        eps,
        delta,
    )
    loss.backward()
    expected, d_mean, d_std = hand_loss(mean_values, std_values, target_mean, target_sample, std_average, xi, eps, delta)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(mean.grad.numpy(), d_mean, rtol=1e-12)
    np.testing.assert_allclose(std.grad.numpy(), d_std, rtol=1e-12)
    # The branches really were taken: weights 10 and 0.1, a clipped target, Huber's linear part.
    assert std_average[0] ** 2 / (0.01**2 + eps) > 10 and std_average[1] ** 2 / (30.0**2 + eps) < 0.1
    above, below = target_sample[0] - mean_values[0][0], mean_values[0][2] - target_sample[2]
    assert min(above, below) > xi * std_average[0]
    assert abs(mean_values[1][3] - target_mean[3]) > delta


def test_the_std_gradient_vanishes_where_sigma_squared_is_half_the_clipped_squared_error():
    # The authors' σ term settles at σ² = ½ (ŷ_z − Q)², within the clipping boundary.
    error = 1.2
    std = torch.tensor([[(0.5 * error**2) ** 0.5]] * 2, dtype=torch.float64, requires_grad=True)
    mean = torch.zeros(2, 1, dtype=torch.float64)
    loss = critic_loss(
        mean, std, torch.zeros(1, dtype=torch.float64), torch.tensor([error], dtype=torch.float64), torch.ones(2), 3.0, 0.1, 50.0
    )
    loss.backward()
    torch.testing.assert_close(std.grad, torch.zeros_like(std))


def make_agent(**overrides) -> DSACT:
    return build_agent(DSACT, DSACTConfig(hidden_sizes=(16, 16), batch_size=4, **overrides))


def test_targets_come_from_the_distribution_with_the_smaller_mean():
    agent = make_agent(gamma=0.9)
    with torch.no_grad():
        agent.target_critic.layers[-1].bias[1, 0, 0] += 100.0  # the second mean: optimistic
    data = random_batch([0.0, 0.0, 1.0])
    alpha = torch.tensor(0.3)
    torch.manual_seed(2)
    target_mean, target_sample = agent.critic_targets(data, alpha)

    # Recompute with the same random draws: a' from the target actor, then the return noise.
    torch.manual_seed(2)
    next_action, next_log_prob = agent.target_actor.sample(data.next_obs)
    noise = torch.randn(2, 3).clamp(-3, 3)
    next_mean, next_std = agent.target_critic(data.next_obs, next_action)
    soft_mean = next_mean[0] - 0.3 * next_log_prob
    soft_sample = next_mean[0] + next_std[0] * noise[0] - 0.3 * next_log_prob
    torch.testing.assert_close(target_mean[:2], 1.5 + 0.9 * soft_mean[:2])
    torch.testing.assert_close(target_sample[:2], 1.5 + 0.9 * soft_sample[:2])
    assert (target_mean[2].item(), target_sample[2].item()) == (1.5, 1.5)  # terminated: no bootstrap
    assert not torch.equal(target_mean, target_sample)  # the sample's noise is there


def test_the_std_average_starts_at_the_first_batch_and_then_moves_by_tau_b():
    agent = make_agent(tau_b=0.25)
    data = random_batch([0.0] * 4)
    with torch.no_grad():
        first_std = agent.critic(data.obs, data.actions)[1].mean(dim=1)
    agent.update(data)
    torch.testing.assert_close(agent.std_average, first_std)
    with torch.no_grad():
        second_std = agent.critic(data.obs, data.actions)[1].mean(dim=1)
    agent.update(data)
    torch.testing.assert_close(agent.std_average, 0.75 * first_std + 0.25 * second_std)


def test_actor_temperature_and_targets_move_every_policy_delay_critic_updates():
    agent = make_agent(policy_delay=2, tau=0.5)
    data = random_batch([0.0] * 4)

    def snapshot():
        return [
            torch.cat([p.flatten().clone() for p in module.parameters()])
            for module in (agent.critic, agent.actor, agent.target_actor, agent.target_critic)
        ] + [agent.log_alpha.detach().clone()]

    before = snapshot()
    agent.update(data)
    after_first = snapshot()
    changed = [not torch.equal(a, b) for a, b in zip(before, after_first)]
    assert changed == [True, False, False, False, False]  # the critics alone
    agent.update(data)
    assert all(not torch.equal(a, b) for a, b in zip(after_first, snapshot()))


def test_a_state_dict_round_trip_restores_the_running_statistics():
    agent = make_agent()
    data = random_batch([0.0] * 4)
    for _ in range(3):
        agent.update(data)
    restored = make_agent()
    restored.load_state_dict(agent.state_dict())
    assert restored.critic_updates == 3
    torch.testing.assert_close(restored.std_average, agent.std_average, rtol=0, atol=0)
    torch.manual_seed(5)
    expected = agent.update(data)
    torch.manual_seed(5)
    actual = restored.update(data)
    assert expected.keys() == actual.keys()
    for tag in expected:
        torch.testing.assert_close(actual[tag], expected[tag], rtol=0, atol=0)


def test_actions_stay_in_the_env_bounds_and_the_critics_output_positive_stds():
    agent = make_agent()
    action = agent.act(np.zeros(3, dtype=np.float32))
    assert action.shape == (1,) and -2.0 <= action[0] <= 2.0
    mean, std = agent.critic(torch.randn(5, 3), torch.rand(5, 1))
    assert mean.shape == std.shape == (2, 5) and bool((std > 0).all())


def test_smoke_run(rlrun, tmp_path):
    run_dir = tmp_path / "run"
    result = rlrun("experiment=smoke", "algo=dsac_t", "env=Pendulum", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["algo"] == "dsac_t"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # Learning started after learning_starts=200, and the distributions' spread is logged.
    learning = [row for row in rows if "losses/critic" in row]
    assert learning and min(row["step"] for row in learning) > 200 and learning[-1]["step"] == 600
    assert learning[-1]["train/q_std"] > 0 and learning[-1]["train/q_std_average"] > 0
    assert [row["step"] for row in rows if "eval/return_mean" in row] == [300, 600]
    state = checkpoint.load(run_dir / "checkpoints" / "step_000000600.pt", algo="dsac_t")
    assert state["agent"]["critic_updates"] == 400 and state["agent"]["std_average"].shape == (2,)


@pytest.mark.parametrize(
    "override, message",
    [
        ("algo.activation=tanh", "algo.activation='tanh' is not valid; choose one of: gelu, relu"),
        ("algo.tau_b=1.5", "algo.tau_b=1.5 must lie in [0.0, 1.0]"),
    ],
)
def test_bad_settings_fail_with_one_line(rlrun, tmp_path, override, message):
    result = rlrun("algo=dsac_t", "env=Pendulum", override, f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"rlrun: error: {message}"]
    assert not (tmp_path / "run").exists()
