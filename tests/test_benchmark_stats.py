"""The statistics scripts/benchmark.py reports for learning comparisons."""

import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("benchmark", Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py")
benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark)


def test_iqm_is_the_mean_of_the_middle_half():
    assert benchmark.iqm([1, 2, 3, 4, 5, 6, 7, 100]) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    # n = 3: the middle half is [0.75, 2.25): a quarter of the lowest and the highest, all of the middle one.
    assert benchmark.iqm([0.0, 10.0, 1000.0]) == pytest.approx((0.25 * 0 + 10 + 0.25 * 1000) / 1.5)
    assert benchmark.iqm([5.0]) == 5.0


def test_bootstrap_interval_brackets_the_statistic_and_is_reproducible():
    values = [100.0, 120.0, 90.0, 110.0, 105.0]
    low, high = benchmark.bootstrap_interval(values, resamples=2000)
    assert low <= benchmark.iqm(values) <= high and low >= 90.0 and high <= 120.0
    assert benchmark.bootstrap_interval(values, resamples=2000) == (low, high)


def test_speed_ratio_is_the_median_of_back_to_back_pairs():
    def run(runner, seed, repeat, sps):
        return {"algo": "sac", "env": "HalfCheetah", "threads": 1, "runner": runner, "seed": seed, "repeat": repeat,
                "train_sps": sps, "peak_rss_mib": 300, "eval_returns": {"100": 0.0}}

    # A slow spell hit the second pair; pairing keeps it from skewing the ratio.
    results = [run("rlrun", 0, 0, 120), run("sb3", 0, 0, 80), run("rlrun", 0, 1, 60), run("sb3", 0, 1, 40),
               run("rlrun", 0, 2, 100), run("sb3", 0, 2, 80), run("rlrun", 1, 0, 90)]  # the last has no partner
    assert benchmark.pair_ratios(results[0::2], results[1::2]) == [1.5, 1.5, 1.25]
    row = benchmark.markdown(results).splitlines()[-1]
    assert "| 1.50× | 3: 1.25–1.50× |" in row
    # Sides with no seed in common make no row (rather than a ratio of unrelated runs).
    assert benchmark.markdown([run("rlrun", 1, 0, 90), run("sb3", 2, 0, 80)]).count("\n") == 1
