"""Implicit Q-Learning: offline RL that never queries Q at an action outside the dataset.

Kostrikov, Nair & Levine 2021, "Offline Reinforcement Learning with Implicit Q-Learning"
(arXiv:2110.06169; code: github.com/ikostrikov/implicit_q_learning; CORL's iql.py). A state
value V(s) is fitted to an upper expectile of Q(s, a) over the dataset's actions, which
approximates the best in-dataset action's value; Q regresses r + γ V(s'); the policy is
extracted by advantage-weighted regression onto the dataset's actions. Learns from
`dataset=` through the offline loop (rlrun/loops/dataset.py).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlrun.blocks.buffers import Batch
from rlrun.blocks.nets import QEnsemble, mlp, polyak_update
from rlrun.blocks.optim import adam, gradient_step
from rlrun.blocks.policy_modules import RescaleToBounds
from rlrun.blocks.spaces import BoxActions, check_continuous_spaces, obs_batch
from rlrun.blocks.state import Checkpointed
from rlrun.config import in_range, non_negative, positive
from rlrun.envs.datasets import Transitions, episode_returns
from rlrun.loops.dataset import DatasetNormalizer, OfflineConfig, train_offline
from rlrun.protocols import RunContext

# The policy's state-independent log σ is clipped here (CORL's iql.py).
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


@dataclass(frozen=True)
class IQLConfig(OfflineConfig):
    """The shared offline settings (lr, gamma, tau, batch_size, hidden_sizes, normalize_obs)
    plus IQL's own; defaults are the paper's D4RL MuJoCo locomotion ones (Kostrikov et al.
    2021, Appendix B: lr 3e-4, batch 256, τ = 0.7, β = 3.0, 1,000,000 gradient steps)."""

    expectile: float = 0.7
    """τ of the expectile loss that fits V(s) to Q(s, a): 0.5 is the mean (SARSA's value of
    the behaviour policy); towards 1 the maximum over the dataset's actions."""
    beta: float = 3.0
    """Inverse temperature β of the policy's weights exp(β (Q − V)): 0 is behaviour cloning,
    larger follows the advantage more greedily."""
    max_weight: float = 100.0
    """The weights exp(β (Q − V)) are clipped to at most this, against a few transitions
    dominating the policy's loss (the paper's code: 100)."""
    num_critics: int = 2
    """Critics trained side by side; V's target and the advantage take their minimum."""
    actor_schedule: Literal["cosine", "constant"] = "cosine"
    """The actor's step size: cosine decays it from lr to 0 over total_steps (the paper's
    code); constant keeps lr."""
    normalize_rewards: bool = True
    """Scale rewards by 1000 / (the dataset's best − worst episode return), the paper's
    preprocessing of the MuJoCo locomotion datasets (its code's normalize()), so that β and
    the expectile see returns on one scale whatever the task's reward units."""

    def __post_init__(self) -> None:
        super().__post_init__()
        in_range("algo.expectile", self.expectile, 0.0, 1.0)
        non_negative("algo.beta", self.beta)
        positive("algo.max_weight", self.max_weight)
        positive("algo.num_critics", self.num_critics)


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """L₂^τ(u) = |τ − 1(u < 0)| u², u = Q(s, a) − V(s), averaged: an asymmetric square that
    weights positive errors by τ and negative ones by 1 − τ."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff**2).mean()


def awr_weights(advantage: torch.Tensor, beta: float, max_weight: float) -> torch.Tensor:
    """w = min(exp(β A), max_weight), A = Q̄(s, a) − V(s): advantage-weighted regression's weights."""
    return torch.exp(beta * advantage).clamp(max=max_weight)


def return_range_scale(data: Transitions) -> float:
    """1000 / (R_max − R_min) over the dataset's episode returns: rewards times this span 1000
    between the worst and the best episode (1 if every episode returns the same)."""
    returns = episode_returns(data)
    spread = returns.max() - returns.min()
    return 1000.0 / spread if spread > 0 else 1.0


# ----- networks -----------------------------------------------------------------------------
class GaussianActor(nn.Module):
    """π(a|s) = N(tanh(μ(s)), σ²): a Gaussian whose mean lies in [-1, 1]^|A|, with a
    state-independent σ (the paper's MuJoCo policy; the distribution itself is not squashed,
    so the dataset's actions at the bounds have finite log-probabilities)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_sizes: Sequence[int]) -> None:
        super().__init__()
        self.net = mlp(obs_dim, hidden_sizes, action_dim)
        self.log_std = nn.Parameter(torch.zeros(action_dim))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """The mean action, the deterministic policy."""
        return torch.tanh(self.net(obs))

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log π(a|s), summed over the action's dimensions."""
        log_std = self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        return torch.distributions.Normal(self(obs), log_std.exp()).log_prob(actions).sum(dim=-1)

    def sample(self, obs: torch.Tensor) -> torch.Tensor:
        """An action drawn from π(·|s), clipped to [-1, 1]."""
        mean = self(obs)
        return (mean + self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp() * torch.randn_like(mean)).clamp(-1.0, 1.0)


class IQL(Checkpointed):
    Config = IQLConfig
    action_spaces = (gym.spaces.Box,)
    name = "iql"

    @classmethod
    def check_spaces(cls, config: IQLConfig, obs_space: gym.Space, action_space: gym.Space) -> None:
        check_continuous_spaces(cls.name, obs_space, action_space)

    def __init__(self, config: IQLConfig, obs_space: gym.Space, action_space: gym.Space, device: torch.device, seed: int) -> None:
        self.config = config
        self.device = device
        self.seed = seed
        obs_dim, action_dim = obs_space.shape[0], action_space.shape[0]
        self.actions = BoxActions(action_space)

        self.normalizer = DatasetNormalizer(obs_dim, config.normalize_obs).to(device)
        self.actor = GaussianActor(obs_dim, action_dim, config.hidden_sizes).to(device)
        self.value = mlp(obs_dim, config.hidden_sizes, 1).to(device)
        self.critic = QEnsemble(obs_dim, action_dim, config.hidden_sizes, config.num_critics).to(device)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_optimizer = adam(self.actor.parameters(), config.lr)
        self.value_optimizer = adam(self.value.parameters(), config.lr)
        self.critic_optimizer = adam(self.critic.parameters(), config.lr)
        self.updates = 0
        self.schedule_steps = 1  # the cosine schedule's length: the run's total_steps (train)
        self.reward_scale = 1.0  # normalize_rewards' factor, from the dataset (train)

    # ----- acting ---------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """The mean action tanh(μ(s)) in environment units, or a sample clipped to the bounds."""
        obs_t = self.normalizer(obs_batch(obs, self.device))
        unit_action = self.actor(obs_t) if deterministic else self.actor.sample(obs_t)
        return self.actions.to_env(unit_action[0].cpu().numpy())

    def policy_module(self) -> nn.Module:
        """raw observations (B, obs_dim) → tanh(μ(normalise(s))) rescaled to the bounds, for export."""
        return nn.Sequential(self.normalizer, self.actor, RescaleToBounds(self.actions.low, self.actions.high))

    # ----- learning -------------------------------------------------------------------------
    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        obs, next_obs = self.normalizer(batch.obs), self.normalizer(batch.next_obs)

        # Value: J_V = E[L₂^τ(min_i Q̄_i(s, a) − V(s))], the dataset's actions only.
        with torch.no_grad():
            target_q = self.target_critic(obs, batch.actions).min(dim=0).values
        v = self.value(obs).squeeze(-1)
        advantage = target_q - v
        value_loss = expectile_loss(advantage, self.config.expectile)
        gradient_step(self.value_optimizer, value_loss)

        # Critics: J_Q = Σ_i E[(r + γ (1 − terminated) V(s') − Q_i(s, a))²], with V just updated
        # (the paper's code); the actor below weights by the advantage from before it (CORL's).
        with torch.no_grad():
            y = self.reward_scale * batch.rewards + self.config.gamma * (1.0 - batch.terminated) * self.value(next_obs).squeeze(
                -1
            )
        q = self.critic(obs, batch.actions)
        critic_loss = ((q - y) ** 2).mean(dim=1).sum()
        gradient_step(self.critic_optimizer, critic_loss)
        polyak_update(self.target_critic, self.critic, self.config.tau)

        # Actor: J_π = −E[min(exp(β (Q̄(s, a) − V(s))), max_weight) log π(a|s)], advantage-weighted regression.
        weights = awr_weights(advantage.detach(), self.config.beta, self.config.max_weight)
        actor_loss = -(weights * self.actor.log_prob(obs, batch.actions)).mean()
        if self.config.actor_schedule == "cosine":
            # lr_t = lr · ½ (1 + cos(π t / T)), T = total_steps (PyTorch's CosineAnnealingLR to 0).
            self.actor_optimizer.lr = self.config.lr * 0.5 * (1.0 + math.cos(math.pi * self.updates / self.schedule_steps))
        gradient_step(self.actor_optimizer, actor_loss)
        self.updates += 1
        return {
            "losses/value": value_loss.detach(),
            "losses/critic": critic_loss.detach(),
            "losses/actor": actor_loss.detach(),
            "train/advantage_mean": advantage.mean().detach(),
            "train/weight_mean": weights.mean(),
            "train/q_mean": q.mean().detach(),
            "train/v_mean": v.mean().detach(),
        }

    def train(self, run: RunContext) -> None:
        self.schedule_steps = run.total_steps
        data = run.dataset()
        if self.config.normalize_rewards:
            self.reward_scale = return_range_scale(data)
        train_offline(self, run, self.config.batch_size, data)

    # ----- checkpoints ----------------------------------------------------------------------
    checkpointed = (
        "normalizer",
        "actor",
        "value",
        "critic",
        "target_critic",
        "actor_optimizer",
        "value_optimizer",
        "critic_optimizer",
        "updates",
    )
