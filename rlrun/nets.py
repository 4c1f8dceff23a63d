"""Networks that several algorithms share: MLPs, the critic ensemble, target-network updates.

A network used by one algorithm only lives in that algorithm's file (SAC's tanh-Gaussian
actor, TD3's deterministic actor, DQN's Nature CNN and dueling head, PPO's actor-critic).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F


def hidden_layers(in_dim: int, hidden_sizes: Sequence[int], activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """in → [Linear, activation] per hidden size: a torso whose output is features."""
    layers: list[nn.Module] = []
    for size in hidden_sizes:
        layers += [nn.Linear(in_dim, size), activation()]
        in_dim = size
    return nn.Sequential(*layers)


def mlp(in_dim: int, hidden_sizes: Sequence[int], out_dim: int, activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """in → [Linear, activation] per hidden size → OutputLinear → out."""
    torso = hidden_layers(in_dim, hidden_sizes, activation)
    return nn.Sequential(*torso, OutputLinear(hidden_sizes[-1] if hidden_sizes else in_dim, out_dim))


def in_float32(forward, x: torch.Tensor) -> torch.Tensor:
    """`forward(x)` computed in float32, also under bfloat16 autocast (precision=bfloat16)."""
    if not torch.is_autocast_enabled(x.device.type):
        return forward(x)
    with torch.autocast(x.device.type, enabled=False):
        return forward(x.float())


class OutputLinear(nn.Linear):
    """A network's last layer: float32 even under bfloat16 autocast. Its outputs are values,
    logits, means and log-stds, and bfloat16's 8-bit mantissa would round a Q-value near 500
    to a multiple of 4; hidden layers are where mixed precision saves time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return in_float32(super().forward, x)


class EnsembleLinear(nn.Module):
    """`n` independent Linear layers applied as one batched matmul: (n, B, in) → (n, B, out).

    Each member is initialised like nn.Linear, so an ensemble of n equals n separate MLPs.
    """

    def __init__(self, n: int, in_features: int, out_features: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        # kaiming_uniform(a=√5) as nn.Linear uses reduces to U(-1/√in, 1/√in) for the weights too.
        self.weight = nn.Parameter(torch.empty(n, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, 1, out_features).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)

    def member(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Member `index` alone: (B, in) → (B, out)."""
        return torch.addmm(self.bias[index], x, self.weight[index])


class QEnsemble(nn.Module):
    """`n` state-action value functions Q_i(s, a), evaluated together; returns shape (n, B), or
    (n, B, outputs) when each Q has `outputs` > 1 outputs (HL-Gauss logits, rlrun/hl_gauss.py)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_sizes: Sequence[int], n: int, outputs: int = 1) -> None:
        super().__init__()
        self.n = n
        self.outputs = outputs
        sizes = [obs_dim + action_dim, *hidden_sizes, outputs]
        self.layers = nn.ModuleList(EnsembleLinear(n, a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, action], dim=-1).expand(self.n, -1, -1)
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self._squeeze(in_float32(self.layers[-1], x))  # see OutputLinear

    def member(self, index: int, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Q_index(s, a) alone, shape (B,) (or (B, outputs)), at 1/n of the ensemble's cost:
        TD3's actor loss needs only Q_1, and evaluating every member would double its critic passes."""
        x = torch.cat([obs, action], dim=-1)
        for layer in self.layers[:-1]:
            x = F.relu(layer.member(index, x))
        return self._squeeze(in_float32(partial(self.layers[-1].member, index), x))

    def _squeeze(self, out: torch.Tensor) -> torch.Tensor:
        return out.squeeze(-1) if self.outputs == 1 else out


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """θ_target ← (1 − τ)·θ_target + τ·θ_source, as one fused op over all parameters."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)
