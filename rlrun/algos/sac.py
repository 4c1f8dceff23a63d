"""Soft Actor-Critic with twin critics and automatic temperature.

Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications" (arXiv:1812.05905).
The policy acts in [-1, 1]^|A|; actions are rescaled to the environment's bounds only
when they are sent to the environment, so the replay buffer and critics see unit actions.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal

import gymnasium as gym
import numpy as np
import torch

from rlrun.buffers import Batch, ReplayBuffer
from rlrun.config import ConfigError, in_range, non_negative, positive
from rlrun.nets import QEnsemble, TanhGaussianActor, adam, gradient_step, polyak_update


@dataclass(frozen=True)
class SACConfig:
    lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    batch_size: int = 256
    buffer_size: int = 1_000_000
    learning_starts: int = 5000
    hidden_sizes: tuple[int, ...] = (256, 256)
    num_critics: int = 2
    init_temperature: float = 1.0
    target_entropy: float | Literal["auto"] = "auto"
    updates_per_step: int = 1

    def __post_init__(self) -> None:
        positive("algo.lr", self.lr)
        in_range("algo.gamma", self.gamma, 0.0, 1.0)
        in_range("algo.tau", self.tau, 0.0, 1.0)
        positive("algo.batch_size", self.batch_size)
        positive("algo.buffer_size", self.buffer_size)
        if self.batch_size > self.buffer_size:
            raise ConfigError(
                f"algo.batch_size={self.batch_size} is larger than algo.buffer_size={self.buffer_size}"
            )
        non_negative("algo.learning_starts", self.learning_starts)
        if not self.hidden_sizes:
            raise ConfigError("algo.hidden_sizes=[] needs at least one layer, e.g. [256, 256]")
        for i, size in enumerate(self.hidden_sizes):
            positive(f"algo.hidden_sizes[{i}]", size)
        positive("algo.num_critics", self.num_critics)
        positive("algo.init_temperature", self.init_temperature)
        positive("algo.updates_per_step", self.updates_per_step)


class SAC:
    Config = SACConfig
    action_spaces = (gym.spaces.Box,)

    @staticmethod
    def check_spaces(config: SACConfig, obs_space: gym.Space, action_space: gym.Space) -> None:
        if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
            raise ConfigError(f"algo=sac needs a bounded action space, got low={action_space.low} high={action_space.high}")
        if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
            raise ConfigError(f"algo=sac needs flat vector observations, got {obs_space}")

    def __init__(
        self, config: SACConfig, obs_space: gym.Space, action_space: gym.Space, device: torch.device, seed: int
    ) -> None:
        self.config = config
        self.device = device
        self.seed = seed
        obs_dim, action_dim = obs_space.shape[0], action_space.shape[0]
        self.obs_shape, self.action_shape = obs_space.shape, action_space.shape
        self.action_low, self.action_high = action_space.low, action_space.high

        self.actor = TanhGaussianActor(obs_dim, action_dim, config.hidden_sizes).to(device)
        self.critic = QEnsemble(obs_dim, action_dim, config.hidden_sizes, config.num_critics).to(device)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        # The temperature is learnt as log α so it stays positive.
        self.log_alpha = torch.tensor(math.log(config.init_temperature), device=device, requires_grad=True)
        self.target_entropy = -float(action_dim) if config.target_entropy == "auto" else config.target_entropy

        self.actor_optimizer = adam(self.actor.parameters(), config.lr)
        self.critic_optimizer = adam(self.critic.parameters(), config.lr)
        self.alpha_optimizer = adam([self.log_alpha], config.lr)

    # ----- acting ---------------------------------------------------------------------------
    def to_env(self, unit_action: np.ndarray) -> np.ndarray:
        return self.action_low + 0.5 * (unit_action + 1.0) * (self.action_high - self.action_low)

    def to_unit(self, env_action: np.ndarray) -> np.ndarray:
        return 2.0 * (env_action - self.action_low) / (self.action_high - self.action_low) - 1.0

    def _obs_tensor(self, obs: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(obs, dtype=torch.float32, device=self.device).unsqueeze(0)

    @torch.no_grad()
    def explore(self, obs: np.ndarray) -> np.ndarray:
        """A stochastic unit action for training."""
        return self.actor.sample(self._obs_tensor(obs))[0][0].cpu().numpy()

    @torch.no_grad()
    def policy(self, obs: np.ndarray) -> np.ndarray:
        """The deterministic (mean) action in environment units, for evaluation."""
        return self.to_env(self.actor.deterministic(self._obs_tensor(obs))[0].cpu().numpy())

    # ----- learning -------------------------------------------------------------------------
    @torch.no_grad()
    def critic_target(self, batch: Batch) -> torch.Tensor:
        """y = r + γ (1 − terminated) (min_i Q̄_i(s', a') − α log π(a'|s')),  a' ~ π(·|s').

        Only true terminations stop bootstrapping; a time-limit truncation still bootstraps.
        """
        next_action, next_log_prob = self.actor.sample(batch.next_obs)
        next_q = self.target_critic(batch.next_obs, next_action).min(dim=0).values
        soft_value = next_q - self.log_alpha.exp() * next_log_prob
        return batch.rewards + self.config.gamma * (1.0 - batch.terminated) * soft_value

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        alpha = self.log_alpha.exp().detach()

        # Critics: J_Q = ½ Σ_i E[(Q_i(s, a) − y)²]
        q = self.critic(batch.obs, batch.actions)
        critic_loss = 0.5 * ((q - self.critic_target(batch)) ** 2).mean(dim=1).sum()
        gradient_step(self.critic_optimizer, critic_loss)

        # Actor: J_π = E[α log π(ã|s) − min_i Q_i(s, ã)], ã reparameterised. The critics are
        # frozen here so the backward pass skips their weight gradients.
        action, log_prob = self.actor.sample(batch.obs)
        self.critic.requires_grad_(False)
        q_new = self.critic(batch.obs, action).min(dim=0).values
        self.critic.requires_grad_(True)
        actor_loss = (alpha * log_prob - q_new).mean()
        gradient_step(self.actor_optimizer, actor_loss)

        # Temperature: J(α) = E[−α (log π(ã|s) + H̄)], descended in log α; α rises while the
        # policy's entropy is below the target H̄ and falls while it is above.
        alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
        gradient_step(self.alpha_optimizer, alpha_loss)

        polyak_update(self.target_critic, self.critic, self.config.tau)
        return {
            "losses/critic": critic_loss.detach(),
            "losses/actor": actor_loss.detach(),
            "losses/alpha": alpha_loss.detach(),
            "train/alpha": alpha,
            "train/q_mean": q.mean().detach(),
            "train/entropy": -log_prob.mean().detach(),
        }

    # ----- the loop -------------------------------------------------------------------------
    def train(self, run) -> None:
        config = self.config
        env = run.env
        # A buffer larger than the run would only hold zeros.
        capacity = min(config.buffer_size, run.total_steps)
        buffer = ReplayBuffer(capacity, self.obs_shape, self.action_shape, self.device, self.seed)
        metrics = None

        obs, _ = env.reset(seed=run.seed)
        for step in range(1, run.total_steps + 1):
            if step <= config.learning_starts:
                action = self.to_unit(env.action_space.sample())
            else:
                action = self.explore(obs)
            next_obs, reward, terminated, truncated, info = env.step(self.to_env(action))
            buffer.add(obs, action, reward, next_obs, terminated)
            obs = next_obs
            if terminated or truncated:
                run.episode_end(step, info["episode"]["r"], info["episode"]["l"])
                obs, _ = env.reset()

            if step > config.learning_starts:
                for _ in range(config.updates_per_step):
                    metrics = self.update(buffer.sample(config.batch_size))
            run.after_step(step, self, metrics)

    # ----- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "target_critic": self.target_critic.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "alpha_optimizer": self.alpha_optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.target_critic.load_state_dict(state["target_critic"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.alpha_optimizer.load_state_dict(state["alpha_optimizer"])
