"""Deep Deterministic Policy Gradient, in the TD3 paper's "OurDDPG" form.

Lillicrap et al. 2016, "Continuous control with deep reinforcement learning", as
re-implemented by Fujimoto et al. 2018 (arXiv:1802.09477, Section 6.1): 256×256 networks,
Adam 3e-4, Gaussian exploration noise, soft target updates. That is TD3 with one critic,
no target policy smoothing and no delay, so it runs TD3's code with those switched off.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import gymnasium as gym
import torch

from rlrun.algos.td3 import TD3, TD3Config
from rlrun.blocks.stacking import SeedStack
from rlrun.config import non_negative
from rlrun.loops.replay import OffPolicyConfig


@dataclass(frozen=True)
class DDPGConfig(OffPolicyConfig):
    """The shared off-policy settings (lr, gamma, tau, batch_size, buffer_size,
    learning_starts, hidden_sizes, updates_per_step) plus the exploration noise."""

    learning_starts: int = 25_000
    """As in OffPolicyConfig; 25,000 rather than SAC's 5000 to match the TD3 authors' code
    (main.py's start_timesteps), which their OurDDPG runs used too."""
    exploration_noise: float = 0.1
    """σ of the Gaussian noise added to training actions, as a fraction of the action range's
    half-width (the TD3 paper's 0.1·max_action)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        non_negative("algo.exploration_noise", self.exploration_noise)


class DDPG(TD3):
    Config = DDPGConfig
    name = "ddpg"

    def __init__(
        self,
        config: DDPGConfig,
        obs_space: gym.Space,
        action_space: gym.Space,
        device: torch.device,
        seed: int,
        stack: SeedStack | None = None,
    ) -> None:
        as_td3 = TD3Config(**dataclasses.asdict(config), num_critics=1, policy_noise=0.0, noise_clip=0.0, policy_delay=1)
        super().__init__(as_td3, obs_space, action_space, device, seed, stack)
