"""The shared network pieces compute what their plain equivalents compute."""

import copy

import pytest
import torch
from torch import nn

from rlrun.nets import QEnsemble, mlp, polyak_update
from test_sac_math import batch, make_agent


def separate_critics(ensemble: QEnsemble) -> list[nn.Sequential]:
    """Each ensemble member as an ordinary MLP with the same weights."""
    critics = []
    for member in range(ensemble.n):
        layers = []
        for layer in ensemble.layers:
            linear = nn.Linear(*layer.weight.shape[1:])
            with torch.no_grad():
                linear.weight.copy_(layer.weight[member].T)
                linear.bias.copy_(layer.bias[member, 0])
            layers += [linear, nn.ReLU()]
        critics.append(nn.Sequential(*layers[:-1]))
    return critics


def test_ensemble_critic_matches_separate_critics_in_values_and_gradients():
    torch.manual_seed(0)
    ensemble = QEnsemble(obs_dim=5, action_dim=2, hidden_sizes=(32, 16), n=2)
    critics = separate_critics(ensemble)
    obs, action = torch.randn(64, 5), torch.randn(64, 2)

    q = ensemble(obs, action)
    expected = torch.stack([c(torch.cat([obs, action], -1)).squeeze(-1) for c in critics])
    torch.testing.assert_close(q, expected)

    q.square().mean().backward()
    expected.square().mean().backward()
    for i, layer in enumerate(ensemble.layers):
        for member, critic in enumerate(critics):
            linear = critic[2 * i]
            torch.testing.assert_close(layer.weight.grad[member], linear.weight.grad.T)
            torch.testing.assert_close(layer.bias.grad[member, 0], linear.bias.grad)


def test_one_ensemble_member_alone_matches_the_whole_ensemble_in_values_and_gradients():
    torch.manual_seed(0)
    ensemble = QEnsemble(obs_dim=5, action_dim=2, hidden_sizes=(32, 16), n=2)
    obs = torch.randn(64, 5)
    action_alone = torch.randn(64, 2, requires_grad=True)
    action_all = action_alone.detach().clone().requires_grad_(True)

    for member in range(ensemble.n):
        q_alone = ensemble.member(member, obs, action_alone)
        q_all = ensemble(obs, action_all)[member]
        torch.testing.assert_close(q_alone, q_all)
        # TD3's actor loss differentiates Q_1 with respect to the action.
        (grad_alone,) = torch.autograd.grad(q_alone.mean(), action_alone)
        (grad_all,) = torch.autograd.grad(q_all.mean(), action_all)
        torch.testing.assert_close(grad_alone, grad_all)
        assert not torch.equal(grad_alone, torch.zeros_like(grad_alone))


def test_ensemble_members_are_initialised_independently():
    ensemble = QEnsemble(obs_dim=3, action_dim=1, hidden_sizes=(8,), n=2)
    weight = ensemble.layers[0].weight
    assert not torch.equal(weight[0], weight[1])
    assert weight.abs().max() <= 1 / 4 ** 0.5  # nn.Linear's U(-1/√fan_in, 1/√fan_in)


def test_polyak_update_matches_the_formula():
    torch.manual_seed(0)
    source = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    target = copy.deepcopy(source)
    for p in target.parameters():
        p.data.normal_()
    before = [p.clone() for p in target.parameters()]
    polyak_update(target, source, tau=0.1)
    for old, new, src in zip(before, target.parameters(), source.parameters()):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * src)


@pytest.mark.parametrize("max_grad_norm", [None, 0.5])
def test_our_adam_matches_torch_fused_adam_bit_for_bit(max_grad_norm):
    from rlrun.optim import adam, gradient_step  # noqa: F401

    torch.manual_seed(0)
    ours = mlp(5, (32, 32), 3)
    theirs = copy.deepcopy(ours)
    our_optimizer = adam(ours.parameters(), 1e-2, eps=1e-5)
    their_optimizer = torch.optim.Adam(theirs.parameters(), lr=1e-2, eps=1e-5, fused=True)
    for step in range(20):
        x = torch.randn(16, 5)
        gradient_step(our_optimizer, ours(x).pow(2).mean(), max_grad_norm)
        their_optimizer.zero_grad()
        theirs(x).pow(2).mean().backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(list(theirs.parameters()), max_grad_norm, foreach=True)
        their_optimizer.step()
        if step == 10:  # a learning-rate change between steps, as PPO's annealing does
            our_optimizer.lr = their_optimizer.param_groups[0]["lr"] = 3e-3
    for mine, reference in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(mine, reference)


def test_compile_networks_compiles_each_network_and_keeps_checkpoint_names():
    import gymnasium as gym
    import numpy as np

    from rlrun.algos.ppo import PPO, PPOConfig
    from rlrun.train import compile_networks

    sac = make_agent()
    ppo = PPO(PPOConfig(), gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Discrete(2), torch.device("cpu"), 0)
    names = (list(sac.critic.state_dict()), list(ppo.model.state_dict()))
    compile_networks(sac)
    compile_networks(ppo)
    for network in (sac.actor, sac.critic, sac.target_critic, ppo.model.actor, ppo.model.critic):
        assert network._compiled_call_impl is not None
    # PPO's ActorCritic has no forward: its sub-networks are compiled, not the container.
    assert ppo.model._compiled_call_impl is None
    assert (list(sac.critic.state_dict()), list(ppo.model.state_dict())) == names


def test_bfloat16_updates_autocast_the_update_only_and_keep_float32_weights():
    from rlrun.train import bfloat16_updates

    exact, mixed = make_agent(), make_agent()
    bfloat16_updates(mixed)
    transitions = batch([0.0] * 60 + [1.0] * 4)
    torch.manual_seed(2)
    exact_metrics = exact.update(transitions)
    torch.manual_seed(2)
    mixed_metrics = mixed.update(transitions)
    # Hidden layers in bfloat16 (8 bits of mantissa): close to the float32 update, not equal.
    loss, mixed_loss = exact_metrics["losses/critic"].item(), mixed_metrics["losses/critic"].item()
    assert loss != mixed_loss
    assert mixed_loss == pytest.approx(loss, rel=0.05)
    # Output layers stay float32, and so do weights.
    assert mixed_metrics["train/q_mean"].dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in mixed.critic.parameters())
    for exact_p, mixed_p in zip(exact.critic.parameters(), mixed.critic.parameters()):
        torch.testing.assert_close(mixed_p, exact_p, atol=1e-3, rtol=0)  # one Adam step of lr 3e-4 apart at most
    # Acting is untouched.
    obs = torch.randn(3).numpy()
    assert mixed.act(obs).dtype == exact.act(obs).dtype


def test_output_layers_compute_in_float32_under_autocast():
    from rlrun.nets import mlp

    torch.manual_seed(0)
    net, ensemble = mlp(4, (16,), 3), QEnsemble(obs_dim=4, action_dim=2, hidden_sizes=(16,), n=2)
    x = torch.randn(8, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = net[:-1](x)
        out, q = net(x), ensemble(x, torch.randn(8, 2))
    assert hidden.dtype == torch.bfloat16
    assert out.dtype == q.dtype == torch.float32
    torch.testing.assert_close(out, net[-1](hidden.float()))  # the last layer itself is exact


def test_bfloat16_updates_see_weights_changed_within_the_same_update():
    """PPO takes many optimiser steps in one `update`: each forward must use the current
    weights, not autocast's cached bfloat16 copy from the first."""
    from rlrun.train import bfloat16_updates

    class TwoSteps:
        device = torch.device("cpu")

        def __init__(self) -> None:
            self.layer = nn.Linear(4, 4)

        def update(self, x):
            before = self.layer(x)
            with torch.no_grad():
                self.layer.weight.add_(1.0)
            return before, self.layer(x)

    agent = TwoSteps()
    bfloat16_updates(agent)
    before, after = agent.update(torch.ones(2, 4))
    assert before.dtype == torch.bfloat16
    assert not torch.equal(before, after)


def test_compiled_networks_train_like_eager_ones():
    from rlrun.train import compile_networks

    eager, compiled = make_agent(), make_agent()
    compile_networks(compiled)
    for step in range(2):
        transitions = batch([0.0] * 60 + [1.0] * 4)
        torch.manual_seed(step)
        eager_metrics = eager.update(transitions)
        torch.manual_seed(step)
        compiled_metrics = compiled.update(transitions)
        torch.testing.assert_close(compiled_metrics["losses/critic"], eager_metrics["losses/critic"], rtol=1e-4, atol=1e-5)
    for eager_p, compiled_p in zip(eager.actor.parameters(), compiled.actor.parameters()):
        torch.testing.assert_close(compiled_p, eager_p, rtol=1e-4, atol=1e-5)
