"""Running statistics for observation and reward normalisation, kept on the host in float64.

Both follow Stable-Baselines3's VecNormalize and Gymnasium's NormalizeObservation /
NormalizeReward: observations are standardised by their running mean and std, rewards are
divided by the running std of the discounted return, and both are clipped to ±clip.

They work on NumPy arrays: observations and rewards arrive from the environment on the host,
and for a vector step's few numbers NumPy is cheaper than torch, whose per-op overhead
dominates at that size; the normalised batch then goes to the training device once.
"""

from __future__ import annotations

import numpy as np
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

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4) -> None:
        self.mean = np.zeros(shape, dtype=np.float64)
        self.var = np.ones(shape, dtype=np.float64)
        self.count = float(epsilon)

    def update(self, x: np.ndarray) -> None:
        """Merge a batch `x` of shape (B, *shape); an empty batch changes nothing."""
        batch_count = x.shape[0]
        if batch_count == 0:
            return
        x = np.asarray(x, dtype=np.float64)
        batch_mean, batch_var = x.mean(axis=0), x.var(axis=0)
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.mean = self.mean + delta * batch_count / total
        self.var = (self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total) / total
        self.count = total

    def std(self) -> np.ndarray:
        return np.sqrt(self.var + EPSILON)

    def normalize(self, x: np.ndarray, clip: float) -> np.ndarray:
        """(x − μ) / √(σ² + ε), clipped to [−clip, clip], in float64."""
        return np.clip((x - self.mean) / self.std(), -clip, clip)

    def scale(self, x: np.ndarray, clip: float) -> np.ndarray:
        """x / √(σ² + ε), clipped to [−clip, clip], in float64 (no centring: for rewards)."""
        return np.clip(x / self.std(), -clip, clip)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "mean": torch.tensor(np.asarray(self.mean)),
            "var": torch.tensor(np.asarray(self.var)),
            "count": torch.tensor(self.count, dtype=torch.float64),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.mean = state["mean"].cpu().numpy().astype(np.float64)
        self.var = state["var"].cpu().numpy().astype(np.float64)
        self.count = float(state["count"])


class RewardScaler:
    """Divides rewards by the running std of the discounted return, per vector env.

    R_t = γ·R_{t−1} + r_t, restarted at 0 after every episode end; like SB3's VecNormalize
    (and Gymnasium's NormalizeReward), the return is not centred, only its scale is used.
    """

    def __init__(self, num_envs: int, gamma: float, clip: float) -> None:
        self.gamma, self.clip = gamma, clip
        self.rms = RunningMeanStd(())
        self.returns = np.zeros(num_envs, dtype=np.float64)

    def __call__(self, rewards: np.ndarray, dones: np.ndarray, active: np.ndarray) -> np.ndarray:
        """Scaled rewards for one vector step; all arguments have shape (num_envs,).

        Entries where `active` is False (a NEXT_STEP autoreset step: reward 0, not a real
        transition) stay out of the statistics; their return is already 0 from the done before.
        """
        self.returns = self.returns * self.gamma + rewards
        self.rms.update(self.returns[active])
        scaled = self.rms.scale(np.asarray(rewards, dtype=np.float64), self.clip)
        self.returns[dones] = 0.0
        return scaled
