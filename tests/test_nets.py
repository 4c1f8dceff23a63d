"""The shared network pieces compute what their plain equivalents compute."""

import copy

import pytest
import torch
from torch import nn

from rlrun.nets import QEnsemble, mlp, polyak_update


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
    from rlrun.nets import adam, gradient_step  # noqa: F401

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
