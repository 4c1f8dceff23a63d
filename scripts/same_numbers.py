"""Same seed, same numbers: record short fixed-seed runs of every replay-buffer algorithm, then
compare later runs with them, so that a refactor can show it changed no number.

    python scripts/same_numbers.py record /tmp/before      # on the old code
    python scripts/same_numbers.py compare /tmp/before     # on the new code: exit 1 on a difference

Each run is `experiment=smoke` on one thread with two vector envs where the algorithm has them.
Compared: metrics.jsonl (timing keys aside), and every tensor and number of the final
checkpoint's agent state and replay buffer.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

RUNS = {
    "sac": ["algo=sac", "env=Pendulum", "algo.num_envs=2"],
    "td3": ["algo=td3", "env=Pendulum", "algo.num_envs=2"],
    "ddpg": ["algo=ddpg", "env=Pendulum"],
    "crossq": ["algo=crossq", "env=Pendulum"],
    "dsac_t": ["algo=dsac_t", "env=Pendulum"],
    "mrq": ["algo=mrq", "env=Pendulum"],
    "dqn": ["algo=dqn", "env=CartPole", "algo.num_envs=2"],
    "rainbow": ["algo=rainbow", "env=CartPole", "algo.num_envs=2"],
}
TIMING_KEYS = {"perf/sps", "perf/train_seconds"}


def train(name: str, folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    command = [sys.executable, "-m", "rlrun.cli", *RUNS[name], "experiment=smoke", "seed=3", "threads=1", "device=cpu"]
    subprocess.run(
        [*command, f"hydra.run.dir={folder}"], check=True, capture_output=True, env=os.environ | {"PYTHONHASHSEED": "0"}
    )
    return folder


def metrics(folder: Path) -> list[dict]:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def final_state(folder: Path) -> dict:
    files = sorted((folder / "checkpoints").glob("step_*.pt"))
    state = torch.load(files[-1], weights_only=True)
    return {"agent": state["agent"], "loop": state["loop"]}


def differences(before, after, path: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        found = [f"{path}.{key}: only before" for key in before.keys() - after.keys()]
        found += [f"{path}.{key}: only after" for key in after.keys() - before.keys()]
        for key in before.keys() & after.keys():
            found += differences(before[key], after[key], f"{path}.{key}")
        return found
    if isinstance(before, (list, tuple)) and isinstance(after, (list, tuple)) and len(before) == len(after):
        return [d for i, (b, a) in enumerate(zip(before, after)) for d in differences(b, a, f"{path}.{i}")]
    if isinstance(before, torch.Tensor) and isinstance(after, torch.Tensor):
        same = before.shape == after.shape and before.dtype == after.dtype and torch.equal(before, after)
        return [] if same else [f"{path}: tensors differ"]
    return [] if before == after else [f"{path}: {before!r} != {after!r}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["record", "compare"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--algos", default=",".join(RUNS))
    args = parser.parse_args()
    failed = False
    for name in args.algos.split(","):
        if args.mode == "record":
            train(name, args.folder / name)
            print(f"{name}: recorded {args.folder / name}")
            continue
        after = train(name, args.folder.with_name(args.folder.name + "-after") / name)
        found = differences(metrics(args.folder / name), metrics(after), "metrics")
        found += differences(final_state(args.folder / name), final_state(after), "checkpoint")
        print(f"{name}: {'same numbers' if not found else 'DIFFERENT: ' + '; '.join(found[:5])}")
        failed |= bool(found)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
