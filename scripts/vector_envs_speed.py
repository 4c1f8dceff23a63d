"""Training steps/s with vector environments (algo.num_envs), side by side with one environment.

    python scripts/vector_envs_speed.py --cases sac:Pendulum,sac:HalfCheetah,dqn:CartPole --num-envs 1,4 \\
        --steps 4000 --repeats 3 --set algo.learning_starts=1000

Trains each case (algo:env) at each num_envs in a fresh rlrun process, one torch thread unless
--threads says otherwise, evaluating once at the end (left out of steps/s, as always). The runs
go round-robin, case by case and repeat by repeat, so a noisy machine slows every setting
alike. Prints a table: the median training steps/s of the repeats, their range, and the ratio
to the first --num-envs value; and the median CPU seconds each whole run took (start-up and
the evaluation included), which other work on a shared machine disturbs less than wall time. A vector step of N environments is followed by N times the
gradient steps of one environment step, so what can get faster is acting (one batched
forward pass instead of N) and the loop's own per-step work, not the updates.

`--without-updates` measures just that part: the runs go in this process with every gradient
step replaced by a no-op and the policy acting from the first step (learning_starts=0), and
the table gives the CPU microseconds per environment step
(evaluation included; a run's update cost per step comes on top, the same for every num_envs).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from benchmark import run_rlrun_process  # scripts/benchmark.py: one rlrun run in its own process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="sac:Pendulum,sac:HalfCheetah,dqn:CartPole", help="algo:env, comma-separated")
    parser.add_argument("--num-envs", default="1,4", help="algo.num_envs values; ratios are to the first")
    parser.add_argument("--steps", type=int, default=4000, help="environment steps per run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=1, help="runs of each setting")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="rlrun overrides for every run")
    parser.add_argument("--without-updates", action="store_true", help="the loop's CPU time per step, no gradient steps")
    args = parser.parse_args()
    if args.without_updates:
        loop_cost(args)
        return

    cases = [tuple(case.split(":")) for case in args.cases.split(",")]
    num_envs_values = [int(n) for n in args.num_envs.split(",")]
    sps: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    cpu_seconds: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for repeat in range(args.repeats):
        for algo, env in cases:
            for num_envs in num_envs_values:
                before = children_cpu_seconds()
                result = run_rlrun_process(
                    {
                        "algo": algo,
                        "env": env,
                        "seed": args.seed,
                        "steps": args.steps,
                        "threads": args.threads,
                        "eval_every": args.steps,
                        "eval_episodes": 1,
                        "device": args.device,
                        "overrides": [f"algo.num_envs={num_envs}", *args.set],
                    }
                )
                sps[algo, env, num_envs].append(result["train_sps"])
                cpu_seconds[algo, env, num_envs].append(children_cpu_seconds() - before)
                print(
                    f"repeat {repeat}: {algo} {env} num_envs={num_envs}: {result['train_sps']:.0f} steps/s, "
                    f"{cpu_seconds[algo, env, num_envs][-1]:.1f} CPU s",
                    flush=True,
                )

    print(f"\n{args.steps} steps per run, {args.threads} torch thread(s), {args.device}, {args.repeats} repeat(s)")
    if args.set:
        print("overrides: " + " ".join(args.set))
    first = num_envs_values[0]
    print(f"\n| algo | env | num_envs | steps/s | range | × num_envs={first} | CPU s per run | × num_envs={first} |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for algo, env in cases:
        baseline_sps = statistics.median(sps[algo, env, first])
        baseline_cpu = statistics.median(cpu_seconds[algo, env, first])
        for num_envs in num_envs_values:
            runs, cpu = sps[algo, env, num_envs], statistics.median(cpu_seconds[algo, env, num_envs])
            median = statistics.median(runs)
            print(
                f"| {algo} | {env} | {num_envs} | {median:.0f} | {min(runs):.0f}–{max(runs):.0f} | "
                f"{median / baseline_sps:.2f}× | {cpu:.1f} | {cpu / baseline_cpu:.2f}× |"
            )


def children_cpu_seconds() -> float:
    """User and system CPU time of this process's finished children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def loop_cost(args: argparse.Namespace) -> None:
    """CPU µs per environment step of each case's loop, in this process, updates stubbed out."""
    import torch
    from hydra import compose, initialize_config_module

    from rlrun.core.plan import validate
    from rlrun.core.registry import get_algorithm
    from rlrun.core.training import execute

    torch.set_num_threads(args.threads)
    cases = [tuple(case.split(":")) for case in args.cases.split(",")]
    for algo, _ in cases:
        get_algorithm(algo).update = lambda self, batch: {}
    micros: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for repeat in range(args.repeats):
        for algo, env in cases:
            for num_envs in [int(n) for n in args.num_envs.split(",")]:
                overrides = [f"algo={algo}", f"env={env}", f"seed={args.seed}", f"total_steps={args.steps}"]
                overrides += [f"eval.every={args.steps}", "eval.episodes=1", f"checkpoint.every={args.steps}"]
                overrides += ["progress=false", f"device={args.device}", f"threads={args.threads}", f"algo.num_envs={num_envs}"]
                overrides += ["algo.learning_starts=0"]  # the policy acts from the first step
                with initialize_config_module("rlrun.configs", version_base="1.3"):
                    plan = validate(compose("config", overrides=[*overrides, *args.set]))
                with tempfile.TemporaryDirectory() as folder:
                    start = time.process_time()
                    execute(plan, Path(folder))
                    micros[algo, env, num_envs].append(1e6 * (time.process_time() - start) / args.steps)
                print(f"repeat {repeat}: {algo} {env} num_envs={num_envs}: {micros[algo, env, num_envs][-1]:.0f} µs", flush=True)

    print(f"\n{args.steps} steps per run, no gradient steps, {args.threads} torch thread(s), {args.repeats} repeat(s)")
    if args.set:
        print("overrides: " + " ".join(args.set))
    print("\n| algo | env | num_envs | CPU µs per env step | range |")
    print("| --- | --- | --- | --- | --- |")
    for (algo, env, num_envs), runs in micros.items():
        print(f"| {algo} | {env} | {num_envs} | {statistics.median(runs):.0f} | {min(runs):.0f}–{max(runs):.0f} |")


if __name__ == "__main__":
    main()
