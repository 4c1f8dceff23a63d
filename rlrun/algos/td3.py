"""Twin Delayed DDPG.

Fujimoto et al. 2018, "Addressing Function Approximation Error in Actor-Critic Methods"
(arXiv:1802.09477). Three changes to DDPG: clipped double-Q targets, target policy
smoothing, and delayed policy and target updates. The actor acts in [-1, 1]^|A|, so the
noise scales below are fractions of the action range's half-width, as in the paper's
max_action scaling. DDPG (rlrun/algos/ddpg.py) is this algorithm with all three turned off.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlrun.blocks.buffers import Batch
from rlrun.blocks.hl_gauss import CriticLoss, HLGauss, SupportCheck, ValueSupportConfig
from rlrun.blocks.nets import QEnsemble, mlp, polyak_update
from rlrun.blocks.optim import adam, gradient_step
from rlrun.blocks.policy_modules import RescaleToBounds
from rlrun.blocks.spaces import BoxActions, check_continuous_spaces, obs_batch
from rlrun.blocks.stacking import SeedGroup, SeedStack
from rlrun.blocks.state import Checkpointed
from rlrun.config import non_negative, positive
from rlrun.loops.replay import OffPolicyConfig, train_off_policy
from rlrun.loops.seeds import train_off_policy_seeds
from rlrun.protocols import RunContext


@dataclass(frozen=True)
class TD3Config(OffPolicyConfig, ValueSupportConfig):
    """The shared off-policy settings (lr, gamma, tau, batch_size, buffer_size,
    learning_starts, hidden_sizes, updates_per_step), the HL-Gauss value support (num_bins,
    v_min, v_max, sigma_ratio) plus TD3's own."""

    learning_starts: int = 25_000
    """As in OffPolicyConfig; 25,000 rather than SAC's 5000 to match the TD3 authors' code
    (github.com/sfujimoto/TD3, main.py's start_timesteps), which their results used."""
    num_critics: int = 2
    """Critics trained side by side; targets take their minimum (clipped double-Q), against Q
    overestimation; 1 gives DDPG's target."""
    exploration_noise: float = 0.1
    """σ of the Gaussian noise added to training actions, as a fraction of the action range's
    half-width (the paper's 0.1·max_action)."""
    policy_noise: float = 0.2
    """σ of the target policy smoothing noise, same units (the paper's 0.2)."""
    noise_clip: float = 0.5
    """The smoothing noise is clipped to ±noise_clip, same units (the paper's 0.5)."""
    policy_delay: int = 2
    """Critic updates per actor and target-network update (the paper's d = 2)."""
    critic_loss: CriticLoss = "mse"
    """mse: each critic regresses its TD target (the paper's loss); hl_gauss: each critic
    outputs a histogram over [v_min, v_max] trained by cross-entropy (rlrun/blocks/hl_gauss.py)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_value_support(self.critic_loss)
        positive("algo.num_critics", self.num_critics)
        non_negative("algo.exploration_noise", self.exploration_noise)
        non_negative("algo.policy_noise", self.policy_noise)
        non_negative("algo.noise_clip", self.noise_clip)
        positive("algo.policy_delay", self.policy_delay)


# ----- networks -----------------------------------------------------------------------------
class DeterministicActor(nn.Module):
    """μ(s) in [-1, 1]^|A| (TD3's and DDPG's actor): an MLP with a tanh output."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_sizes: Sequence[int], seeds: int | None = None) -> None:
        """With `seeds`, one actor per seed stacked on a leading dimension: (S, B, obs) → (S, B, |A|)."""
        super().__init__()
        self.net = mlp(obs_dim, hidden_sizes, action_dim, seeds=seeds)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs))


class TD3(Checkpointed):
    Config = TD3Config
    action_spaces = (gym.spaces.Box,)
    name = "td3"

    @classmethod
    def check_spaces(cls, config: TD3Config, obs_space: gym.Space, action_space: gym.Space) -> None:
        check_continuous_spaces(cls.name, obs_space, action_space)

    def __init__(
        self,
        config: TD3Config,
        obs_space: gym.Space,
        action_space: gym.Space,
        device: torch.device,
        seed: int,
        stack: SeedStack | None = None,
    ) -> None:
        """With `stack`, the agents of a batched group's seeds stacked on a leading seed
        dimension (docs/batched-seeds.md); the update below is the same code."""
        self.config = config
        self.device = device
        self.seed = seed
        obs_dim, action_dim = obs_space.shape[0], action_space.shape[0]
        self.actions = BoxActions(action_space)

        seeds = None if stack is None else len(stack)
        # Exploration and target smoothing noise; each seed's from its own generator when stacked.
        self.normal_like = torch.randn_like if stack is None else stack.normal_like
        self.actor = DeterministicActor(obs_dim, action_dim, config.hidden_sizes, seeds).to(device)
        self.target_actor = copy.deepcopy(self.actor).requires_grad_(False)
        # With HL-Gauss each critic outputs the logits of its value histogram.
        self.hl_gauss = HLGauss.from_config(config).to(device) if config.critic_loss == "hl_gauss" else None
        self.support_check = SupportCheck(self.hl_gauss.v_min, self.hl_gauss.v_max) if self.hl_gauss is not None else None
        outputs = 1 if self.hl_gauss is None else config.num_bins
        self.critic = QEnsemble(obs_dim, action_dim, config.hidden_sizes, config.num_critics, outputs, seeds).to(device)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_optimizer = adam(self.actor.parameters(), config.lr)
        self.critic_optimizer = adam(self.critic.parameters(), config.lr)
        self.critic_updates = 0
        # The latest actor loss (one per seed when stacked), reported between delayed updates.
        self.actor_loss = torch.zeros(() if stack is None else (len(stack),), device=device)

    # ----- acting ---------------------------------------------------------------------------
    @torch.no_grad()
    def explore(self, obs: torch.Tensor) -> torch.Tensor:
        """μ(s) + N(0, σ²), clipped to the action bounds, for a batch of observations on the device."""
        action = self.actor(obs)
        noise = self.normal_like(action) * self.config.exploration_noise
        return (action + noise).clamp(-1.0, 1.0)

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """μ(s) in environment units, for evaluation; with the exploration noise if not `deterministic`."""
        obs_t = obs_batch(obs, self.device)
        unit_action = self.actor(obs_t) if deterministic else self.explore(obs_t)
        return self.actions.to_env(unit_action[0].cpu().numpy())

    def policy_module(self) -> nn.Module:
        """observations (B, obs_dim) → μ(s) rescaled to the bounds, for export."""
        return nn.Sequential(self.actor, RescaleToBounds(self.actions.low, self.actions.high))

    # ----- learning -------------------------------------------------------------------------
    @torch.no_grad()
    def smoothed_target_action(self, next_obs: torch.Tensor) -> torch.Tensor:
        """ã = clip(μ̄(s') + clip(ε, −c, c), −1, 1),  ε ~ N(0, σ̃²): target policy smoothing."""
        mean = self.target_actor(next_obs)
        noise = (self.normal_like(mean) * self.config.policy_noise).clamp(-self.config.noise_clip, self.config.noise_clip)
        return (mean + noise).clamp(-1.0, 1.0)

    def q_values(self, critic_outputs: torch.Tensor) -> torch.Tensor:
        """Q values from the critics' outputs: the outputs themselves, or with HL-Gauss their
        histograms' means (the last dimension, the bins, is averaged away)."""
        return critic_outputs if self.hl_gauss is None else self.hl_gauss.value(critic_outputs)

    @torch.no_grad()
    def critic_target(self, batch: Batch) -> torch.Tensor:
        """y = r + γ (1 − terminated) min_i Q̄_i(s', ã); truncations still bootstrap."""
        next_outputs = self.target_critic(batch.next_obs, self.smoothed_target_action(batch.next_obs))
        next_q = self.q_values(next_outputs).min(dim=-2).values
        return batch.rewards + self.config.gamma * (1.0 - batch.terminated) * next_q

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One critic step, and every policy_delay one actor step. Each loss is reduced over
        the batch (the last dimension); stacked seeds' losses are then summed, so one step on
        the sum is each seed's own step."""
        metrics = {}
        if self.hl_gauss is None:
            # Critics: Σ_i E[(Q_i(s, a) − y)²]
            q = self.critic(batch.obs, batch.actions)
            critic_loss = ((q - self.critic_target(batch).unsqueeze(-2)) ** 2).mean(dim=-1).sum(dim=-1)
        else:
            # Critics: Σ_i E[−Σ_k p_k(y) log softmax(logits_i(s, a))_k], p(y) y's HL-Gauss histogram
            logits = self.critic(batch.obs, batch.actions)
            target = self.critic_target(batch)
            critic_loss = self.hl_gauss.loss(logits, target.unsqueeze(-2)).mean(dim=-1).sum(dim=-1)
            q = self.hl_gauss.value(logits.detach())
            metrics["train/target_outside_support"] = self.support_check(target)
        gradient_step(self.critic_optimizer, critic_loss.sum())
        self.critic_updates += 1

        # Actor and targets every policy_delay critic updates: J = −E[Q_1(s, μ(s))].
        if self.critic_updates % self.config.policy_delay == 0:
            self.critic.requires_grad_(False)  # no critic weight gradients from the actor loss
            actor_loss = -self.q_values(self.critic.member(0, batch.obs, self.actor(batch.obs))).mean(dim=-1)
            self.critic.requires_grad_(True)
            gradient_step(self.actor_optimizer, actor_loss.sum())
            self.actor_loss = actor_loss.detach()
            polyak_update(self.target_actor, self.actor, self.config.tau)
            polyak_update(self.target_critic, self.critic, self.config.tau)
        return {
            **metrics,
            "losses/critic": critic_loss.detach(),
            "losses/actor": self.actor_loss,
            "train/q_mean": q.detach().mean(dim=(-2, -1)),
        }

    def train(self, run: RunContext) -> None:
        train_off_policy(self, run, self.config)

    def train_seeds(self, group: SeedGroup, runs: Sequence[RunContext]) -> None:
        """Train a batched group of seeds, seed s in runs[s]; this is the group's stacked agent."""
        train_off_policy_seeds(group, runs, self.config)

    # ----- checkpoints ----------------------------------------------------------------------
    checkpointed = (
        "actor",
        "target_actor",
        "critic",
        "target_critic",
        "actor_optimizer",
        "critic_optimizer",
        "critic_updates",
        "actor_loss",
    )
