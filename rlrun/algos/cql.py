"""Conservative Q-Learning: SAC learning offline, its critics pushed down on actions outside
the dataset and up on the dataset's own.

Kumar, Zhou, Tucker & Levine 2020, "Conservative Q-Learning for Offline Reinforcement
Learning" (arXiv:2006.04779), the continuous CQL(H) variant on SAC (rlrun/algos/sac.py), with
its importance-sampled log-sum-exp and the optional Lagrangian that tunes the penalty's
weight; settings and details after CORL's cql.py (Tarasov et al. 2022). Learns from
`dataset=` through the offline loop (rlrun/loops/dataset.py).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlrun.algos.sac import MeanAction, TanhGaussianActor
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
class CQLConfig(OfflineConfig):
    """The shared offline settings (gamma, tau, batch_size, hidden_sizes, normalize_obs) plus
    CQL's own; defaults are CORL's for the D4RL MuJoCo tasks (github.com/tinkoff-ai/CORL,
    algorithms/offline/cql.py), run for 1,000,000 gradient steps."""

    lr: float = 3e-4
    """Adam step size of the critics (and of the Lagrange multiplier); the actor and the
    temperature have actor_lr (CORL's qf_lr)."""
    actor_lr: float = 1e-4
    """Adam step size of the actor and of SAC's temperature α (CORL's policy_lr)."""
    cql_alpha: float = 10.0
    """Weight of the conservative penalty in each critic's loss (CORL: 10 for the MuJoCo
    tasks, 5 elsewhere); with lagrange, the scale the learnt multiplier multiplies."""
    n_actions: int = 10
    """Actions sampled per state and per proposal (uniform, π(·|s), π(·|s')) for the
    penalty's log-sum-exp."""
    temperature: float = 1.0
    """Temperature T of the log-sum-exp, T log Σ exp(Q / T)."""
    importance_sample: bool = True
    """Estimate log ∫ exp Q da by importance sampling (each sampled Q minus its proposal's
    log-density, the paper's CQL(H)); false takes a plain log-sum-exp over the sampled and
    dataset actions."""
    lagrange: bool = False
    """Tune the penalty's weight α' ≥ 0 by dual gradient descent so the penalty stays near
    target_action_gap (the paper's CQL-Lagrange), instead of the fixed cql_alpha."""
    target_action_gap: float = -1.0
    """The penalty's target value for the Lagrange multiplier (the paper's τ; only with
    lagrange; CORL's -1, the paper uses 5 or 10 on its Lagrangian runs)."""
    num_critics: int = 2
    """Critics trained side by side; targets and the actor take their minimum."""

    def __post_init__(self) -> None:
        super().__post_init__()
        positive("algo.actor_lr", self.actor_lr)
        non_negative("algo.cql_alpha", self.cql_alpha)
        positive("algo.n_actions", self.n_actions)
        positive("algo.temperature", self.temperature)
        positive("algo.num_critics", self.num_critics)


def cql_penalty(q_sampled: torch.Tensor, q_data: torch.Tensor, temperature: float) -> torch.Tensor:
    """E_s[T log Σ_j exp(Q(s, a_j) / T) − Q(s, a_data)] for each critic: q_sampled (n, B, M)
    over M sampled actions, q_data (n, B); returns (n,). Minimising it lowers Q where the
    sampled actions' soft maximum is high and raises it on the dataset's actions."""
    soft_max = temperature * torch.logsumexp(q_sampled / temperature, dim=-1)
    return (soft_max - q_data).mean(dim=1)


class CQL(Checkpointed):
    Config = CQLConfig
    action_spaces = (gym.spaces.Box,)
    name = "cql"

    @classmethod
    def check_spaces(cls, config: CQLConfig, obs_space: gym.Space, action_space: gym.Space) -> None:
        check_continuous_spaces(cls.name, obs_space, action_space)

    def __init__(self, config: CQLConfig, obs_space: gym.Space, action_space: gym.Space, device: torch.device, seed: int) -> None:
        self.config = config
        self.device = device
        self.seed = seed
        obs_dim, action_dim = obs_space.shape[0], action_space.shape[0]
        self.action_dim = action_dim
        self.actions = BoxActions(action_space)

        self.normalizer = DatasetNormalizer(obs_dim, config.normalize_obs).to(device)
        self.actor = TanhGaussianActor(obs_dim, action_dim, config.hidden_sizes).to(device)
        self.critic = QEnsemble(obs_dim, action_dim, config.hidden_sizes, config.num_critics).to(device)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        # SAC's temperature, tuned towards the entropy target H̄ = −|A|.
        self.target_entropy = -float(action_dim)
        self.log_alpha = torch.zeros((), device=device, requires_grad=True)
        # The Lagrange multiplier α' = exp(log α'), used only with lagrange (CORL starts it at log α' = 1).
        self.log_alpha_prime = torch.ones((), device=device, requires_grad=True)
        self.actor_optimizer = adam(self.actor.parameters(), config.actor_lr)
        self.critic_optimizer = adam(self.critic.parameters(), config.lr)
        self.alpha_optimizer = adam([self.log_alpha], config.actor_lr)
        self.alpha_prime_optimizer = adam([self.log_alpha_prime], config.lr)

    # ----- acting ---------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """tanh of the policy's mean in environment units, or a sample."""
        obs_t = self.normalizer(obs_batch(obs, self.device))
        unit_action = self.actor.deterministic(obs_t) if deterministic else self.actor.sample_action(obs_t)
        return self.actions.to_env(unit_action[0].cpu().numpy())

    def policy_module(self) -> nn.Module:
        """raw observations (B, obs_dim) → tanh(mean(normalise(s))) rescaled to the bounds, for export."""
        return nn.Sequential(self.normalizer, MeanAction(self.actor), RescaleToBounds(self.actions.low, self.actions.high))

    # ----- learning -------------------------------------------------------------------------
    def sampled_q(self, obs: torch.Tensor, proposal_obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Q_i(s, ·) at n_actions actions from each proposal, shape (n, B, 3·n_actions), and
        each action's proposal log-density (B, 3·n_actions): uniform on [-1, 1]^|A|
        (density 2^−|A|), π(·|s) and π(·|s'), the last two as CORL draws them."""
        batch, m = obs.shape[0], self.config.n_actions
        repeated = obs.repeat_interleave(m, dim=0)  # (B·M, obs_dim): row b·M + j is state b
        uniform = torch.rand(batch * m, self.action_dim, device=obs.device) * 2.0 - 1.0
        uniform_log_density = torch.full((batch * m,), -self.action_dim * math.log(2.0), device=obs.device)
        with torch.no_grad():
            current, current_log_prob = self.actor.sample(repeated)
            following, following_log_prob = self.actor.sample(proposal_obs.repeat_interleave(m, dim=0))
        actions = torch.cat([uniform, current, following])  # (3·B·M, |A|)
        q = self.critic(repeated.repeat(3, 1), actions)  # (n, 3·B·M)
        q = q.view(q.shape[0], 3, batch, m).permute(0, 2, 1, 3).reshape(q.shape[0], batch, 3 * m)
        log_density = torch.stack([uniform_log_density, current_log_prob, following_log_prob]).view(3, batch, m)
        return q, log_density.permute(1, 0, 2).reshape(batch, 3 * m)

    @torch.no_grad()
    def critic_target(self, next_obs: torch.Tensor, rewards: torch.Tensor, terminated: torch.Tensor) -> torch.Tensor:
        """y = r + γ (1 − terminated) min_i Q̄_i(s', a'),  a' ~ π(·|s') (no entropy bonus: CORL's backup_entropy=False)."""
        next_action, _ = self.actor.sample(next_obs)
        next_q = self.target_critic(next_obs, next_action).min(dim=0).values
        return rewards + self.config.gamma * (1.0 - terminated) * next_q

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        config = self.config
        obs, next_obs = self.normalizer(batch.obs), self.normalizer(batch.next_obs)
        alpha = self.log_alpha.exp().detach()

        # Critics: Σ_i E[(Q_i(s, a) − y)²] + α_cql · E_s[T log Σ_j exp(Q_i(s, a_j) / T) − Q_i(s, a)],
        # the sampled a_j importance-weighted by their proposal densities: Q − log q(a_j).
        q = self.critic(obs, batch.actions)
        td_loss = ((q - self.critic_target(next_obs, batch.rewards, batch.terminated)) ** 2).mean(dim=1).sum()
        q_sampled, log_density = self.sampled_q(obs, next_obs)
        if config.importance_sample:
            q_sampled = q_sampled - log_density
        else:
            q_sampled = torch.cat([q_sampled, q.unsqueeze(-1)], dim=-1)
        penalty = cql_penalty(q_sampled, q, config.temperature)  # (n,)
        if config.lagrange:
            # α' = clip(exp(log α'), 0, 10⁶) scales α_cql (penalty − gap); α' ascends on that, so it
            # grows while the penalty exceeds target_action_gap.
            alpha_prime = self.log_alpha_prime.exp().clamp(0.0, 1e6)
            conservative = alpha_prime.detach() * config.cql_alpha * (penalty - config.target_action_gap)
            alpha_prime_loss = -(alpha_prime * config.cql_alpha * (penalty.detach() - config.target_action_gap)).mean()
            gradient_step(self.alpha_prime_optimizer, alpha_prime_loss)
        else:
            conservative = config.cql_alpha * penalty
        critic_loss = td_loss + conservative.sum()
        gradient_step(self.critic_optimizer, critic_loss)

        # Actor (SAC's): J_π = E[α log π(ã|s) − min_i Q_i(s, ã)], ã reparameterised; critics frozen.
        action, log_prob = self.actor.sample(obs)
        self.critic.requires_grad_(False)
        q_new = self.critic(obs, action).min(dim=0).values
        self.critic.requires_grad_(True)
        actor_loss = (alpha * log_prob - q_new).mean()
        gradient_step(self.actor_optimizer, actor_loss)

        # Temperature: J(α) = E[−α (log π(ã|s) + H̄)], descended in log α.
        alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
        gradient_step(self.alpha_optimizer, alpha_loss)

        polyak_update(self.target_critic, self.critic, config.tau)
        metrics = {
            "losses/critic": critic_loss.detach(),
            "losses/td": td_loss.detach(),
            "losses/cql_penalty": penalty.mean().detach(),
            "losses/actor": actor_loss.detach(),
            "losses/alpha": alpha_loss.detach(),
            "train/alpha": alpha,
            "train/q_mean": q.mean().detach(),
            "train/entropy": -log_prob.mean().detach(),
        }
        if config.lagrange:
            metrics["train/alpha_prime"] = alpha_prime.detach()
        return metrics

    def train(self, run: RunContext) -> None:
        train_offline(self, run, self.config.batch_size)

    # ----- checkpoints ----------------------------------------------------------------------
    checkpointed = (
        "normalizer",
        "actor",
        "critic",
        "target_critic",
        "log_alpha",
        "log_alpha_prime",
        "actor_optimizer",
        "critic_optimizer",
        "alpha_optimizer",
        "alpha_prime_optimizer",
    )
