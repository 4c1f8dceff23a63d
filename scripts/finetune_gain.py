"""Online fine-tuning from an offline start (init=) against the same online algorithm from
scratch, on a small dataset made with `rlrun collect=`.

    python scripts/finetune_gain.py                       # Pendulum, 3 seeds, about 10 minutes of one core
    python scripts/finetune_gain.py --seeds 5 --online-steps 10000

1. a SAC run of --collector-steps on Pendulum: the collecting policy;
2. `rlrun collect=` of it, --episodes episodes with action noise --noise: the dataset, whose
   ref_max_score is the collected episodes' mean return (the target below);
3. TD3+BC on the dataset for --offline-steps gradient steps;
4. per seed, TD3 started from it (init=, WSRL's recipe) and TD3 from scratch, each for
   --online-steps environment steps, evaluated every --eval-every steps.

Prints the return against online steps (median over seeds) and, per seed and as the median, the
online steps each takes to reach the collecting policy's return and --threshold (never: not
within the budget).
Every run is one thread on the CPU; the runs go one after another.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SIZES = ["algo.hidden_sizes=[64,64]", "threads=1", "device=cpu", "progress=false"]


def rlrun(*args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rlrun.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"},
    )
    if result.returncode != 0:
        sys.exit(f"rlrun {' '.join(args)} failed:\n{result.stderr[-2000:]}")


def curve(run_dir: Path) -> dict[int, float]:
    rows = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    return {row["step"]: row["eval/return_mean"] for row in rows if "eval/return_mean" in row}


def steps_to_reach(returns: dict[int, float], target: float) -> int | None:
    return next((step for step, value in sorted(returns.items()) if value >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--collector-steps", type=int, default=3000)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--noise", type=float, default=0.3)
    parser.add_argument("--offline-steps", type=int, default=3000)
    parser.add_argument("--online-steps", type=int, default=6000)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--warmup-steps", type=int, default=1000, help="finetune.warmup_steps (WSRL's 5000 is for 1e6-step runs)")
    parser.add_argument("--learning-starts", type=int, default=1000, help="algo.learning_starts of TD3 from scratch")
    parser.add_argument("--threshold", type=float, default=-200.0, help="a return to reach besides the collecting policy's")
    parser.add_argument("--folder", type=Path, default=None, help="where the runs go (default: a temporary folder)")
    args = parser.parse_args()

    root = args.folder or Path(tempfile.mkdtemp(prefix="finetune-gain-"))
    collector, dataset, offline = root / "collector", root / "pendulum-sac-v0", root / "td3_bc"
    evals = [f"eval.every={args.eval_every}", "eval.episodes=10"]
    rlrun("algo=sac", "env=Pendulum", f"total_steps={args.collector_steps}", *SIZES, *evals, f"hydra.run.dir={collector}")
    rlrun(f"collect={collector}", f"episodes={args.episodes}", f"noise={args.noise}", f"out={dataset}")
    target = json.loads((dataset / "data" / "metadata.json").read_text())["ref_max_score"]
    rlrun("algo=td3_bc", f"dataset={dataset}", f"total_steps={args.offline_steps}", *SIZES, *evals, f"hydra.run.dir={offline}")
    offline_final = curve(offline)[args.offline_steps]

    arms = {
        "TD3 from TD3+BC (init=)": [f"init={offline}", f"finetune.warmup_steps={args.warmup_steps}"],
        "TD3 from scratch": [f"algo.learning_starts={args.learning_starts}"],
    }
    curves: dict[str, list[dict[int, float]]] = {arm: [] for arm in arms}
    for seed in range(args.seeds):
        for arm, extra in arms.items():
            run_dir = root / f"{'init' if 'init' in arm else 'scratch'}-seed{seed}"
            rlrun(
                "algo=td3",
                "env=Pendulum",
                f"total_steps={args.online_steps}",
                *SIZES,
                *evals,
                *extra,
                f"seed={seed}",
                f"hydra.run.dir={run_dir}",
            )
            curves[arm].append(curve(run_dir))
            print(f"seed {seed}, {arm}: done", file=sys.stderr, flush=True)

    print(
        f"dataset: {args.episodes} episodes of SAC after {args.collector_steps} steps, noise {args.noise}; "
        f"collecting policy's return (ref_max_score) {target:.1f}; TD3+BC after {args.offline_steps} steps {offline_final:.1f}"
    )
    steps = sorted(set(curves[next(iter(arms))][0]) | set(curves["TD3 from scratch"][0]))
    print("\n| online steps | " + " | ".join(arms) + " |")
    print("| --- | " + " | ".join("---" for _ in arms) + " |")
    for step in steps:
        cells = [
            f"{statistics.median(c[step] for c in curves[arm]):.1f}" if all(step in c for c in curves[arm]) else ""
            for arm in arms
        ]
        print(f"| {step} | " + " | ".join(cells) + " |")
    for name, level in (("the collecting policy's return", target), ("--threshold", args.threshold)):
        print(f"\nonline steps to reach {level:.1f}, {name} (per seed; median, a seed that never does counts as never):")
        for arm in arms:
            reached = [steps_to_reach(c, level) for c in curves[arm]]
            median = statistics.median(args.online_steps + 1 if r is None else r for r in reached)
            shown = "never" if median > args.online_steps else f"{median:.0f}"
            print(f"  {arm}: {['never' if r is None else r for r in reached]}; median {shown}")
    print(f"runs in {root}")


if __name__ == "__main__":
    main()
