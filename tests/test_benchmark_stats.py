"""The statistics scripts/benchmark.py reports for learning comparisons."""

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location("benchmark", Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py")
benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark)


def _learning_run(runner: str, seed: int, final: float) -> dict:
    return {
        "algo": "sac",
        "env": "HalfCheetah",
        "threads": 1,
        "runner": runner,
        "seed": seed,
        "repeat": 0,
        "train_sps": 100,
        "peak_rss_mib": 300,
        "eval_returns": {"50": 0.0, "100": final},
    }


def test_learning_table_uses_the_reports_iqm_and_interval():
    """The IQM is the 25% trimmed mean (rlrun/report/stats.py), not a weighted middle half:
    with 8 seeds the mean of the middle 4; with 3 seeds nothing is trimmed."""
    finals = [1, 2, 3, 4, 5, 6, 7, 100]
    eight = benchmark.learning_markdown([_learning_run("rlrun", seed, v) for seed, v in enumerate(finals)], {})
    assert "| 4.5 | [" in eight.splitlines()[-1]  # mean of 3, 4, 5, 6
    three = benchmark.learning_markdown([_learning_run("sb3", seed, v) for seed, v in enumerate([0.0, 10.0, 1000.0])], {})
    row = three.splitlines()[-1]
    assert "| 336.7 | [" in row  # the plain mean: floor(3 / 4) = 0 runs trimmed at each end
    low, high = (float(x) for x in row.split("[", 1)[1].split("]", 1)[0].split(", "))
    assert 0.0 <= low <= 336.7 <= high <= 1000.0
    assert benchmark.learning_markdown([_learning_run("sb3", s, v) for s, v in enumerate([0.0, 10.0, 1000.0])], {}) == three


def test_time_to_threshold_is_the_first_evaluation_reaching_it_and_the_median_counts_misses_as_never():
    def run(seed, returns, seconds):
        return {**_learning_run("rlrun", seed, 0.0), "eval_returns": returns, "eval_train_seconds": seconds}

    # JSON keys are strings after a merge; the order of evaluation is by step, not by text.
    early = run(0, {"100": 10.0, "50": 6000.0, "200": 4000.0}, {"50": 5.0, "100": 11.0, "200": 21.0})
    late = run(1, {"50": 0.0, "100": 5000.0}, {"50": 4.0, "100": 9.0})
    never = run(2, {"50": 0.0, "100": 4999.0}, {"50": 4.0, "100": 9.0})
    assert benchmark.time_to(early, 5000) == (50, 5.0)
    assert benchmark.time_to(late, 5000) == (100, 9.0)
    assert benchmark.time_to(never, 5000) is None
    row = benchmark.learning_markdown([early, late, never], {"HalfCheetah": 5000}).splitlines()[-1]
    assert row.endswith("| 5000 | 2/3 | 100 | 9 |")  # the median of 50, 100 and never
    two_misses = [early, never, run(3, {"50": 0.0}, {"50": 1.0})]
    assert benchmark.learning_markdown(two_misses, {"HalfCheetah": 5000}).splitlines()[-1].endswith("| 1/3 | never | never |")


def test_speed_ratio_is_the_median_of_back_to_back_pairs():
    def run(runner, seed, repeat, sps):
        return {
            "algo": "sac",
            "env": "HalfCheetah",
            "threads": 1,
            "runner": runner,
            "seed": seed,
            "repeat": repeat,
            "train_sps": sps,
            "peak_rss_mib": 300,
            "eval_returns": {"100": 0.0},
        }

    # A slow spell hit the second pair; pairing keeps it from skewing the ratio.
    results = [
        run("rlrun", 0, 0, 120),
        run("sb3", 0, 0, 80),
        run("rlrun", 0, 1, 60),
        run("sb3", 0, 1, 40),
        run("rlrun", 0, 2, 100),
        run("sb3", 0, 2, 80),
        run("rlrun", 1, 0, 90),
    ]  # the last has no partner
    assert benchmark.pair_ratios(results[0::2], results[1::2]) == [1.5, 1.5, 1.25]
    row = benchmark.markdown(results).splitlines()[-1]
    assert "| 1.50× | 3: 1.25–1.50× |" in row
    # Sides with no seed in common make no row (rather than a ratio of unrelated runs).
    assert benchmark.markdown([run("rlrun", 1, 0, 90), run("sb3", 2, 0, 80)]).count("\n") == 1


def test_methods_split_at_commas_outside_brackets():
    methods = "rlrun:sac,rlrun:crossq:algo.critic_hidden_sizes=[256,256]:algo.lr=1e-3,sb3:crossq:algo.critic_hidden_sizes=[64,64]"
    assert benchmark.split_methods(methods) == [
        "rlrun:sac",
        "rlrun:crossq:algo.critic_hidden_sizes=[256,256]:algo.lr=1e-3",
        "sb3:crossq:algo.critic_hidden_sizes=[64,64]",
    ]
