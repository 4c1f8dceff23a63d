"""Soft Actor-Critic with twin critics and automatic temperature.

Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications" (arXiv:1812.05905).
The policy acts in [-1, 1]^|A|; actions are rescaled to the environment's bounds only
when they are sent to the environment, so the replay buffer and critics see unit actions.
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
from torch.nn import functional as F

from rlrun.blocks.buffers import Batch
from rlrun.blocks.hl_gauss import CriticLoss, HLGauss, SupportCheck, ValueSupportConfig
from rlrun.blocks.nets import EnsembleLinear, OutputLinear, QEnsemble, hidden_layers, polyak_update
from rlrun.blocks.optim import adam, gradient_step
from rlrun.blocks.policy_modules import RescaleToBounds
from rlrun.blocks.spaces import BoxActions, check_continuous_spaces, obs_batch
from rlrun.blocks.stacking import SeedGroup, SeedStack
from rlrun.blocks.state import Checkpointed
from rlrun.config import positive
from rlrun.loops.replay import OffPolicyConfig, train_off_policy
from rlrun.loops.seeds import train_off_policy_seeds
from rlrun.protocols import RunContext


@dataclass(frozen=True)
class SACConfig(OffPolicyConfig, ValueSupportConfig):
    """The shared off-policy settings (lr, gamma, tau, batch_size, buffer_size,
    learning_starts, hidden_sizes, updates_per_step), the HL-Gauss value support (num_bins,
    v_min, v_max, sigma_ratio) plus SAC's own."""

    num_critics: int = 2
    """Critics trained side by side; targets and the actor's loss take their minimum (clipped
    double-Q, Fujimoto et al. 2018), against Q overestimation."""
    init_temperature: float = 1.0
    """The entropy temperature α at the start; it is then learnt (CleanRL and SB3 start at 1)."""
    target_entropy: float | Literal["auto"] = "auto"
    """The policy entropy the temperature is tuned towards, in nats; auto = −|A|, the
    paper's heuristic (Haarnoja et al. 2018, Table 1)."""
    critic_loss: CriticLoss = "mse"
    """mse: each critic regresses its TD target (the paper's loss); hl_gauss: each critic
    outputs a histogram over [v_min, v_max] trained by cross-entropy (rlrun/blocks/hl_gauss.py)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        positive("algo.num_critics", self.num_critics)
        positive("algo.init_temperature", self.init_temperature)
        self.check_value_support(self.critic_loss)


# ----- networks -----------------------------------------------------------------------------
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # the original SAC implementation's clip


def tanh_gaussian_log_prob(pre_tanh: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log π(a|s) of a = tanh(u), u ~ N(mean, std), summed over action dimensions.

    Change of variables: log π(a) = log N(u) − Σ log(1 − tanh(u)²), with the stable form
    log(1 − tanh(u)²) = 2·(log 2 − u − softplus(−2u)).
    """
    normal_log_prob = -0.5 * ((pre_tanh - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    log_det = 2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))
    return (normal_log_prob - log_det).sum(-1)


class TanhGaussianActor(nn.Module):
    """A Gaussian policy squashed by tanh into [-1, 1]^|A| (SAC's actor)."""

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden_sizes: Sequence[int],
        activation: type[nn.Module] = nn.ReLU,
        trunk: nn.Module | None = None,
        stack: SeedStack | None = None,
    ) -> None:
        """`trunk` maps observations to hidden_sizes[-1] features; by default an MLP of
        `hidden_sizes` with `activation` (CrossQ passes one with batch renormalisation).
        With `stack`, one actor per seed stacked on a leading dimension: (S, B, obs) → (S, B, ·),
        each seed's noise from its own generator."""
        super().__init__()
        seeds = None if stack is None else len(stack)
        self.trunk = hidden_layers(obs_dim, hidden_sizes, activation, seeds) if trunk is None else trunk
        self.head = (
            OutputLinear(hidden_sizes[-1], 2 * action_dim)
            if stack is None
            else EnsembleLinear(seeds, hidden_sizes[-1], 2 * action_dim)
        )
        self.normal_like = torch.randn_like if stack is None else stack.normal_like

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.head(self.trunk(obs)).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action in [-1, 1] and its log-probability."""
        mean, log_std = self(obs)
        pre_tanh = mean + log_std.exp() * self.normal_like(mean)
        return torch.tanh(pre_tanh), tanh_gaussian_log_prob(pre_tanh, mean, log_std)

    def sample_action(self, obs: torch.Tensor) -> torch.Tensor:
        """`sample`'s action alone, from the same random draw; acting has no use for the
        log-probability, so it is not computed."""
        mean, log_std = self(obs)
        return torch.tanh(mean + log_std.exp() * self.normal_like(mean))

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self(obs)[0])


class MeanAction(nn.Module):
    """The actor's deterministic action as a module of its own (for export)."""

    def __init__(self, actor: TanhGaussianActor) -> None:
        super().__init__()
        self.actor = actor

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor.deterministic(obs)


class TanhGaussianActing:
    """Acting through a TanhGaussianActor at `self.actor`, for SAC and the algorithms that
    share its actor (DSAC-T, CrossQ): training samples, evaluation actions and the exported
    policy, with actions in [-1, 1]^|A| mapped to the bounds by `self.actions`."""

    actor: TanhGaussianActor
    actions: BoxActions
    device: torch.device

    @torch.no_grad()
    def explore(self, obs: torch.Tensor) -> torch.Tensor:
        """Stochastic unit actions for training, for a batch of observations on the device."""
        return self.actor.sample_action(obs)

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """The action for evaluation in environment units: tanh of the mean, or a sample."""
        obs_t = obs_batch(obs, self.device)
        unit_action = self.actor.deterministic(obs_t) if deterministic else self.actor.sample_action(obs_t)
        return self.actions.to_env(unit_action[0].cpu().numpy())

    def policy_module(self) -> nn.Module:
        """observations (B, obs_dim) → tanh(mean) rescaled to the bounds, for export."""
        return nn.Sequential(MeanAction(self.actor), RescaleToBounds(self.actions.low, self.actions.high))


class SAC(TanhGaussianActing, Checkpointed):
    Config = SACConfig
    action_spaces = (gym.spaces.Box,)

    @staticmethod
    def check_spaces(config: SACConfig, obs_space: gym.Space, action_space: gym.Space) -> None:
        check_continuous_spaces("sac", obs_space, action_space)

    def __init__(
        self,
        config: SACConfig,
        obs_space: gym.Space,
        action_space: gym.Space,
        device: torch.device,
        seed: int,
        stack: SeedStack | None = None,
    ) -> None:
        """With `stack`, the agents of a batched group's seeds stacked on a leading seed
        dimension (docs/batched-seeds.md): the update below is the same code, every tensor
        with a seed dimension in front."""
        self.config = config
        self.device = device
        self.seed = seed
        obs_dim, action_dim = obs_space.shape[0], action_space.shape[0]
        self.actions = BoxActions(action_space)

        seeds = None if stack is None else len(stack)
        self.actor = TanhGaussianActor(obs_dim, action_dim, config.hidden_sizes, stack=stack).to(device)
        # With HL-Gauss each critic outputs the logits of its value histogram.
        self.hl_gauss = HLGauss.from_config(config).to(device) if config.critic_loss == "hl_gauss" else None
        self.support_check = SupportCheck(self.hl_gauss.v_min, self.hl_gauss.v_max) if self.hl_gauss is not None else None
        outputs = 1 if self.hl_gauss is None else config.num_bins
        self.critic = QEnsemble(obs_dim, action_dim, config.hidden_sizes, config.num_critics, outputs, seeds).to(device)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        # The temperature is learnt as log α so it stays positive; one per seed when stacked.
        shape = () if stack is None else (len(stack),)
        self.log_alpha = torch.full(shape, math.log(config.init_temperature), device=device, requires_grad=True)
        self.target_entropy = -float(action_dim) if config.target_entropy == "auto" else config.target_entropy

        self.actor_optimizer = adam(self.actor.parameters(), config.lr)
        self.critic_optimizer = adam(self.critic.parameters(), config.lr)
        self.alpha_optimizer = adam([self.log_alpha], config.lr)

    # ----- learning -------------------------------------------------------------------------
    def q_values(self, critic_outputs: torch.Tensor) -> torch.Tensor:
        """Q_i(s, a), shape (n, B) ((S, n, B) stacked): the critics' outputs, or with HL-Gauss
        their histograms' means."""
        return critic_outputs if self.hl_gauss is None else self.hl_gauss.value(critic_outputs)

    @torch.no_grad()
    def critic_target(self, batch: Batch) -> torch.Tensor:
        """y = r + γ (1 − terminated) (min_i Q̄_i(s', a') − α log π(a'|s')),  a' ~ π(·|s').

        Only true terminations stop bootstrapping; a time-limit truncation still bootstraps.
        """
        next_action, next_log_prob = self.actor.sample(batch.next_obs)
        next_q = self.q_values(self.target_critic(batch.next_obs, next_action)).min(dim=-2).values
        soft_value = next_q - self.log_alpha.exp().unsqueeze(-1) * next_log_prob
        return batch.rewards + self.config.gamma * (1.0 - batch.terminated) * soft_value

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One gradient step of critics, actor and temperature. Each loss is reduced over the
        batch (the last dimension); stacked seeds' losses are then summed: a seed's loss
        reaches only its own parameters, so one step on the sum is each seed's own step."""
        alpha = self.log_alpha.exp().detach().unsqueeze(-1)  # broadcasts over the batch

        metrics = {}
        if self.hl_gauss is None:
            # Critics: J_Q = ½ Σ_i E[(Q_i(s, a) − y)²]
            q = self.critic(batch.obs, batch.actions)
            critic_loss = 0.5 * ((q - self.critic_target(batch).unsqueeze(-2)) ** 2).mean(dim=-1).sum(dim=-1)
        else:
            # Critics: J_Q = Σ_i E[−Σ_k p_k(y) log softmax(logits_i(s, a))_k], p(y) y's HL-Gauss histogram
            logits = self.critic(batch.obs, batch.actions)
            target = self.critic_target(batch)
            critic_loss = self.hl_gauss.loss(logits, target.unsqueeze(-2)).mean(dim=-1).sum(dim=-1)
            q = self.hl_gauss.value(logits.detach())
            metrics["train/target_outside_support"] = self.support_check(target)
        gradient_step(self.critic_optimizer, critic_loss.sum())

        # Actor: J_π = E[α log π(ã|s) − min_i Q_i(s, ã)], ã reparameterised. The critics are
        # frozen here so the backward pass skips their weight gradients.
        action, log_prob = self.actor.sample(batch.obs)
        self.critic.requires_grad_(False)
        q_new = self.q_values(self.critic(batch.obs, action)).min(dim=-2).values
        self.critic.requires_grad_(True)
        actor_loss = (alpha * log_prob - q_new).mean(dim=-1)
        gradient_step(self.actor_optimizer, actor_loss.sum())

        # Temperature, learnt as log α (SB3's form): J(log α) = E[−log α · (log π(ã|s) + H̄)].
        # Its gradient has the sign of CleanRL's J(α) = E[−α (log π(ã|s) + H̄)]: α rises while
        # the policy's entropy is below the target H̄ and falls while it is above.
        alpha_loss = -(self.log_alpha.unsqueeze(-1) * (log_prob.detach() + self.target_entropy)).mean(dim=-1)
        gradient_step(self.alpha_optimizer, alpha_loss.sum())

        polyak_update(self.target_critic, self.critic, self.config.tau)
        return {
            **metrics,
            "losses/critic": critic_loss.detach(),
            "losses/actor": actor_loss.detach(),
            "losses/alpha": alpha_loss.detach(),
            "train/alpha": alpha.squeeze(-1),
            "train/q_mean": q.detach().mean(dim=(-2, -1)),
            "train/entropy": -log_prob.detach().mean(dim=-1),
        }

    def train(self, run: RunContext) -> None:
        train_off_policy(self, run, self.config)

    def train_seeds(self, group: SeedGroup, runs: Sequence[RunContext]) -> None:
        """Train a batched group of seeds, seed s in runs[s]; this is the group's stacked agent."""
        train_off_policy_seeds(group, runs, self.config)

    # ----- checkpoints ----------------------------------------------------------------------
    checkpointed = ("actor", "critic", "target_critic", "log_alpha", "actor_optimizer", "critic_optimizer", "alpha_optimizer")
