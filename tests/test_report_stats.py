"""The report's statistics (rlrun/report/stats.py): hand-computed values, the stratified
bootstrap's properties, and rliable's own numbers on the same data."""

import importlib.util

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from rlrun.report import stats


def test_iqm_is_the_25_percent_trimmed_mean_of_all_runs():
    assert stats.iqm([1, 2, 3, 4, 5, 6, 7, 100]) == pytest.approx(4.5)  # floor(8/4) = 2 cut each end: 3, 4, 5, 6
    assert stats.iqm([0.0, 10.0, 1000.0]) == pytest.approx(1010 / 3)  # floor(3/4) = 0: the plain mean
    assert stats.iqm([[1, 2, 3, 4], [5, 6, 7, 8]]) == pytest.approx(4.5)  # tasks pooled: 3, 4, 5, 6
    assert stats.iqm([5.0]) == 5.0


def test_mean_median_and_optimality_gap_take_task_means():
    tasks = [np.array([0.0, 2.0]), np.array([10.0, 10.0, 40.0]), np.array([1.0])]  # task means 1, 20, 1
    assert stats.mean(tasks) == pytest.approx(22 / 3)
    assert stats.median(tasks) == pytest.approx(1.0)
    assert stats.optimality_gap([np.array([0.5, 1.5]), np.array([0.0, 1.0])]) == pytest.approx(1 - (0.5 + 1 + 0 + 1) / 4)


def test_probability_of_improvement_counts_ties_half():
    assert stats.probability_of_improvement([1.0, 2.0], [2.0, 3.0]) == pytest.approx(0.5 / 4)
    assert stats.probability_of_improvement([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == pytest.approx(0.5)
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 5, size=7).astype(float), rng.integers(0, 5, size=4).astype(float)  # ties likely
    u = mannwhitneyu(x, y, alternative="greater").statistic
    assert stats.probability_of_improvement(x, y) == pytest.approx(u / (7 * 4))
    # Averaged over tasks: task 1 X always wins, task 2 always loses.
    assert stats.probability_of_improvement([[5.0, 6.0], [0.0]], [[1.0], [3.0, 4.0]]) == pytest.approx(0.5)


def test_performance_profile_counts_runs_strictly_above_each_threshold():
    profile = stats.performance_profile([np.array([0.2, 0.5]), np.array([0.9])], np.array([0.0, 0.5, 1.0]))
    np.testing.assert_allclose(profile, [1.0, 1 / 3, 0.0])


def test_bootstrap_is_deterministic_for_a_seed_and_brackets_the_estimate():
    values = np.array([100.0, 120.0, 90.0, 110.0, 105.0, 300.0])
    first = stats.Bootstrap(resamples=500, seed=1).estimate(stats.iqm, values)
    again = stats.Bootstrap(resamples=500, seed=1).estimate(stats.iqm, values)
    other = stats.Bootstrap(resamples=500, seed=2).estimate(stats.iqm, values)
    assert (float(first.low), float(first.high)) == (float(again.low), float(again.high))
    assert (float(first.low), float(first.high)) != (float(other.low), float(other.high))
    assert 90 <= first.low <= first.value <= first.high <= 300


def test_bootstrap_resamples_runs_within_each_task():
    """Two tasks whose runs agree within each task: a stratified resample keeps one of each
    task's runs per draw, so the mean of task means never moves; pooled resampling would."""
    tasks = [np.zeros(4), np.full(4, 10.0)]
    estimate = stats.Bootstrap(resamples=1000).estimate(stats.mean, tasks)
    assert (float(estimate.low), float(estimate.value), float(estimate.high)) == (5.0, 5.0, 5.0)
    # Unequal numbers of runs per task are fine, and each task keeps its own count.
    resampled = stats.Bootstrap(resamples=7).resample([np.arange(3.0), np.arange(5.0)], np.random.default_rng(0))
    assert [r.shape for r in resampled] == [(7, 3), (7, 5)]


def test_a_curve_is_each_steps_estimate_on_the_same_resampled_seeds():
    rng = np.random.default_rng(0)
    curves = rng.normal(size=(6, 5))  # 6 evaluation steps × 5 seeds
    bootstrap = stats.Bootstrap(resamples=300, seed=4)
    whole = bootstrap.estimate(stats.iqm, curves)
    for step in range(6):
        alone = bootstrap.estimate(stats.iqm, curves[step])
        assert (whole.value[step], whole.low[step], whole.high[step]) == pytest.approx(tuple(map(float, alone)))


def _rliable_importable() -> bool:
    try:
        return importlib.util.find_spec("rliable") is not None and bool(__import__("rliable.library"))
    except Exception:  # arch under pandas 3 fails at import (see pyproject's test extra)
        return False


@pytest.mark.skipif(not _rliable_importable(), reason="needs rliable (the test extra)")
def test_matches_rliable_on_the_same_scores():
    """Point estimates equal rliable's; intervals agree within 3% of their width (the two draw
    different random resamples: 20000 of them leave a Monte Carlo error near 1%)."""
    from rliable import library, metrics

    rng = np.random.default_rng(7)
    scores = rng.normal(size=(5, 3)) * [0.2, 0.5, 0.3] + [0.4, 0.9, 1.1]  # 5 runs × 3 tasks
    tasks = [scores[:, task] for task in range(3)]
    bootstrap = stats.Bootstrap(resamples=20_000, seed=0)
    theirs = {
        "IQM": metrics.aggregate_iqm,
        "median": metrics.aggregate_median,
        "mean": metrics.aggregate_mean,
        "optimality gap": metrics.aggregate_optimality_gap,
    }
    for name, statistic in stats.AGGREGATES.items():
        ours = bootstrap.estimate(statistic, tasks)
        np.random.seed(0)  # rliable's stratified bootstrap draws from numpy's global generator
        aggregate = theirs[name]
        points, intervals = library.get_interval_estimates({"x": scores}, lambda s, f=aggregate: np.array([f(s)]), reps=20_000)
        width = intervals["x"][1, 0] - intervals["x"][0, 0]
        print(
            f"{name}: ours {float(ours.value):.4f} [{float(ours.low):.4f}, {float(ours.high):.4f}], "
            f"rliable {points['x'][0]:.4f} [{intervals['x'][0, 0]:.4f}, {intervals['x'][1, 0]:.4f}]"
        )
        assert float(ours.value) == pytest.approx(points["x"][0], abs=1e-12)
        assert abs(float(ours.low) - intervals["x"][0, 0]) < 0.03 * width
        assert abs(float(ours.high) - intervals["x"][1, 0]) < 0.03 * width

    taus = np.linspace(0, 2, 21)
    their_profile, _ = library.create_performance_profile({"x": scores}, taus, reps=10)
    np.testing.assert_allclose(stats.performance_profile(tasks, taus), their_profile["x"])
    other = rng.normal(size=(4, 3)) + [0.5, 0.8, 1.0]
    assert stats.probability_of_improvement(tasks, [other[:, t] for t in range(3)]) == pytest.approx(
        metrics.probability_of_improvement(scores, other)
    )
