"""What train.py does to an agent before training: torch.compile and bfloat16 updates."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import random_batch as batch
from test_sac import make_agent
from torch import nn

from rlrun.algos.ppo import PPO, PPOConfig
from rlrun.core.training import bfloat16_updates, compile_networks


def test_compile_networks_compiles_each_network_and_keeps_checkpoint_names():
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


def test_bfloat16_updates_see_weights_changed_within_the_same_update():
    """PPO takes many optimiser steps in one `update`: each forward must use the current
    weights, not autocast's cached bfloat16 copy from the first."""

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


@pytest.mark.slow
def test_compiled_networks_train_like_eager_ones():
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
