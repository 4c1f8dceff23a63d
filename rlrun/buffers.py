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

    def add(
        self,
        obs: torch.Tensor | np.ndarray,
        action: torch.Tensor | np.ndarray | int,
        reward: float,
        next_obs: torch.Tensor | np.ndarray,
        terminated: bool,
    ) -> None:
        """Store one transition. The training loops pass the observations as tensors already
        on the device (the ones they act on), so storing never waits for the device. Scalars
        are filled in place: on a GPU that is a kernel argument, not a copy from the host."""
        i = self.position
        self.obs[i] = to_device(obs, self.device)
        if np.isscalar(action):  # DQN's random actions
            self.actions[i].fill_(action)
        else:
            self.actions[i] = to_device(action, self.device)
        self.rewards[i].fill_(float(reward))
        self.next_obs[i] = to_device(next_obs, self.device)
        self.terminated[i].fill_(float(terminated))
        self.position = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

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
