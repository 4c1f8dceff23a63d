"""The offline loop: sample, update, after_step. The offline algorithms (TD3+BC, IQL, CQL)
learn from a fixed dataset (`dataset=`) through `train_offline`; every step is one gradient
step, and the run evaluates the policy in the dataset's environment on its schedule.

The dataset lives on the device as one ReplayBuffer (actions in [-1, 1], as the online loops
store them). Checkpoints hold its sampling RNG, not its transitions: a resumed run reads the
dataset again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from rlrun.blocks.buffers import Batch, ReplayBuffer
from rlrun.blocks.spaces import BoxActions
from rlrun.config import ConfigError, in_range, layer_sizes, positive
from rlrun.envs.datasets import Transitions
from rlrun.protocols import RunContext


@dataclass(frozen=True)
class OfflineConfig:
    """The settings every offline actor-critic here has (TD3+BC, IQL, CQL); defaults are the
    ones their papers share for the D4RL MuJoCo tasks unless a subclass says otherwise."""

    lr: float = 3e-4
    """Adam step size for every network."""
    gamma: float = 0.99
    """Discount factor of future rewards."""
    tau: float = 0.005
    """Polyak factor of the target networks: θ̄ ← τθ + (1 − τ)θ̄ at each target update."""
    batch_size: int = 256
    """Transitions sampled uniformly from the dataset per gradient step."""
    hidden_sizes: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the actor's and of each critic's MLP."""
    normalize_obs: bool = True
    """Standardise observations with the dataset's per-dimension mean and standard deviation
    (saved in checkpoints, applied when acting and in the exported policy)."""

    def __post_init__(self) -> None:
        positive("algo.lr", self.lr)
        in_range("algo.gamma", self.gamma, 0.0, 1.0)
        in_range("algo.tau", self.tau, 0.0, 1.0)
        positive("algo.batch_size", self.batch_size)
        layer_sizes("algo.hidden_sizes", self.hidden_sizes)


class DatasetNormalizer(nn.Module):
    """(s − μ) / σ with μ and σ the dataset's per-dimension observation mean and standard
    deviation (+ ε, as TD3+BC's code: states.std(0) + 1e-3); the identity until `fit`, and when
    disabled. A module, so checkpoints save its statistics and the exported policy holds them."""

    def __init__(self, obs_dim: int, enabled: bool, epsilon: float = 1e-3) -> None:
        super().__init__()
        self.enabled, self.epsilon = enabled, epsilon
        self.register_buffer("mean", torch.zeros(obs_dim))
        self.register_buffer("std", torch.ones(obs_dim))

    @torch.no_grad()
    def fit(self, obs: torch.Tensor) -> None:
        if self.enabled:
            self.mean.copy_(obs.mean(dim=0))
            self.std.copy_(obs.std(dim=0) + self.epsilon)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.mean) / self.std


class DatasetSampling:
    """The dataset buffer's sampling RNG as a loop part for checkpoints (the transitions are the
    dataset itself, read again on resume), with the dataset's size to check it is the same."""

    def __init__(self, buffer: ReplayBuffer) -> None:
        self.buffer = buffer

    def state_dict(self) -> dict:
        return {"generator": self.buffer.generator.get_state(), "size": self.buffer.size}

    def load_state_dict(self, state: dict) -> None:
        if state["size"] != self.buffer.size:
            raise ConfigError(
                f"the checkpoint was trained on a dataset of {state['size']} transitions, but dataset= now holds "
                f"{self.buffer.size}; resume with the dataset it started with, or start a new run folder"
            )
        self.buffer.generator.set_state(state["generator"])


class OfflineAgent(Protocol):
    actions: BoxActions
    device: torch.device
    seed: int
    normalizer: DatasetNormalizer

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One gradient step on a batch of raw (unnormalised) transitions; on-device metrics."""


def dataset_buffer(data: Transitions, actions: BoxActions, device: torch.device, seed: int) -> ReplayBuffer:
    """A dataset as one full ReplayBuffer on `device`, actions mapped to [-1, 1] (and clipped
    there: a dataset may hold actions the environment would have clipped)."""
    unit_actions = np.clip(actions.to_unit(data.actions), -1.0, 1.0).astype(np.float32)
    buffer = ReplayBuffer(len(data.rewards), data.obs.shape[1:], data.actions.shape[1:], device, seed)
    buffer.add_batch(data.obs, unit_actions, data.rewards, data.next_obs, data.terminated)
    return buffer


def train_offline(agent: OfflineAgent, run: RunContext, batch_size: int, data: Transitions | None = None) -> None:
    """run.total_steps gradient steps, each on `batch_size` transitions drawn uniformly from
    the dataset (`data`, if the agent has read it already); the run logs, evaluates and
    checkpoints after each."""
    buffer = dataset_buffer(run.dataset() if data is None else data, agent.actions, agent.device, agent.seed)
    agent.normalizer.fit(buffer.obs)  # a resumed run restores the same statistics from its checkpoint
    _, step = run.start(agent, loop={"sampling": DatasetSampling(buffer)})
    while step < run.total_steps:
        step += 1
        run.record(agent.update(buffer.sample(batch_size)))
        run.after_step(step)
