"""CrossQ: batch renormalisation against hand computations, the joint critic pass, the
networks' modes, the policy delay, and a run through the command line."""

import copy
import json

import numpy as np
import pytest
import torch
from conftest import build_agent, random_batch

from rlrun.algos.crossq import RENORM_EPS, BatchRenorm, CrossQ, CrossQConfig

# ----- batch renormalisation ------------------------------------------------------------------


def batch_of(rows):
    return torch.tensor(rows, dtype=torch.float64)


def renorm(features, **kwargs):
    layer = BatchRenorm(features, **kwargs).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([2.0, 0.5]))
        layer.bias.copy_(torch.tensor([1.0, -1.0]))
    return layer


X = [[1.0, 10.0], [2.0, 14.0], [6.0, 12.0]]  # feature 0: mean 3, biased variance 14/3; feature 1: 12, 8/3


def test_during_warmup_it_is_batch_normalisation_and_updates_the_running_statistics():
    layer = renorm(2, momentum=0.1, warmup_steps=5)
    out = layer(batch_of(X))
    mean, var = np.array([3.0, 12.0]), np.array([14 / 3, 8 / 3])
    expected = (np.array(X) - mean) / np.sqrt(var + RENORM_EPS) * [2.0, 0.5] + [1.0, -1.0]
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-12)
    # μ ← μ + m(μ_B − μ) from 0, σ² ← σ² + m(σ_B² − σ²) from 1.
    np.testing.assert_allclose(layer.running_mean.numpy(), 0.1 * mean, rtol=1e-12)
    np.testing.assert_allclose(layer.running_var.numpy(), 0.9 + 0.1 * var, rtol=1e-12)
    assert layer.steps.item() == 1


def test_after_warmup_the_renormalisation_corrects_towards_the_running_statistics():
    layer = renorm(2, momentum=0.1, warmup_steps=0)
    # Feature 0's running statistics lie close to the batch's (no clipping); feature 1's σ is
    # so small that r and d clip at r_max = 3 and d_max = 5.
    running_mean, running_var = np.array([2.5, 11.0]), np.array([4.0, 0.01])
    layer.running_mean.copy_(torch.tensor(running_mean))
    layer.running_var.copy_(torch.tensor(running_var))
    x = batch_of(X).requires_grad_(True)
    out = layer(x)

    mean, std = np.array([3.0, 12.0]), np.sqrt(np.array([14 / 3, 8 / 3]) + RENORM_EPS)
    running_std = np.sqrt(running_var + RENORM_EPS)
    r = np.clip(std / running_std, 1 / 3, 3)
    d = np.clip((mean - running_mean) / running_std, -5, 5)
    assert r[1] == 3 and d[1] == 5  # the clipped case is exercised
    expected = ((np.array(X) - mean) / std * r + d) * [2.0, 0.5] + [1.0, -1.0]
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-12)
    # Unclipped, the output is the running statistics' normalisation...
    np.testing.assert_allclose(
        out[:, 0].detach().numpy(), (np.array(X)[:, 0] - running_mean[0]) / running_std[0] * 2.0 + 1.0, rtol=1e-12
    )
    # ...but the gradient is batch normalisation's, scaled by r: r and d are constants, and
    # the batch mean's share makes a feature's gradients sum to zero over the batch.
    out[:, 0].sum().backward()
    np.testing.assert_allclose(x.grad[:, 0].numpy(), 0.0, atol=1e-12)
    np.testing.assert_allclose(layer.running_mean.numpy(), running_mean + 0.1 * (mean - running_mean), rtol=1e-12)


def test_in_evaluation_mode_it_uses_the_running_statistics_and_changes_nothing():
    layer = renorm(2, warmup_steps=0).eval()
    layer.running_mean.copy_(torch.tensor([1.0, -2.0]))
    layer.running_var.copy_(torch.tensor([4.0, 9.0]))
    out = layer(batch_of(X[:1]))  # a batch of one, as when acting
    expected = (np.array(X[:1]) - [1.0, -2.0]) / np.sqrt(np.array([4.0, 9.0]) + RENORM_EPS) * [2.0, 0.5] + [1.0, -1.0]
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-12)
    assert layer.steps.item() == 0 and layer.running_mean.tolist() == [1.0, -2.0]


def test_ensemble_members_have_their_own_statistics():
    torch.manual_seed(0)
    x = torch.randn(3, 8, 4)
    ensemble = BatchRenorm(4, ensemble_size=3, warmup_steps=0)
    singles = [BatchRenorm(4, warmup_steps=0) for _ in range(3)]
    for i, single in enumerate(singles):
        with torch.no_grad():
            ensemble.running_var[i] = single.running_var.fill_(0.5 + i)
            ensemble.weight[i] = single.weight.fill_(1.0 + i)
    out = ensemble(x)
    for i, single in enumerate(singles):
        torch.testing.assert_close(out[i], single(x[i]))
        torch.testing.assert_close(ensemble.running_mean[i, 0], single.running_mean)


# ----- the agent ----------------------------------------------------------------------------------


def make_agent(**overrides) -> CrossQ:
    settings = dict(actor_hidden_sizes=(16, 16), critic_hidden_sizes=(32, 32), batch_size=4) | overrides
    return build_agent(CrossQ, CrossQConfig(**settings))


def renorm_layers(network):
    return [m for m in network.modules() if isinstance(m, BatchRenorm)]


def test_the_critics_see_current_and_next_state_actions_in_one_pass():
    agent = make_agent(gamma=0.9)
    data = random_batch([1.0, 0.0, 0.0, 0.0])
    critic = copy.deepcopy(agent.critic).train()
    torch.manual_seed(2)
    loss, q = agent.critic_loss(data, torch.tensor(0.5))
    loss.backward()

    # By hand: one training-mode pass over [s; s'] and [a; a'], the next half as a constant.
    torch.manual_seed(2)
    next_action, next_log_prob = agent.actor.sample(data.next_obs)
    both = critic(torch.cat([data.obs, data.next_obs]), torch.cat([data.actions, next_action.detach()]))
    torch.testing.assert_close(q, both[:, :4])
    # y = r + γ (1 − terminated)(min_i Q_i(s', a') − α log π(a'|s')): the terminal row is r alone.
    soft_value = both[:, 4:].detach().min(0).values - 0.5 * next_log_prob.detach()
    target = 1.5 + 0.9 * torch.tensor([0.0, 1, 1, 1]) * soft_value
    assert abs(target[1].item() - 1.5) > 1e-3  # the bootstrap term is really there
    expected_loss = 0.5 * ((both[:, :4] - target) ** 2).mean(1).sum()
    torch.testing.assert_close(loss, expected_loss)
    # Gradients flow through Q(s, a) and through the statistics both halves share, not
    # through Q(s', a') as a value.
    expected_loss.backward()
    for mine, reference in zip(agent.critic.parameters(), critic.parameters()):
        torch.testing.assert_close(mine.grad, reference.grad)
    # The current half alone would be normalised with other statistics.
    assert not torch.allclose(q, copy.deepcopy(agent.critic).train()(data.obs, data.actions))


def test_acting_and_evaluating_use_running_statistics_and_change_none():
    agent = make_agent()
    agent.update(random_batch([0.0] * 4))
    stats = copy.deepcopy(agent.state_dict())
    obs = torch.tensor([0.1, -0.4, 0.7])
    agent.explore(obs)
    action = agent.act(obs.numpy())
    assert action.shape == (1,) and -2.0 <= action[0] <= 2.0
    for name in ("actor", "critic"):
        for key, value in stats[name].items():
            assert torch.equal(value, agent.state_dict()[name][key]), f"{name}.{key}"
    assert not agent.actor.training and not agent.critic.training


def test_the_actor_and_temperature_learn_every_policy_delay_critic_updates():
    agent = make_agent(policy_delay=3)
    data = random_batch([0.0] * 4)
    actor_before = [p.clone() for p in agent.actor.parameters()]
    critic_before = [p.clone() for p in agent.critic.parameters()]
    alpha_before = agent.log_alpha.item()
    metrics = [agent.update(data) for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(actor_before, agent.actor.parameters()))
    assert agent.log_alpha.item() == alpha_before and "losses/actor" not in metrics[-1]
    assert all(not torch.equal(a, b) for a, b in zip(critic_before, agent.critic.parameters()))
    metrics = agent.update(data)
    assert all(not torch.equal(a, b) for a, b in zip(actor_before, agent.actor.parameters()))
    assert agent.log_alpha.item() != alpha_before and {"losses/actor", "losses/alpha", "train/entropy"} <= set(metrics)
    # Each network's layers counted their own training passes: the critics one per update, the actor one per actor update.
    assert {layer.steps.item() for layer in renorm_layers(agent.critic)} == {3}
    assert {layer.steps.item() for layer in renorm_layers(agent.actor)} == {1}


def test_there_are_no_target_networks_and_adam_uses_the_papers_beta1_for_the_networks():
    agent = make_agent()
    assert set(agent.state_dict()) == {
        "actor",
        "critic",
        "log_alpha",
        "actor_optimizer",
        "critic_optimizer",
        "alpha_optimizer",
        "critic_updates",
    }
    assert agent.critic_optimizer.betas == agent.actor_optimizer.betas == (0.5, 0.999)
    assert agent.alpha_optimizer.betas == (0.9, 0.999)
    assert len(renorm_layers(agent.critic)) == 3 and len(renorm_layers(agent.actor)) == 3


def test_a_loaded_state_continues_identically():
    data = random_batch([0.0, 1.0, 0.0, 0.0])
    agent = make_agent(renorm_warmup_steps=2, policy_delay=2)
    for _ in range(3):
        agent.update(data)
    other = make_agent(renorm_warmup_steps=2, policy_delay=2)
    other.load_state_dict(copy.deepcopy(agent.state_dict()))
    torch.manual_seed(7)
    first = agent.update(data)
    torch.manual_seed(7)
    second = other.update(data)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


# ----- the command line ---------------------------------------------------------------------------


def test_a_smoke_run_trains_evaluates_and_checkpoints(rlrun, tmp_path):
    result = rlrun("experiment=smoke", "algo=crossq", "env=Pendulum", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["algo"] == "crossq" and np.isfinite(summary["eval_return_mean"])
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*.pt")) == ["step_000000300.pt", "step_000000600.pt"]
    last = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if "losses/critic" in line][-1]
    assert {"losses/critic", "losses/actor", "losses/alpha", "train/alpha", "train/q_mean", "train/entropy"} <= set(last)


@pytest.mark.parametrize(
    "override, message",
    [
        ("algo.adam_beta1=1", "algo.adam_beta1=1.0 must lie in [0.0, 1.0)"),
        ("algo.batch_norm_momentum=0", "algo.batch_norm_momentum=0.0 must lie in (0.0, 1.0]"),
        ("algo.critic_hidden_sizes=[]", "algo.critic_hidden_sizes=[] needs at least one layer"),
    ],
)
def test_bad_settings_get_one_line(rlrun, tmp_path, override, message):
    result = rlrun("algo=crossq", "env=Pendulum", override, f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"rlrun: error: {message}"), result.stderr
    assert not (tmp_path / "run").exists()
