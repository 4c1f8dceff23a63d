"""CrossQ: SAC without target networks, with batch renormalisation in actor and critics.

Bhatt et al. 2024, "CrossQ: Batch Normalization in Deep Reinforcement Learning for Greater
Sample Efficiency and Simplicity" (ICLR 2024, openreview.net/forum?id=PczQtTsTIX). Three changes to SAC
(rlrun/algos/sac.py, whose actor it uses): no target critics; batch renormalisation layers in
the critics and the actor; and one joint critic pass over the current (s, a) and next
(s', a') state-actions, so that both share the same batch statistics. Wide critics, Adam with
β₁ = 0.5 and a delayed policy are the paper's settings. Actions are in [-1, 1]^|A|, as in SAC.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import gymnasium as gym
import torch
from torch import nn
from torch.nn import functional as F

from rlrun.algos.sac import TanhGaussianActing, TanhGaussianActor
from rlrun.blocks.buffers import Batch
from rlrun.blocks.nets import EnsembleLinear, in_float32
from rlrun.blocks.optim import Adam, gradient_step
from rlrun.blocks.spaces import BoxActions, check_continuous_spaces
from rlrun.blocks.state import Checkpointed
from rlrun.config import ConfigError, in_range, layer_sizes, non_negative, positive
from rlrun.loops.replay import ReplayLoopConfig, train_off_policy
from rlrun.protocols import RunContext


@dataclass(frozen=True)
class CrossQConfig(ReplayLoopConfig):
    """CrossQ's settings; defaults are the paper's, as the authors' train.py
    (github.com/adityab/CrossQ) sets them for `-algo crossq`. batch_size (the critics' joint
    pass sees twice as many rows, current and next state-actions), buffer_size,
    learning_starts, updates_per_step (critic updates) and num_envs are the replay loop's."""

    lr: float = 1e-3
    """Adam step size for actor, critics and temperature."""
    adam_beta1: float = 0.5
    """Adam's β₁ for actor and critics, the paper's 0.5 rather than Adam's usual 0.9 (β₂ stays
    0.999); the temperature's Adam keeps 0.9, as in the authors' code and sb3-contrib."""
    gamma: float = 0.99
    """Discount factor of future rewards."""
    actor_hidden_sizes: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the actor."""
    critic_hidden_sizes: tuple[int, ...] = (2048, 2048)
    """Hidden layer widths of each critic: the paper's wide critics by default; [256, 256] is
    much cheaper on a CPU (docs/benchmarks.md compares the two)."""
    num_critics: int = 2
    """Critics trained side by side; targets and the actor's loss take their minimum (clipped double-Q)."""
    policy_delay: int = 3
    """Critic updates per actor and temperature update (the paper's 3)."""
    init_temperature: float = 1.0
    """The entropy temperature α at the start; it is then learnt."""
    target_entropy: float | Literal["auto"] = "auto"
    """The policy entropy the temperature is tuned towards, in nats; auto = −|A|."""
    batch_norm_momentum: float = 0.01
    """Weight of each training batch in the running mean and variance of the batch
    renormalisation layers: μ ← μ + m (μ_B − μ) (the paper's 0.99 in Flax's convention, 1 − m)."""
    renorm_warmup_steps: int = 100_000
    """Training passes of each batch renormalisation layer during which it is plain batch
    normalisation (r = 1, d = 0); the critics pass once per critic update, the actor once per
    actor update."""

    def __post_init__(self) -> None:
        super().__post_init__()
        positive("algo.lr", self.lr)
        if not 0.0 <= self.adam_beta1 < 1.0:
            raise ConfigError(f"algo.adam_beta1={self.adam_beta1!r} must lie in [0.0, 1.0)")
        in_range("algo.gamma", self.gamma, 0.0, 1.0)
        layer_sizes("algo.actor_hidden_sizes", self.actor_hidden_sizes)
        layer_sizes("algo.critic_hidden_sizes", self.critic_hidden_sizes)
        positive("algo.num_critics", self.num_critics)
        positive("algo.policy_delay", self.policy_delay)
        positive("algo.init_temperature", self.init_temperature)
        if not 0.0 < self.batch_norm_momentum <= 1.0:
            raise ConfigError(f"algo.batch_norm_momentum={self.batch_norm_momentum!r} must lie in (0.0, 1.0]")
        non_negative("algo.renorm_warmup_steps", self.renorm_warmup_steps)


# ----- networks -----------------------------------------------------------------------------
RENORM_EPS = 1e-3  # added to variances (Flax's and the CrossQ code's BatchRenorm)
R_MAX, D_MAX = 3.0, 5.0  # bounds of the renormalisation's correction (the CrossQ code's)


class BatchRenorm(nn.Module):
    """Batch renormalisation (Ioffe 2017, arXiv:1702.03275) over the batch axis, −2.

    In training mode, with the batch's mean μ_B and standard deviation σ_B and the running
    μ and σ (σ² + ε under each root, the batch variance without Bessel's correction):

        x̂ = (x − μ_B) / σ_B · r + d,   r = sg(clip(σ_B / σ, 1/r_max, r_max)),
                                       d = sg(clip((μ_B − μ) / σ, −d_max, d_max)),

    sg = stop-gradient. Unclipped, x̂ = (x − μ)/σ: the running statistics' output with the
    gradient of batch normalisation. For the first `warmup_steps` training passes r = 1 and
    d = 0, plain batch normalisation. Each training pass then moves μ ← μ + m (μ_B − μ) and
    σ² ← σ² + m (σ_B² − σ²). In evaluation mode x̂ = (x − μ)/σ and nothing changes. The output
    is γ x̂ + β.

    With `ensemble_size` n, inputs are (n, B, features) and each member has its own
    statistics and γ, β (the critic ensemble's layout).
    """

    def __init__(
        self, num_features: int, ensemble_size: int | None = None, momentum: float = 0.01, warmup_steps: int = 100_000
    ) -> None:
        super().__init__()
        shape = (num_features,) if ensemble_size is None else (ensemble_size, 1, num_features)
        self.momentum, self.warmup_steps = momentum, warmup_steps
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))
        self.register_buffer("running_mean", torch.zeros(shape))
        self.register_buffer("running_var", torch.ones(shape))
        # Training passes so far; a tensor, so that checkpoints keep it and the warm-up test
        # below stays on the device.
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Statistics in float32 also under bfloat16 autocast (precision=bfloat16).
        return in_float32(self.normalise, x)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        running_std = (self.running_var + RENORM_EPS).sqrt()
        if not self.training:
            return self.weight * (x - self.running_mean) / running_std + self.bias
        batch_mean = x.mean(dim=-2, keepdim=True)
        batch_var = x.var(dim=-2, keepdim=True, correction=0)
        batch_std = (batch_var + RENORM_EPS).sqrt()
        with torch.no_grad():
            warmed_up = self.steps >= self.warmup_steps
            r = torch.where(warmed_up, (batch_std / running_std).clamp(1.0 / R_MAX, R_MAX), 1.0)
            d = torch.where(warmed_up, ((batch_mean - self.running_mean) / running_std).clamp(-D_MAX, D_MAX), 0.0)
            self.running_mean.lerp_(batch_mean.reshape(self.running_mean.shape), self.momentum)
            self.running_var.lerp_(batch_var.reshape(self.running_var.shape), self.momentum)
            self.steps += 1
        return self.weight * ((x - batch_mean) / batch_std * r + d) + self.bias


def batch_renorm_trunk(in_dim: int, hidden_sizes: Sequence[int], momentum: float, warmup_steps: int) -> nn.Sequential:
    """[BatchRenorm, Linear, ReLU] per hidden size, then a BatchRenorm: the actor's torso, its
    features normalised before the output layer too (the CrossQ code's layout)."""
    layers: list[nn.Module] = []
    for size in hidden_sizes:
        layers += [BatchRenorm(in_dim, momentum=momentum, warmup_steps=warmup_steps), nn.Linear(in_dim, size), nn.ReLU()]
        in_dim = size
    return nn.Sequential(*layers, BatchRenorm(in_dim, momentum=momentum, warmup_steps=warmup_steps))


class BatchRenormQEnsemble(nn.Module):
    """`n` critics Q_i(s, a) evaluated together, each [BatchRenorm, Linear, ReLU] per hidden
    size, then BatchRenorm and the output Linear; returns shape (n, B)."""

    def __init__(
        self, obs_dim: int, action_dim: int, hidden_sizes: Sequence[int], n: int, momentum: float, warmup_steps: int
    ) -> None:
        super().__init__()
        self.n = n
        sizes = [obs_dim + action_dim, *hidden_sizes]
        self.norms = nn.ModuleList(BatchRenorm(size, n, momentum, warmup_steps) for size in sizes)
        self.layers = nn.ModuleList(EnsembleLinear(n, a, b) for a, b in zip(sizes, [*hidden_sizes, 1]))

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, action], dim=-1).expand(self.n, -1, -1)
        for norm, layer in zip(self.norms[:-1], self.layers[:-1]):
            x = F.relu(layer(norm(x)))
        return in_float32(self.layers[-1], self.norms[-1](x)).squeeze(-1)  # a float32 output, as OutputLinear


@contextmanager
def batch_statistics(*networks: nn.Module) -> Iterator[None]:
    """Inside, the networks' BatchRenorm layers normalise with the batch's statistics and update
    their running ones; outside, the networks stay in evaluation mode (running statistics)."""
    for network in networks:
        network.train()
    try:
        yield
    finally:
        for network in networks:
            network.eval()


class CrossQ(TanhGaussianActing, Checkpointed):
    # Acting (TanhGaussianActing) uses running statistics: the networks stay in evaluation mode
    # outside the update's batch_statistics blocks.
    Config = CrossQConfig
    action_spaces = (gym.spaces.Box,)

    @staticmethod
    def check_spaces(config: CrossQConfig, obs_space: gym.Space, action_space: gym.Space) -> None:
        check_continuous_spaces("crossq", obs_space, action_space)

    def __init__(
        self, config: CrossQConfig, obs_space: gym.Space, action_space: gym.Space, device: torch.device, seed: int
    ) -> None:
        self.config = config
        self.device = device
        self.seed = seed
        obs_dim, action_dim = obs_space.shape[0], action_space.shape[0]
        self.actions = BoxActions(action_space)
        renorm = dict(momentum=config.batch_norm_momentum, warmup_steps=config.renorm_warmup_steps)

        trunk = batch_renorm_trunk(obs_dim, config.actor_hidden_sizes, **renorm)
        self.actor = TanhGaussianActor(obs_dim, action_dim, config.actor_hidden_sizes, trunk=trunk).to(device).eval()
        self.critic = BatchRenormQEnsemble(obs_dim, action_dim, config.critic_hidden_sizes, config.num_critics, **renorm)
        self.critic = self.critic.to(device).eval()
        self.log_alpha = torch.tensor(math.log(config.init_temperature), device=device, requires_grad=True)
        self.target_entropy = -float(action_dim) if config.target_entropy == "auto" else config.target_entropy

        betas = (config.adam_beta1, 0.999)
        self.actor_optimizer = Adam(self.actor.parameters(), config.lr, betas=betas)
        self.critic_optimizer = Adam(self.critic.parameters(), config.lr, betas=betas)
        self.alpha_optimizer = Adam([self.log_alpha], config.lr)
        self.critic_updates = 0

    # ----- learning -------------------------------------------------------------------------
    def critic_loss(self, batch: Batch, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """J_Q = ½ Σ_i E[(Q_i(s, a) − y)²],  y = r + γ (1 − terminated) (min_i sg(Q_i(s', a')) − α log π(a'|s')),

        a' ~ π(·|s') (the actor on running statistics). Q(s, a) and Q(s', a') come from one pass
        of the critics in training mode over the 2B rows, so both halves are normalised with the
        statistics of their mixture. The next-state half is only a target: no gradient flows
        through its values, only through its share of the batch statistics. Returns the loss
        and Q(s, a).
        """
        batch_size = batch.obs.shape[0]
        with torch.no_grad():
            next_action, next_log_prob = self.actor.sample(batch.next_obs)
        with batch_statistics(self.critic):
            q_both = self.critic(torch.cat([batch.obs, batch.next_obs]), torch.cat([batch.actions, next_action]))
        q, next_q = q_both.split(batch_size, dim=1)
        with torch.no_grad():
            soft_value = next_q.min(dim=0).values - alpha * next_log_prob
            target = batch.rewards + self.config.gamma * (1.0 - batch.terminated) * soft_value
        return 0.5 * ((q - target) ** 2).mean(dim=1).sum(), q

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        alpha = self.log_alpha.exp().detach()
        critic_loss, q = self.critic_loss(batch, alpha)
        gradient_step(self.critic_optimizer, critic_loss)
        self.critic_updates += 1
        metrics = {"losses/critic": critic_loss.detach(), "train/alpha": alpha, "train/q_mean": q.mean().detach()}
        if self.critic_updates % self.config.policy_delay:
            return metrics  # the run keeps the latest actor metrics until the next actor update

        # Actor, every policy_delay critic updates: J_π = E[α log π(ã|s) − min_i Q_i(s, ã)],
        # ã reparameterised; the actor's layers on batch statistics, the critics on running
        # ones and frozen, so the backward pass skips their weight gradients.
        with batch_statistics(self.actor):
            action, log_prob = self.actor.sample(batch.obs)
        self.critic.requires_grad_(False)
        q_new = self.critic(batch.obs, action).min(dim=0).values
        self.critic.requires_grad_(True)
        actor_loss = (alpha * log_prob - q_new).mean()
        gradient_step(self.actor_optimizer, actor_loss)

        # Temperature, learnt as log α (as SAC's): J(log α) = E[−log α · (log π(ã|s) + H̄)].
        alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
        gradient_step(self.alpha_optimizer, alpha_loss)
        return {
            **metrics,
            "losses/actor": actor_loss.detach(),
            "losses/alpha": alpha_loss.detach(),
            "train/entropy": -log_prob.mean().detach(),
        }

    def train(self, run: RunContext) -> None:
        train_off_policy(self, run, self.config)

    # ----- checkpoints ----------------------------------------------------------------------
    # The actor's state holds its batch renormalisation layers' running statistics and step counts.
    checkpointed = ("actor", "critic", "log_alpha", "actor_optimizer", "critic_optimizer", "alpha_optimizer", "critic_updates")
