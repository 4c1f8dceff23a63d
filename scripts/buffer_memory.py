"""Memory of a full replay buffer: rlrun's against Stable-Baselines3's (bench extra), or, with
--atari, the bytes per transition of DQN's and Rainbow's buffers for Atari frame stacks.

    python scripts/buffer_memory.py                         # 1e6 HalfCheetah-v5 transitions
    python scripts/buffer_memory.py --env Hopper-v5 --transitions 200000
    python scripts/buffer_memory.py --atari                 # 4 × 84 × 84 uint8 stacks, 10000 transitions

Each side runs in a fresh process that builds the buffer, writes every slot (so every page is
really resident) and reports its peak RSS and how much the buffer added to it, next to the
raw float32 size of the transitions (observation, next observation, action, reward, done).

--atari builds each buffer for `--transitions` transitions of one sub-environment and counts
the bytes of every tensor and host array it allocated (torch.zeros writes them all), divided
by the transitions: whole stacks for obs and next_obs (ReplayBuffer, PrioritizedReplayBuffer)
against each frame once (FrameReplayBuffer, PrioritizedFrameReplayBuffer), and what 1e6
transitions would take.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(side: str, env_id: str, transitions: int) -> dict:
    import numpy as np
    import torch

    from rlrun.config import EnvConfig
    from rlrun.envs.make import env_spaces

    obs_space, action_space = env_spaces(EnvConfig(id=env_id, total_steps=transitions))
    if side == "rlrun":
        from rlrun.blocks.buffers import ReplayBuffer
    else:
        from stable_baselines3.common.buffers import ReplayBuffer
    before = peak_rss_mib()  # after the imports: only the buffer counts
    if side == "rlrun":
        buffer = ReplayBuffer(transitions, obs_space.shape, action_space.shape, torch.device("cpu"), seed=0)
        for name in ("obs", "next_obs", "actions", "rewards", "terminated"):
            getattr(buffer, name).fill_(1)
    else:
        buffer = ReplayBuffer(transitions, obs_space, action_space, device="cpu", handle_timeout_termination=True)
        for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
            getattr(buffer, name).fill(1)
    obs_dim, action_dim = int(np.prod(obs_space.shape)), int(np.prod(action_space.shape))
    raw_mib = transitions * (2 * obs_dim + action_dim + 2) * 4 / 2**20
    return {
        "side": side,
        "raw_mib": round(raw_mib, 1),
        "buffer_mib": round(peak_rss_mib() - before, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }


def allocated_bytes(part: object) -> int:
    """The bytes of every tensor and NumPy array a buffer holds, its helpers' included."""
    import numpy as np
    import torch

    if isinstance(part, torch.Tensor):
        return part.nbytes
    if isinstance(part, np.ndarray):
        return part.nbytes
    if hasattr(part, "__dict__") and not isinstance(part, (torch.Generator, torch.device, type)):
        return sum(allocated_bytes(value) for value in vars(part).values())
    return 0


def atari_table(transitions: int) -> None:
    import torch

    from rlrun.blocks.buffers import (
        FrameReplayBuffer,
        PrioritizedFrameReplayBuffer,
        PrioritizedReplayBuffer,
        ReplayBuffer,
    )

    shape, cpu, frames = (4, 84, 84), torch.device("cpu"), {"obs_dtype": torch.uint8}
    prioritised = {"num_envs": 1, "n_step": 3, "gamma": 0.99, "priority_exponent": 0.5}
    buffers = {
        "ReplayBuffer (DQN, whole stacks)": lambda: ReplayBuffer(
            transitions, shape, (), cpu, 0, action_dtype=torch.int64, **frames
        ),
        "FrameReplayBuffer (DQN)": lambda: FrameReplayBuffer(transitions, shape, cpu, 0, num_envs=1),
        "PrioritizedReplayBuffer (Rainbow, whole stacks)": lambda: PrioritizedReplayBuffer(
            transitions, shape, cpu, 0, **prioritised, **frames
        ),
        "PrioritizedFrameReplayBuffer (Rainbow)": lambda: PrioritizedFrameReplayBuffer(transitions, shape, cpu, 0, **prioritised),
    }
    print(f"Atari frame stacks {shape} uint8, buffers of {transitions} transitions")
    print("| buffer | bytes per transition | 1e6 transitions GB |\n| --- | --- | --- |")
    for name, make in buffers.items():
        per_transition = allocated_bytes(make()) / transitions
        print(f"| {name} | {per_transition:,.0f} | {per_transition * 1e6 / 1e9:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--transitions", type=int, default=None, help="default 1e6, with --atari 10000")
    parser.add_argument("--atari", action="store_true", help="bytes per transition of the buffers for Atari frame stacks")
    parser.add_argument("--side", choices=["rlrun", "sb3"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.atari:
        atari_table(args.transitions or 10_000)
        return
    args.transitions = args.transitions or 1_000_000
    if args.side:
        print(json.dumps(measure(args.side, args.env, args.transitions)))
        return
    print(f"{args.env}, {args.transitions} transitions")
    print("| buffer | raw float32 MiB | added to RSS MiB | process peak RSS MiB |\n| --- | --- | --- | --- |")
    for side in ("rlrun", "sb3"):
        command = [sys.executable, __file__, "--side", side, "--env", args.env, "--transitions", str(args.transitions)]
        result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
        print(f"| {side} | {result['raw_mib']} | {result['buffer_mib']} | {result['peak_rss_mib']} |")


if __name__ == "__main__":
    main()
