"""Training steps/s on Gymnasium's vector env against EnvPool's (env.backend), side by side.

    python scripts/envpool_speed.py algo=ppo env=HalfCheetah algo.num_envs=8 total_steps=32768
    python scripts/envpool_speed.py --repeats 3 algo=ppo env=Pong algo.num_envs=8 total_steps=16384
    python scripts/envpool_speed.py --env-only --steps 2000 env=Pong algo.num_envs=8   # environments alone

Each repeat trains the same command once per backend, interleaved, each in a fresh process,
and reads the run's training steps/s from its summary.json (evaluation and checkpoints left
out). --env-only steps the training vector envs alone with random actions instead. Prints a
Markdown table: each backend's median steps/s, and the median of the repeats' envpool ÷
gymnasium ratios with their range. Needs the envpool extra.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BACKENDS = ("gymnasium", "envpool")
# Short runs: one evaluation episode (left out of steps/s anyway) and no checkpoint before the end.
RUN_SETTINGS = ["threads=1", "device=cpu", "progress=false", "eval.episodes=1", "checkpoint.every=1000000000"]


def train_steps_per_second(overrides: list[str], backend: str, folder: Path) -> float:
    command = [sys.executable, "-m", "rlrun.cli", *RUN_SETTINGS, *overrides, f"+env.backend={backend}"]
    result = subprocess.run([*command, f"hydra.run.dir={folder}"], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return json.loads((folder / "summary.json").read_text())["sps"]


def env_steps_per_second(overrides: list[str], backend: str, steps: int) -> tuple[float, float]:
    """The training vector env alone, stepped with random actions, in this process: steps per
    wall second, and per second of this process's CPU time (all its threads), which other
    work on a shared machine changes less."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from rlrun.config import EnvConfig, from_mapping
    from rlrun.envs.make import make_vector_env

    with initialize_config_module("rlrun.configs", version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, f"+env.backend={backend}"])
    env = from_mapping(EnvConfig, OmegaConf.to_container(cfg.env, resolve=True), prefix="env.")
    num_envs = cfg.algo.get("num_envs", 1)
    envs = make_vector_env(env, cfg.seed, num_envs, asynchronous=False)
    envs.reset(seed=cfg.seed)
    actions = [envs.action_space.sample() for _ in range(64)]
    start, start_cpu = time.perf_counter(), time.process_time()
    for step in range(steps):
        envs.step(actions[step % len(actions)])
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    envs.close()
    return steps * num_envs / seconds, steps * num_envs / cpu_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--env-only", action="store_true", help="time the environments alone, not training")
    parser.add_argument("--steps", type=int, default=2000, help="--env-only: vector steps per measurement")
    parser.add_argument("overrides", nargs="*", default=["algo=ppo", "env=HalfCheetah", "algo.num_envs=8", "total_steps=32768"])
    args = parser.parse_args()

    measured: dict[str, dict[str, list[float]]] = {"wall": {b: [] for b in BACKENDS}, "CPU": {b: [] for b in BACKENDS}}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            for backend in BACKENDS:
                if args.env_only:
                    wall, cpu = env_steps_per_second(args.overrides, backend, args.steps)
                    measured["CPU"][backend].append(cpu)
                else:
                    wall = train_steps_per_second(args.overrides, backend, Path(scratch) / f"{backend}-{repeat}")
                measured["wall"][backend].append(wall)
                print(f"repeat {repeat}: {backend} {wall:.0f} steps/s", file=sys.stderr, flush=True)
    what = "environment steps (random actions)" if args.env_only else "training steps"
    print(f"\n{' '.join(args.overrides)}: {what}, {args.repeats} repeat(s)\n")
    print("| per | gymnasium | envpool | envpool ÷ gymnasium | range |")
    print("| --- | --- | --- | --- | --- |")
    for per, sps in measured.items():
        if not sps["gymnasium"]:
            continue
        ratios = [envpool / gymnasium for gymnasium, envpool in zip(sps["gymnasium"], sps["envpool"])]
        print(
            f"| {per} second | {statistics.median(sps['gymnasium']):.0f} | {statistics.median(sps['envpool']):.0f} | "
            f"{statistics.median(ratios):.2f}× | {min(ratios):.2f}–{max(ratios):.2f}× |"
        )


if __name__ == "__main__":
    main()
