"""Observation and action spaces as the networks see them: continuous actions in [-1, 1],
the checks every continuous-action algorithm makes, one observation as a batch of one."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from rlrun.blocks.buffers import to_device
from rlrun.config import ConfigError


class BoxActions:
    """Policies act in [-1, 1]^|A|; the environment gets actions rescaled to [low, high]."""

    def __init__(self, space: gym.spaces.Box) -> None:
        self.low, self.high = space.low, space.high

    def to_env(self, unit_action: np.ndarray) -> np.ndarray:
        return self.low + 0.5 * (unit_action + 1.0) * (self.high - self.low)

    def to_unit(self, env_action: np.ndarray) -> np.ndarray:
        return 2.0 * (env_action - self.low) / (self.high - self.low) - 1.0


def check_continuous_spaces(algo: str, obs_space: gym.Space, action_space: gym.spaces.Box) -> None:
    if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
        raise ConfigError(f"algo={algo} needs a bounded action space, got low={action_space.low} high={action_space.high}")
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise ConfigError(f"algo={algo} needs flat vector observations, got {obs_space}")


def obs_batch(obs: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """One observation (a host array, or a tensor already on `device`) as a float32 batch of one."""
    return to_device(obs, device, torch.float32).unsqueeze(0)
