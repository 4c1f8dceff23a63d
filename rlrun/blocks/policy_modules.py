"""Building blocks of an exported policy: the steps between a raw observation and an
environment action that `act` does on the host, as modules that TorchScript and ONNX can hold.

Each algorithm's `policy_module()` chains them around its own network, so that an exported
file needs nothing from rlrun: observation in, environment action out.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Standardize(nn.Module):
    """clip((x − μ) / √(σ² + ε), −c, c): PPO's observation normalisation, statistics frozen."""

    def __init__(self, mean: np.ndarray, var: np.ndarray, epsilon: float, clip: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(np.sqrt(var + epsilon), dtype=torch.float32))
        self.clip = clip

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return ((obs - self.mean) / self.std).clamp(-self.clip, self.clip)


class _Bounds(nn.Module):
    """Holds a Box action space's bounds as float32 buffers (exported with the module)."""

    def __init__(self, low: np.ndarray, high: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32))
        self.register_buffer("high", torch.as_tensor(high, dtype=torch.float32))


class RescaleToBounds(_Bounds):
    """[-1, 1]^|A| → [low, high]: a unit action in the environment's units."""

    def forward(self, unit_action: torch.Tensor) -> torch.Tensor:
        return self.low + 0.5 * (unit_action + 1.0) * (self.high - self.low)


class ClipToBounds(_Bounds):
    """An action clipped to [low, high] (PPO's Gaussian mean)."""

    def forward(self, action: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.maximum(action, self.low), self.high)


class Argmax(nn.Module):
    """The index of the largest of each row's values (logits or Q-values): a discrete action."""

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return values.argmax(dim=-1)
