"""N seeds as one batched group (hydra/launcher=batched) against the same N seeds as separate
runs, side by side in one invocation.

    python scripts/batched_seeds_speed.py --algo sac --env HalfCheetah --seeds 1,4,8 --steps 3000 \\
        --threads 1 --set algo.learning_starts=1000

For each N, two commands that differ only in their launcher, each one process: the batched
group `rlrun -m ... seed=0,..,N-1 hydra/launcher=batched`, and the same sweep on Hydra's basic
launcher, which trains the N seeds as separate runs one after another. Both pay start-up and
the end-of-sweep report once, so the difference is training. Every run uses --threads torch
threads and evaluates once, at the end (one episode). The table gives, per N, wall and CPU
seconds of both, their ratios, peak RSS, and the seeds' mean final return on each
side. The goal of issue 27: 8 seeds in at most 0.6x the CPU time of 8 separate runs.

`--update-cost` measures where most of that time goes instead: the CPU milliseconds of one
gradient update, in this process, of a plain agent and of stacks of N agents (random
batches of the environment's shapes, the algorithm's config with --set applied).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(command: list[str], threads: int) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MiB) of one process run to its end."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    stderr = process.stderr.read()
    if process.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({process.returncode}):\n{stderr[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def final_returns(folder: Path) -> list[float]:
    return [json.loads(path.read_text())["eval_return_mean"] for path in sorted(folder.glob("**/summary.json"))]


def update_cost(args: argparse.Namespace, updates: int = 30) -> None:
    import torch
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from rlrun.blocks.buffers import Batch
    from rlrun.blocks.stacking import SeedStack
    from rlrun.core.plan import validate

    torch.set_num_threads(args.threads)
    with initialize_config_module("rlrun.configs", version_base="1.3"):
        cfg = compose("config", overrides=[f"algo={args.algo}", f"env={args.env}", "device=cpu", *args.set])
    plan = validate(OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)))
    config, cpu = plan.algo_config, torch.device("cpu")
    obs_dim, action_dim = plan.obs_space.shape[0], plan.action_space.shape[0]

    def cost(agent, lead: tuple[int, ...]) -> float:
        b = config.batch_size
        batch = Batch(
            torch.randn(*lead, b, obs_dim),
            torch.rand(*lead, b, action_dim) * 2 - 1,
            torch.randn(*lead, b),
            torch.randn(*lead, b, obs_dim),
            torch.zeros(*lead, b),
        )
        for _ in range(5):
            agent.update(batch)
        start = time.process_time()
        for _ in range(updates):
            agent.update(batch)
        return (time.process_time() - start) / updates * 1e3

    plain = cost(plan.algo_class(config, plan.obs_space, plan.action_space, cpu, 0), ())
    print(f"{args.algo} on {args.env}, {args.threads} torch thread(s), overrides: {' '.join(args.set) or 'none'}")
    print()
    print("| N | stacked ms per update | per seed | N plain updates ms | ratio |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for n in [int(text) for text in args.seeds.split(",")]:
        stacked = plan.algo_class(config, plan.obs_space, plan.action_space, cpu, 0, stack=SeedStack(range(n), cpu))
        ms = cost(stacked, (n,))
        print(f"| {n} | {ms:.1f} | {ms / n:.1f} | {n * plain:.1f} | {ms / (n * plain):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algo", default="sac")
    parser.add_argument("--env", default="HalfCheetah")
    parser.add_argument("--seeds", default="1,4,8", help="group sizes N, comma-separated")
    parser.add_argument("--steps", type=int, default=3000, help="environment steps per seed")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="rlrun overrides for every run")
    parser.add_argument("--update-cost", action="store_true", help="CPU ms per update: plain vs stacked agents")
    args = parser.parse_args()
    if args.update_cost:
        update_cost(args)
        return

    common = [
        f"algo={args.algo}",
        f"env={args.env}",
        f"total_steps={args.steps}",
        f"threads={args.threads}",
        f"eval.every={args.steps}",
        "eval.episodes=1",
        f"checkpoint.every={args.steps}",
        "progress=false",
        "device=cpu",
        *args.set,
    ]
    rlrun = [sys.executable, "-m", "rlrun.cli"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(text) for text in args.seeds.split(",")]:
            seeds = list(range(n))
            group_dir = Path(tmp) / f"group-{n}"
            batched = run(
                [
                    *rlrun,
                    "-m",
                    *common,
                    f"seed={','.join(map(str, seeds))}",
                    "hydra/launcher=batched",
                    f"hydra.sweep.dir={group_dir}",
                ],
                args.threads,
            )
            print(f"N={n} batched: {batched[0]:.1f} s wall, {batched[1]:.1f} s CPU", file=sys.stderr)
            separate_dir = Path(tmp) / f"separate-{n}"
            sweep = [*rlrun, "-m", *common, f"seed={','.join(map(str, seeds))}", f"hydra.sweep.dir={separate_dir}"]
            separate = run(sweep, args.threads)
            print(f"N={n} separate: {separate[0]:.1f} s wall, {separate[1]:.1f} s CPU", file=sys.stderr)
            returns = [final_returns(folder) for folder in (group_dir, separate_dir)]
            rows.append((n, batched, separate, *(sum(values) / len(values) for values in returns)))

    print(
        f"{args.algo} on {args.env}, {args.steps} steps per seed, {args.threads} torch thread(s), overrides: {' '.join(args.set) or 'none'}"
    )
    print()
    print(
        "| N | batched wall s | separate wall s | wall ratio | batched CPU s | separate CPU s | CPU ratio | peak RSS MiB batched / separate | mean final return batched / separate |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for n, (b_wall, b_cpu, b_rss), (s_wall, s_cpu, s_rss), b_return, s_return in rows:
        print(
            f"| {n} | {b_wall:.1f} | {s_wall:.1f} | {b_wall / s_wall:.2f} | {b_cpu:.1f} | {s_cpu:.1f} | {b_cpu / s_cpu:.2f} "
            f"| {b_rss:.0f} / {s_rss:.0f} | {b_return:.1f} / {s_return:.1f} |"
        )


if __name__ == "__main__":
    main()
