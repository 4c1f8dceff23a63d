"""Experience storage, preallocated on the training device."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


def to_device(array: np.ndarray, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A host array as a tensor on `device`. The copy is non_blocking, so PyTorch adds no sync
    of its own; from pageable memory CUDA consumes the source before returning (the array may be
    reused at once), after the work already queued: in the loops usually none, since they copy
    right after reading an action back. On the CPU it is just the conversion."""
    return torch.as_tensor(array, dtype=dtype).to(device, non_blocking=True)


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

    def add_batch(
        self,
        obs: torch.Tensor | np.ndarray,
        actions: torch.Tensor | np.ndarray,
        rewards: np.ndarray,
        next_obs: torch.Tensor | np.ndarray,
        terminated: np.ndarray,
    ) -> None:
        """Store one transition per sub-environment of a vector step (leading dimension N).
        The training loops pass observations (and the policy's actions) as tensors already on
        the device, the ones they act on, so storing them never waits for the device; rewards
        and termination flags come from the host."""
        obs, actions, next_obs = (to_device(x, self.device) for x in (obs, actions, next_obs))
        # Rewards and flags in one host-to-device copy.
        rewards, terminated = to_device(np.stack([rewards, terminated]).astype(np.float32), self.device)
        n, stored = len(rewards), 0
        while stored < n:  # at most two contiguous runs of rows: up to the end, then from 0
            count = min(n - stored, self.capacity - self.position)
            rows, part = slice(self.position, self.position + count), slice(stored, stored + count)
            self.obs[rows], self.actions[rows], self.rewards[rows] = obs[part], actions[part], rewards[part]
            self.next_obs[rows], self.terminated[rows] = next_obs[part], terminated[part]
            self.position = (self.position + count) % self.capacity
            stored += count
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int) -> Batch:
        index = torch.randint(self.size, (batch_size,), device=self.device, generator=self.generator)
        return Batch(self.obs[index], self.actions[index], self.rewards[index], self.next_obs[index], self.terminated[index])

    def __len__(self) -> int:
        return self.size

    def state_dict(self) -> dict:
        """The stored transitions (only the filled part), the write position and the sampling
        RNG. A full buffer is most of a checkpoint's size (checkpoint.replay_buffer; sizes in
        docs/checkpoints.md)."""
        n = self.size
        return {
            "obs": self.obs[:n],
            "actions": self.actions[:n],
            "rewards": self.rewards[:n],
            "next_obs": self.next_obs[:n],
            "terminated": self.terminated[:n],
            "position": self.position,
            "size": n,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        n = state["size"]
        if n > self.capacity:
            raise ValueError(f"the saved buffer holds {n} transitions, more than this buffer's capacity {self.capacity}")
        for name in ("obs", "actions", "rewards", "next_obs", "terminated"):
            getattr(self, name)[:n] = state[name]
        self.position, self.size = state["position"], n
        self.generator.set_state(state["generator"])
