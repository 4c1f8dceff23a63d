"""Networks that several algorithms share: MLPs, the Nature CNN for Atari frames, the critic
ensemble, target-network updates.

A network used by one algorithm only lives in that algorithm's file (SAC's tanh-Gaussian
actor, TD3's deterministic actor, DQN's dueling head, PPO's actor-critic).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from rlrun.config import ConfigError


def hidden_layers(
    in_dim: int, hidden_sizes: Sequence[int], activation: type[nn.Module] = nn.ReLU, seeds: int | None = None
) -> nn.Sequential:
    """in → [Linear, activation] per hidden size: a torso whose output is features. With
    `seeds`, that many torsos stacked on a leading seed dimension: (S, B, in) → (S, B, out)."""
    layers: list[nn.Module] = []
    for size in hidden_sizes:
        layers += [nn.Linear(in_dim, size) if seeds is None else EnsembleLinear(seeds, in_dim, size), activation()]
        in_dim = size
    return nn.Sequential(*layers)


def mlp(
    in_dim: int, hidden_sizes: Sequence[int], out_dim: int, activation: type[nn.Module] = nn.ReLU, seeds: int | None = None
) -> nn.Sequential:
    """in → [Linear, activation] per hidden size → OutputLinear → out; with `seeds`, that many
    stacked on a leading seed dimension, as in hidden_layers."""
    torso = hidden_layers(in_dim, hidden_sizes, activation, seeds)
    features = hidden_sizes[-1] if hidden_sizes else in_dim
    output = OutputLinear(features, out_dim) if seeds is None else EnsembleLinear(seeds, features, out_dim)
    return nn.Sequential(*torso, output)


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


# ----- images ------------------------------------------------------------------------------
def is_image(obs_space: gym.spaces.Box) -> bool:
    """Frame stacks (C, H, W) of uint8 pixels go to the CNN; flat vectors to the MLP."""
    return len(obs_space.shape) == 3


def check_image_space(
    algo: str, obs_space: gym.spaces.Box, cnn: str = "Nature CNN", output_size=None, smallest: int = 36
) -> None:
    """One line if the CNN cannot take these frames: it needs uint8 pixels and sides of at least
    `smallest` pixels (`output_size` maps a side to its last feature map's; the Nature CNN's
    by default)."""
    output_size = output_size or nature_cnn_output_size
    if obs_space.dtype != np.uint8:
        raise ConfigError(f"algo={algo}'s CNN needs uint8 pixel observations (0..255), got {obs_space.dtype}")
    if min(output_size(side) for side in obs_space.shape[1:]) < 1:
        raise ConfigError(f"algo={algo}'s {cnn} needs frames of at least {smallest}×{smallest} pixels, got {obs_space.shape[1:]}")


class NatureCNN(nn.Module):
    """The Atari torso of Mnih et al. 2015: 3 conv layers and a 512-unit layer.

    Takes uint8 frame stacks (B, C, H, W) with values 0..255, scaled here to [0, 1], so that
    replay buffers and rollouts can keep uint8. Returns (B, 512) features.
    """

    out_dim = 512

    def __init__(self, in_channels: int, height: int, width: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, kernel_size=3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        conv_h, conv_w = nature_cnn_output_size(height), nature_cnn_output_size(width)
        self.fc = nn.Sequential(nn.Linear(64 * conv_h * conv_w, self.out_dim), nn.ReLU())

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(frames.float() / 255.0))


def nature_cnn_output_size(size: int) -> int:
    """Side of NatureCNN's last feature map for an input side of `size` pixels (84 → 7)."""
    for kernel, stride in ((8, 4), (4, 2), (3, 1)):
        size = (size - kernel) // stride + 1
    return size


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

    def member_of_each(self, index: int, group: int, x: torch.Tensor) -> torch.Tensor:
        """Member `index` of each run of `group` consecutive members (one seed's critics in a
        seed-stacked ensemble): (S, B, in) → (S, B, out)."""
        weight = self.weight.unflatten(0, (-1, group))[:, index]
        return torch.baddbmm(self.bias.unflatten(0, (-1, group))[:, index], x, weight)


class QEnsemble(nn.Module):
    """`n` state-action value functions Q_i(s, a), evaluated together; returns shape (n, B), or
    (n, B, outputs) when each Q has `outputs` > 1 outputs (HL-Gauss logits, rlrun/blocks/hl_gauss.py).

    With `seeds`, the ensembles of that many agents stacked seed-major as one ensemble of
    seeds × n members: observations and actions (S, B, ·) give (S, n, B) (or (S, n, B, outputs))."""

    def __init__(
        self, obs_dim: int, action_dim: int, hidden_sizes: Sequence[int], n: int, outputs: int = 1, seeds: int | None = None
    ) -> None:
        super().__init__()
        self.n = n
        self.outputs = outputs
        self.seeds = seeds
        sizes = [obs_dim + action_dim, *hidden_sizes, outputs]
        members = n * (seeds or 1)
        self.layers = nn.ModuleList(EnsembleLinear(members, a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, action], dim=-1)
        if self.seeds is None:
            x = x.expand(self.n, -1, -1)
        else:  # each seed's input goes to each of its n critics: (S, B, in) → (S·n, B, in)
            x = x.unsqueeze(1).expand(-1, self.n, -1, -1).flatten(0, 1)
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        out = in_float32(self.layers[-1], x)  # see OutputLinear
        return self._squeeze(out if self.seeds is None else out.unflatten(0, (self.seeds, self.n)))

    def member(self, index: int, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Q_index(s, a) alone, shape (B,) (or (B, outputs); (S, B, ·) when seeds are stacked),
        at 1/n of the ensemble's cost: TD3's actor loss needs only Q_1, and evaluating every
        member would double its critic passes."""
        x = torch.cat([obs, action], dim=-1)
        if self.seeds is None:
            for layer in self.layers[:-1]:
                x = F.relu(layer.member(index, x))
            return self._squeeze(in_float32(partial(self.layers[-1].member, index), x))
        for layer in self.layers[:-1]:
            x = F.relu(layer.member_of_each(index, self.n, x))
        return self._squeeze(in_float32(partial(self.layers[-1].member_of_each, index, self.n), x))

    def _squeeze(self, out: torch.Tensor) -> torch.Tensor:
        return out.squeeze(-1) if self.outputs == 1 else out


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """θ_target ← (1 − τ)·θ_target + τ·θ_source, as one fused op over all parameters."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)
