"""Experience storage, preallocated on the training device."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class Batch(NamedTuple):
    obs: torch.Tensor  # (B, *obs_shape), in the buffer's obs_dtype
    actions: torch.Tensor  # (B, *action_shape), in the buffer's action_dtype
    rewards: torch.Tensor  # (B,)
    next_obs: torch.Tensor  # (B, *obs_shape)
    terminated: torch.Tensor  # (B,) 1.0 where the episode truly ended; truncations stay 0.0


class ReplayBuffer:
    """A ring buffer of transitions, sampled uniformly with replacement.

    `terminated` is stored without the time-limit truncation flag, so targets still
    bootstrap from states where an episode was only cut off.

    Observations and actions keep the dtypes given: float32 vectors and continuous actions by
    default; uint8 frames (a quarter of float32's memory, scaled by the network) and int64
    discrete actions (shape ()) for DQN on Atari. Memory: 2 × capacity × obs bytes, since
    obs and next_obs are both stored.
    """

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        action_shape: tuple[int, ...],
        device: torch.device,
        seed: int,
        obs_dtype: torch.dtype = torch.float32,
        action_dtype: torch.dtype = torch.float32,
    ) -> None:
        self.capacity = capacity
        self.device = device
        self.obs = torch.zeros((capacity, *obs_shape), dtype=obs_dtype, device=device)
        self.next_obs = torch.zeros_like(self.obs)
        self.actions = torch.zeros((capacity, *action_shape), dtype=action_dtype, device=device)
        self.rewards = torch.zeros(capacity, dtype=torch.float32, device=device)
        self.terminated = torch.zeros(capacity, dtype=torch.float32, device=device)
        self.position = 0
        self.size = 0
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def add(
        self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray, terminated: bool
    ) -> None:
        i = self.position
        self.obs[i] = torch.as_tensor(obs)
        self.actions[i] = torch.as_tensor(action)
        self.rewards[i] = float(reward)
        self.next_obs[i] = torch.as_tensor(next_obs)
        self.terminated[i] = float(terminated)
        self.position = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int) -> Batch:
        index = torch.randint(self.size, (batch_size,), device=self.device, generator=self.generator)
        return Batch(
            self.obs[index], self.actions[index], self.rewards[index], self.next_obs[index], self.terminated[index]
        )

    def __len__(self) -> int:
        return self.size

    def state_dict(self) -> dict:
        """The stored transitions (only the filled part), the write position and the sampling
        RNG. HalfCheetah's 1e6 transitions are about 168 MB (see the README)."""
        n = self.size
        return {
            "obs": self.obs[:n], "actions": self.actions[:n], "rewards": self.rewards[:n],
            "next_obs": self.next_obs[:n], "terminated": self.terminated[:n],
            "position": self.position, "size": n, "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        n = state["size"]
        if n > self.capacity:
            raise ValueError(f"the saved buffer holds {n} transitions, more than this buffer's capacity {self.capacity}")
        for name in ("obs", "actions", "rewards", "next_obs", "terminated"):
            getattr(self, name)[:n] = state[name]
        self.position, self.size = state["position"], n
        self.generator.set_state(state["generator"])
