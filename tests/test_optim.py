"""Our Adam on the fused kernel against torch's own fused Adam."""

import copy

import pytest
import torch

from rlrun.blocks.nets import mlp
from rlrun.blocks.optim import Adam, adam, gradient_step


@pytest.mark.parametrize("max_grad_norm", [None, 0.5])
def test_our_adam_matches_torch_fused_adam_bit_for_bit(max_grad_norm):
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


def test_with_weight_decay_it_matches_torch_fused_adamw_bit_for_bit():
    torch.manual_seed(0)
    ours = mlp(5, (32, 32), 3)
    theirs = copy.deepcopy(ours)
    our_optimizer = Adam(ours.parameters(), 1e-2, weight_decay=0.1)
    their_optimizer = torch.optim.AdamW(theirs.parameters(), lr=1e-2, weight_decay=0.1, fused=True)
    for _ in range(20):
        x = torch.randn(16, 5)
        gradient_step(our_optimizer, ours(x).pow(2).mean())
        their_optimizer.zero_grad()
        theirs(x).pow(2).mean().backward()
        their_optimizer.step()
    for mine, reference in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(mine, reference)
