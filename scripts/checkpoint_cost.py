"""Size and write/read time of a checkpoint with a full replay buffer.

    python scripts/checkpoint_cost.py                     # SAC, HalfCheetah-v5, 1e6 transitions
    python scripts/checkpoint_cost.py --env Hopper-v5 --transitions 200000

The buffer is filled with random transitions of the environment's shapes (the contents do
not change the size or the time); the agent is SAC with its default 256×256 networks.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from rlrun.algos.sac import SAC, SACConfig
from rlrun.blocks.buffers import ReplayBuffer
from rlrun.config import EnvConfig
from rlrun.core.checkpoint import Checkpointer, load
from rlrun.envs.make import env_spaces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--transitions", type=int, default=1_000_000)
    parser.add_argument("--folder", type=Path, default=None, help="where to write (default: a temporary folder)")
    args = parser.parse_args()

    obs_space, action_space = env_spaces(EnvConfig(id=args.env, total_steps=args.transitions))
    agent = SAC(SACConfig(), obs_space, action_space, torch.device("cpu"), seed=0)
    buffer = ReplayBuffer(args.transitions, obs_space.shape, action_space.shape, torch.device("cpu"), seed=0)
    for name in ("obs", "next_obs", "actions", "rewards"):
        getattr(buffer, name).normal_()
    buffer.size, buffer.position = args.transitions, 0
    raw_mb = sum(getattr(buffer, n).nbytes for n in ("obs", "next_obs", "actions", "rewards", "terminated")) / 1e6

    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        checkpointer = Checkpointer(Path(folder), "sac", args.env, {}, keep=1)
        start = time.perf_counter()
        path = checkpointer.save(args.transitions, agent.state_dict(), {"buffer": buffer.state_dict()}, {})
        write_s = time.perf_counter() - start
        start = time.perf_counter()
        load(path)
        read_s = time.perf_counter() - start
        size_mb = path.stat().st_size / 1e6
    print(
        f"{args.env}, {args.transitions} transitions: buffer contents {raw_mb:.1f} MB, "
        f"checkpoint {size_mb:.1f} MB, write {write_s:.2f} s, read {read_s:.2f} s"
    )


if __name__ == "__main__":
    main()
