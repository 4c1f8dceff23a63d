"""TD3+BC: TD3 learning offline, its actor kept near the dataset's actions by behaviour cloning.

Fujimoto & Gu 2021, "A Minimalist Approach to Offline Reinforcement Learning" (arXiv:2106.06860;
code: github.com/sfujimoto/TD3_BC). Two changes to TD3 (rlrun/algos/td3.py): the actor loss
adds a behaviour-cloning term, −λ Q(s, π(s)) + (π(s) − a)², with λ = α / mean|Q| so that α does
not depend on the scale of the rewards; and observations are standardised with the dataset's
statistics. Learns from `dataset=` through the offline loop (rlrun/loops/dataset.py).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlrun.algos.td3 import DeterministicActor
from rlrun.blocks.buffers import Batch
from rlrun.blocks.nets import QEnsemble, polyak_update
from rlrun.blocks.optim import adam, gradient_step
from rlrun.blocks.policy_modules import RescaleToBounds
from rlrun.blocks.spaces import BoxActions, check_continuous_spaces, obs_batch
from rlrun.blocks.state import Checkpointed
from rlrun.config import non_negative, positive
from rlrun.loops.dataset import DatasetNormalizer, OfflineConfig, train_offline
from rlrun.protocols import RunContext


@dataclass(frozen=True)
class TD3BCConfig(OfflineConfig):
    """The shared offline settings (lr, gamma, tau, batch_size, hidden_sizes, normalize_obs)
    plus TD3+BC's own; defaults are the paper's (Fujimoto & Gu 2021, Table 3, and main.py of
    github.com/sfujimoto/TD3_BC), whose runs take 1,000,000 gradient steps."""

    alpha: float = 2.5
    """α of λ = α / mean|Q(s, π(s))|, the weight of the Q term against behaviour cloning; 0
    is pure behaviour cloning (the paper's 2.5)."""
    num_critics: int = 2
    """Critics trained side by side; targets take their minimum (clipped double-Q)."""
    policy_noise: float = 0.2
    """σ of the target policy smoothing noise, as a fraction of the action range's half-width
    (the paper's 0.2)."""
    noise_clip: float = 0.5
    """The smoothing noise is clipped to ±noise_clip, same units (the paper's 0.5)."""
    policy_delay: int = 2
    """Critic updates per actor and target-network update (the paper's policy_freq = 2)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        non_negative("algo.alpha", self.alpha)
        positive("algo.num_critics", self.num_critics)
        non_negative("algo.policy_noise", self.policy_noise)
        non_negative("algo.noise_clip", self.noise_clip)
        positive("algo.policy_delay", self.policy_delay)


def bc_weight(alpha: float, q: torch.Tensor) -> torch.Tensor:
    """λ = α / ((1/N) Σ |Q(s_i, π(s_i))|), held constant in the actor's gradient."""
    return alpha / q.abs().mean().detach()


class TD3BC(Checkpointed):
    Config = TD3BCConfig
    action_spaces = (gym.spaces.Box,)
    name = "td3_bc"

    @classmethod
    def check_spaces(cls, config: TD3BCConfig, obs_space: gym.Space, action_space: gym.Space) -> None:
        check_continuous_spaces(cls.name, obs_space, action_space)

    def __init__(
        self, config: TD3BCConfig, obs_space: gym.Space, action_space: gym.Space, device: torch.device, seed: int
    ) -> None:
        self.config = config
        self.device = device
        self.seed = seed
        obs_dim, action_dim = obs_space.shape[0], action_space.shape[0]
        self.actions = BoxActions(action_space)

        self.normalizer = DatasetNormalizer(obs_dim, config.normalize_obs).to(device)
        self.actor = DeterministicActor(obs_dim, action_dim, config.hidden_sizes).to(device)
        self.target_actor = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic = QEnsemble(obs_dim, action_dim, config.hidden_sizes, config.num_critics).to(device)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_optimizer = adam(self.actor.parameters(), config.lr)
        self.critic_optimizer = adam(self.critic.parameters(), config.lr)
        self.critic_updates = 0
        # The latest actor metrics, reported between delayed updates.
        self.actor_loss = torch.zeros((), device=device)
        self.bc_loss = torch.zeros((), device=device)
        self.lmbda = torch.zeros((), device=device)

    # ----- acting ---------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """π(normalise(s)) in environment units; TD3+BC's policy is deterministic either way."""
        unit_action = self.actor(self.normalizer(obs_batch(obs, self.device)))
        return self.actions.to_env(unit_action[0].cpu().numpy())

    def policy_module(self) -> nn.Module:
        """raw observations (B, obs_dim) → π(normalise(s)) rescaled to the bounds, for export."""
        return nn.Sequential(self.normalizer, self.actor, RescaleToBounds(self.actions.low, self.actions.high))

    # ----- learning -------------------------------------------------------------------------
    @torch.no_grad()
    def critic_target(self, next_obs: torch.Tensor, rewards: torch.Tensor, terminated: torch.Tensor) -> torch.Tensor:
        """y = r + γ (1 − terminated) min_i Q̄_i(s', ã),  ã = clip(μ̄(s') + clip(ε, −c, c), −1, 1),
        ε ~ N(0, σ̃²): TD3's target with target policy smoothing."""
        mean = self.target_actor(next_obs)
        noise = (torch.randn_like(mean) * self.config.policy_noise).clamp(-self.config.noise_clip, self.config.noise_clip)
        next_action = (mean + noise).clamp(-1.0, 1.0)
        next_q = self.target_critic(next_obs, next_action).min(dim=0).values
        return rewards + self.config.gamma * (1.0 - terminated) * next_q

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        obs, next_obs = self.normalizer(batch.obs), self.normalizer(batch.next_obs)

        # Critics: Σ_i E[(Q_i(s, a) − y)²]
        q = self.critic(obs, batch.actions)
        critic_loss = ((q - self.critic_target(next_obs, batch.rewards, batch.terminated)) ** 2).mean(dim=1).sum()
        gradient_step(self.critic_optimizer, critic_loss)
        self.critic_updates += 1

        # Actor and targets every policy_delay critic updates:
        # J = E[−λ Q_1(s, π(s)) + (π(s) − a)²],  λ = α / mean|Q_1(s, π(s))|.
        if self.critic_updates % self.config.policy_delay == 0:
            self.critic.requires_grad_(False)  # no critic weight gradients from the actor loss
            action = self.actor(obs)
            q_pi = self.critic.member(0, obs, action)
            self.critic.requires_grad_(True)
            lmbda = bc_weight(self.config.alpha, q_pi)
            bc_loss = ((action - batch.actions) ** 2).mean()
            actor_loss = -lmbda * q_pi.mean() + bc_loss
            gradient_step(self.actor_optimizer, actor_loss)
            self.actor_loss, self.bc_loss, self.lmbda = actor_loss.detach(), bc_loss.detach(), lmbda
            polyak_update(self.target_actor, self.actor, self.config.tau)
            polyak_update(self.target_critic, self.critic, self.config.tau)
        return {
            "losses/critic": critic_loss.detach(),
            "losses/actor": self.actor_loss,
            "losses/bc": self.bc_loss,
            "train/lambda": self.lmbda,
            "train/q_mean": q.mean().detach(),
        }

    def train(self, run: RunContext) -> None:
        train_offline(self, run, self.config.batch_size)

    # ----- checkpoints ----------------------------------------------------------------------
    checkpointed = (
        "normalizer",
        "actor",
        "target_actor",
        "critic",
        "target_critic",
        "actor_optimizer",
        "critic_optimizer",
        "critic_updates",
        "actor_loss",
        "bc_loss",
        "lmbda",
    )
