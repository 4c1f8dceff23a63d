"""Statistics across runs, with the definitions of Agarwal et al. (2021), "Deep Reinforcement
Learning at the Edge of the Statistical Precipice" (the rliable library).

Scores come as one array per task (environment), the runs (seeds) on the last axis; tasks may
have different numbers of runs. Leading axes, if any (evaluation steps of a learning curve), are
kept: every statistic reduces the runs axis only, so one call gives a whole curve.

Intervals are stratified bootstrap percentile intervals: each resample draws, within every task
independently, as many runs as the task has, with replacement; the interval is the
(1 - level)/2 and (1 + level)/2 percentiles of the statistic over the resamples (numpy's linear
interpolation, as rliable's arch backend). A Bootstrap with the same seed gives the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import trim_mean

Scores = Sequence[np.ndarray]  # one array per task; the last axis holds that task's runs
Statistic = Callable[[Scores], np.ndarray]


def _tasks(scores: Scores | np.ndarray) -> list[np.ndarray]:
    if isinstance(scores, np.ndarray) or (len(scores) and np.isscalar(scores[0])):
        return [np.asarray(scores, dtype=float)]  # one task
    return [np.asarray(task, dtype=float) for task in scores]


def iqm(scores: Scores) -> np.ndarray:
    """Interquartile mean: the 25% trimmed mean of all runs of all tasks together, i.e. the mean
    of the middle half after dropping floor(n/4) runs at each end (scipy's trim_mean)."""
    return trim_mean(np.concatenate(_tasks(scores), axis=-1), 0.25, axis=-1)


def mean(scores: Scores) -> np.ndarray:
    """The mean over tasks of each task's mean over runs."""
    return np.mean([task.mean(axis=-1) for task in _tasks(scores)], axis=0)


def median(scores: Scores) -> np.ndarray:
    """The median over tasks of each task's mean over runs (rliable's aggregate median)."""
    return np.median([task.mean(axis=-1) for task in _tasks(scores)], axis=0)


def optimality_gap(scores: Scores, gamma: float = 1.0) -> np.ndarray:
    """How far runs fall short of `gamma` on average, scores above it counting as `gamma`: for
    normalised scores, the shortfall from the reference (lower is better)."""
    return gamma - np.mean(np.minimum(np.concatenate(_tasks(scores), axis=-1), gamma), axis=-1)


AGGREGATES: dict[str, Statistic] = {"IQM": iqm, "median": median, "mean": mean, "optimality gap": optimality_gap}


def performance_profile(scores: Scores, thresholds: np.ndarray) -> np.ndarray:
    """The fraction of runs, over all tasks, that score above each threshold τ (a score
    distribution, rliable's default profile); shape (thresholds, *leading axes)."""
    runs = np.concatenate(_tasks(scores), axis=-1)
    taus = np.asarray(thresholds, dtype=float).reshape(-1, *([1] * runs.ndim))
    return np.mean(runs[None] > taus, axis=-1)


def probability_of_improvement(x: Scores, y: Scores) -> np.ndarray:
    """P(X > Y): the chance that a run of X beats a run of Y on the same task, ties counted half
    (the Mann-Whitney U statistic over nx·ny), averaged over tasks."""
    per_task = []
    for x_task, y_task in zip(_tasks(x), _tasks(y)):
        greater = np.mean(x_task[..., :, None] > y_task[..., None, :], axis=(-2, -1))
        ties = np.mean(x_task[..., :, None] == y_task[..., None, :], axis=(-2, -1))
        per_task.append(greater + 0.5 * ties)
    return np.mean(per_task, axis=0)


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its bootstrap interval (arrays for curves and profiles)."""

    value: np.ndarray
    low: np.ndarray
    high: np.ndarray

    def __iter__(self):
        return iter((self.value, self.low, self.high))


@dataclass(frozen=True)
class Bootstrap:
    """Stratified bootstrap percentile intervals (see the module docstring)."""

    resamples: int = 2000
    seed: int = 0
    level: float = 0.95

    def resample(self, scores: Scores, rng: np.random.Generator) -> list[np.ndarray]:
        """Each task's runs drawn with replacement; the resamples on a new axis before the runs."""
        resampled = []
        for task in _tasks(scores):
            runs = task.shape[-1]
            indices = rng.integers(0, runs, size=(self.resamples, runs))
            resampled.append(task[..., indices])  # (*leading, resamples, runs)
        return resampled

    def _interval(self, draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tail = 100 * (1 - self.level) / 2
        low, high = np.percentile(draws, [tail, 100 - tail], axis=-1)
        return low, high

    def estimate(self, statistic: Statistic, scores: Scores) -> Estimate:
        """`statistic` on `scores` and its interval. Every call draws from a fresh generator
        seeded with `seed`, so a result does not depend on what was computed before it."""
        rng = np.random.default_rng(self.seed)
        draws = np.asarray(statistic(self.resample(scores, rng)))
        return Estimate(np.asarray(statistic(_tasks(scores))), *self._interval(draws))

    def profile(self, scores: Scores, thresholds: np.ndarray) -> Estimate:
        return self.estimate(lambda s: performance_profile(s, thresholds), scores)

    def improvement(self, x: Scores, y: Scores) -> Estimate:
        """P(X > Y) with X's and Y's runs resampled independently within each task."""
        rng = np.random.default_rng(self.seed)
        draws = probability_of_improvement(self.resample(x, rng), self.resample(y, rng))
        return Estimate(np.asarray(probability_of_improvement(x, y)), *self._interval(draws))
