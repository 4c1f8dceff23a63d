"""Running statistics for observation and reward normalisation, kept as tensors on the device.

Both follow Stable-Baselines3's VecNormalize and Gymnasium's NormalizeObservation /
NormalizeReward: observations are standardised by their running mean and std, rewards are
divided by the running std of the discounted return, and both are clipped to ±clip.
"""

from __future__ import annotations

import torch

EPSILON = 1e-8  # added to the variance under the square root, as in SB3 and Gymnasium


class RunningMeanStd:
    """Mean and (population) variance of every sample seen so far, merged batch by batch.

    Chan, Golub & LeVeque's parallel update: for the stored (mean μ_a, var σ²_a, count n_a)
    and a batch (μ_b, σ²_b, n_b), with δ = μ_b − μ_a and n = n_a + n_b,
        μ = μ_a + δ·n_b/n,   σ² = (σ²_a·n_a + σ²_b·n_b + δ²·n_a·n_b/n) / n.
    The count starts at `epsilon` (not 0) with μ = 0, σ² = 1, as in SB3 and Gymnasium, so
    normalising before the first update is the identity. Statistics are float64.
    """

    def __init__(self, shape: tuple[int, ...] = (), device: torch.device | str = "cpu", epsilon: float = 1e-4) -> None:
        self.mean = torch.zeros(shape, dtype=torch.float64, device=device)
        self.var = torch.ones(shape, dtype=torch.float64, device=device)
        self.count = torch.tensor(epsilon, dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Merge a batch `x` of shape (B, *shape); an empty batch changes nothing."""
        batch_count = x.shape[0]
        if batch_count == 0:
            return
        x = x.to(torch.float64)
        batch_mean, batch_var = x.mean(dim=0), x.var(dim=0, correction=0)
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.mean = self.mean + delta * batch_count / total
        self.var = (self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total) / total
        self.count = total

    def std(self) -> torch.Tensor:
        return torch.sqrt(self.var + EPSILON)

    def normalize(self, x: torch.Tensor, clip: float) -> torch.Tensor:
        """(x − μ) / √(σ² + ε), clipped to [−clip, clip], in x's dtype."""
        return ((x - self.mean) / self.std()).clamp(-clip, clip).to(x.dtype)

    def scale(self, x: torch.Tensor, clip: float) -> torch.Tensor:
        """x / √(σ² + ε), clipped to [−clip, clip], in x's dtype (no centring: for rewards)."""
        return (x / self.std()).clamp(-clip, clip).to(x.dtype)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean.clone(), "var": self.var.clone(), "count": self.count.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        device = self.mean.device
        self.mean = state["mean"].to(device, torch.float64)
        self.var = state["var"].to(device, torch.float64)
        self.count = state["count"].to(device, torch.float64)


class RewardScaler:
    """Divides rewards by the running std of the discounted return, per vector env.

    R_t = γ·R_{t−1} + r_t, restarted at 0 after every episode end; like SB3's VecNormalize
    (and Gymnasium's NormalizeReward), the return is not centred, only its scale is used.
    """

    def __init__(self, num_envs: int, gamma: float, clip: float, device: torch.device | str = "cpu") -> None:
        self.gamma, self.clip = gamma, clip
        self.rms = RunningMeanStd((), device)
        self.returns = torch.zeros(num_envs, dtype=torch.float64, device=device)

    def __call__(self, rewards: torch.Tensor, dones: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """Scaled rewards for one vector step; all arguments have shape (num_envs,).

        Entries where `active` is False (a NEXT_STEP autoreset step: reward 0, not a real
        transition) stay out of the statistics; their return is already 0 from the done before.
        """
        self.returns = self.returns * self.gamma + rewards
        self.rms.update(self.returns[active])
        scaled = self.rms.scale(rewards, self.clip)
        self.returns = self.returns.masked_fill(dones, 0.0)
        return scaled
