"""HL-Gauss: a value function learnt by classification instead of regression.

Farebrother et al. 2024, "Stop Regressing: Training Value Functions via Classification for
Scalable Deep RL" (arXiv:2403.03950), Section 3 and Appendix A. The network outputs logits
over `num_bins` bins of a fixed support [v_min, v_max]; its value is the mean of that
histogram. A scalar TD target y becomes the histogram of N(y, σ²) restricted to the support,
and the loss is the cross-entropy between that histogram and the network's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from rlrun.config import ConfigError, RunError, positive

CriticLoss = Literal["mse", "hl_gauss"]


@dataclass(frozen=True)
class ValueSupportConfig:
    """The HL-Gauss settings of an algorithm with `critic_loss=hl_gauss` (unused otherwise)."""

    num_bins: int = 101
    """Bins of the value histogram over [v_min, v_max]; each Q becomes num_bins logits."""
    v_min: float | None = None
    """The support's lower end: below every Q-value the run can meet. Required with
    critic_loss=hl_gauss; the tuned configs set it per environment."""
    v_max: float | None = None
    """The support's upper end: above every Q-value the run can meet. Required with
    critic_loss=hl_gauss; for rewards in [r_min, r_max], [r_min, r_max] / (1 − γ) holds
    every discounted return."""
    sigma_ratio: float = 0.75
    """σ of the Gaussian that smooths each target, in bin widths (the paper's σ/ς = 0.75)."""

    def check_value_support(self, critic_loss: str) -> None:
        positive("algo.sigma_ratio", self.sigma_ratio)
        if self.num_bins < 2:
            raise ConfigError(f"algo.num_bins={self.num_bins} must be at least 2 (a histogram of one bin holds one value)")
        if critic_loss != "hl_gauss":
            return
        if self.v_min is None or self.v_max is None:
            raise ConfigError(
                "algo.critic_loss=hl_gauss needs the value support: set algo.v_min and algo.v_max "
                "(e.g. [r_min, r_max] / (1 − gamma) for rewards in [r_min, r_max])"
            )
        if self.v_min >= self.v_max:
            raise ConfigError(f"algo.v_min={self.v_min} must be below algo.v_max={self.v_max}")


class HLGauss(nn.Module):
    """The transform between scalar values and histograms over a fixed support, and the loss.

    Edges z_0 = v_min < z_1 < ... < z_m = v_max (m = num_bins, width ς = (v_max − v_min)/m),
    centres c_i = (z_i + z_{i+1}) / 2, σ = sigma_ratio · ς.
    """

    def __init__(self, v_min: float, v_max: float, num_bins: int, sigma_ratio: float) -> None:
        super().__init__()
        self.v_min, self.v_max = v_min, v_max
        edges = torch.linspace(v_min, v_max, num_bins + 1)
        # Not in state_dict: they follow from the config, and checkpoints stay as without HL-Gauss.
        self.register_buffer("edges", edges, persistent=False)
        self.register_buffer("centres", (edges[:-1] + edges[1:]) / 2, persistent=False)
        self.sigma = sigma_ratio * (v_max - v_min) / num_bins

    @classmethod
    def from_config(cls, config: ValueSupportConfig) -> HLGauss:
        return cls(config.v_min, config.v_max, config.num_bins, config.sigma_ratio)

    def probs(self, target: torch.Tensor) -> torch.Tensor:
        """The target histogram of scalars y, shape (*y.shape, num_bins):

            p_i(y) = (Φ((z_{i+1} − y)/σ) − Φ((z_i − y)/σ)) / (Φ((z_m − y)/σ) − Φ((z_0 − y)/σ))

        with Φ(x) = (1 + erf(x/√2)) / 2, whose halves cancel in the ratio. y is first clipped
        into [v_min, v_max] (rlrun's choice): a target many σ outside would make both
        numerator and denominator vanish; clipped, it puts its mass on the nearest bins.
        """
        target = target.clamp(self.v_min, self.v_max)
        cdf = torch.erf((self.edges - target.unsqueeze(-1)) / (math.sqrt(2.0) * self.sigma))
        return (cdf[..., 1:] - cdf[..., :-1]) / (cdf[..., -1:] - cdf[..., :1])

    def value(self, logits: torch.Tensor) -> torch.Tensor:
        """Q = Σ_i softmax(logits)_i · c_i, the histogram's mean; shape logits.shape[:-1]."""
        # A product and a sum, not a matmul, so bfloat16 autocast leaves the values in float32.
        return (F.softmax(logits, dim=-1) * self.centres).sum(dim=-1)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy −Σ_i p_i(y) log softmax(logits)_i per value, shape logits.shape[:-1];
        `target` broadcasts against it (one y for every critic of an ensemble)."""
        return -(self.probs(target) * F.log_softmax(logits, dim=-1)).sum(dim=-1)


class SupportCheck:
    """Stops a run whose value support cannot hold its returns.

    Values are means of histograms on [v_min, v_max], so they never leave it; a TD target
    r + γQ' that does is clipped, and when many are, the critic learns the clipped values.
    Counted on the device; one host sync every `every` updates: more than `max_fraction`
    of the targets since the last look outside the support is a RunError (exit 1).
    """

    def __init__(self, v_min: float, v_max: float, every: int = 250, max_fraction: float = 0.05) -> None:
        self.v_min, self.v_max = v_min, v_max
        self.every, self.max_fraction = every, max_fraction
        self.updates = self.seen = 0
        self.outside: torch.Tensor | None = None  # targets outside since the last look, with
        self.lowest: torch.Tensor | None = None  # the lowest and highest of all targets
        self.highest: torch.Tensor | None = None

    def __call__(self, target: torch.Tensor) -> torch.Tensor:
        """Count this batch's targets; returns the fraction outside the support (a metric)."""
        outside = (target < self.v_min) | (target > self.v_max)
        if self.outside is None:
            self.outside, self.lowest, self.highest = outside.sum(), target.min(), target.max()
        else:
            self.outside = self.outside + outside.sum()
            self.lowest = torch.minimum(self.lowest, target.min())
            self.highest = torch.maximum(self.highest, target.max())
        self.seen += target.numel()
        self.updates += 1
        if self.updates % self.every == 0:
            self._look()
        return outside.float().mean()

    def _look(self) -> None:
        outside, lowest, highest, seen = int(self.outside), float(self.lowest), float(self.highest), self.seen
        self.outside = self.lowest = self.highest = None
        self.seen = 0
        if outside > self.max_fraction * seen:
            raise RunError(
                f"the value support [algo.v_min, algo.v_max] = [{self.v_min:g}, {self.v_max:g}] "
                f"cannot hold the returns: {outside / seen:.0%} of the TD targets of the last {self.every} updates fell "
                f"outside it (lowest {lowest:.4g}, highest {highest:.4g}); widen algo.v_min/algo.v_max"
            )
