"""The shared network pieces compute what their plain equivalents compute."""

import copy

import torch
from torch import nn

from rlrun.nets import QEnsemble, polyak_update


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
