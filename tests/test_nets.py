"""The shared network pieces compute what their plain equivalents compute."""

import copy

import torch
from torch import nn

from rlrun.blocks.nets import QEnsemble, mlp, polyak_update


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
    assert weight.abs().max() <= 1 / 4**0.5  # nn.Linear's U(-1/√fan_in, 1/√fan_in)


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


def test_output_layers_compute_in_float32_under_autocast():
    torch.manual_seed(0)
    net, ensemble = mlp(4, (16,), 3), QEnsemble(obs_dim=4, action_dim=2, hidden_sizes=(16,), n=2)
    x = torch.randn(8, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = net[:-1](x)
        out, q = net(x), ensemble(x, torch.randn(8, 2))
    assert hidden.dtype == torch.bfloat16
    assert out.dtype == q.dtype == torch.float32
    torch.testing.assert_close(out, net[-1](hidden.float()))  # the last layer itself is exact
