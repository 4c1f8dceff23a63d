"""Where a training step's time goes, for any rlrun command line.

    python scripts/profile_step.py algo=sac env=HalfCheetah total_steps=8000 threads=1
    python scripts/profile_step.py algo=ppo env=HalfCheetah total_steps=20000

Runs the real training loop in this process with timers around its parts and prints a
table: environment steps, acting (the policy on a vector step's observations), replay-buffer
writes and sampling, the update split into forward passes (the loss computations), backward passes
and optimiser steps, target-network updates, and the run's bookkeeping (logging,
evaluation, checkpoints). Times are wall-clock; on CUDA each timer synchronises the device,
which slows the run a little but attributes time correctly.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch

TOTALS: dict[str, float] = defaultdict(float)
COUNTS: dict[str, int] = defaultdict(int)
_stack: list[str] = []


@contextmanager
def timed(name: str):
    """Time a block; time spent in nested timed blocks is charged to them, not to `name`."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    _stack.append(name)
    try:
        yield
    finally:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        _stack.pop()
        TOTALS[name] += elapsed
        COUNTS[name] += 1
        if _stack:
            TOTALS[_stack[-1]] -= elapsed  # the parent keeps only its own time


def wrap(owner, attribute: str, name: str) -> None:
    original = getattr(owner, attribute)

    def timed_call(*args, **kwargs):
        with timed(name):
            return original(*args, **kwargs)

    setattr(owner, attribute, timed_call)


def instrument() -> None:
    """Put timers around the parts of every algorithm's loop."""
    import rlrun.algos.dqn
    import rlrun.algos.ppo
    import rlrun.algos.sac
    import rlrun.algos.td3
    import rlrun.core.run
    import rlrun.envs.envpool
    import rlrun.envs.make
    from rlrun.blocks import buffers

    def gradient_step(optimizer, loss, max_grad_norm=None):
        optimizer.zero_grad()
        with timed("update: backward"):
            loss.backward()
        with timed("update: optimiser step"):
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(optimizer.params, max_grad_norm, foreach=True)
            optimizer.step()

    for module in (rlrun.algos.sac, rlrun.algos.td3, rlrun.algos.dqn, rlrun.algos.ppo):
        module.gradient_step = gradient_step
        if hasattr(module, "polyak_update"):
            wrap(module, "polyak_update", "update: target networks")
    for cls in (rlrun.algos.sac.SAC, rlrun.algos.td3.TD3, rlrun.algos.dqn.DQN, rlrun.algos.ppo.PPO):
        wrap(cls, "update", "update: forward passes and losses")
        for method in ("explore", "act"):
            if hasattr(cls, method):
                wrap(cls, method, "acting")
    wrap(buffers.ReplayBuffer, "add_batch", "replay buffer: add")
    wrap(buffers.ReplayBuffer, "sample", "replay buffer: sample")
    wrap(rlrun.envs.make.EpisodeReplay, "step", "environment step")
    wrap(rlrun.envs.envpool.EnvPoolVectorEnv, "step", "environment step")  # env.backend=envpool's whole vector step
    wrap(rlrun.envs.make.EpisodeReplay, "reset", "environment reset")
    wrap(rlrun.core.run.Run, "after_step", "logging, evaluation, checkpoints")
    wrap(rlrun.core.run.Run, "episode_end", "logging, evaluation, checkpoints")


def main(overrides: list[str]) -> None:
    from hydra import compose, initialize_config_module

    from rlrun.cli import keep_freed_memory
    from rlrun.core.plan import validate
    from rlrun.core.training import execute

    keep_freed_memory()  # as the rlrun command does: without it, page faults inflate the update
    with initialize_config_module("rlrun.configs", version_base="1.3"):
        plan = validate(compose("config", overrides=["progress=false", *overrides]))
    instrument()
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        summary = execute(plan, Path(folder))
        wall = time.perf_counter() - start
    # Evaluation calls the policy and steps its own env inside after_step; charged there.
    accounted = sum(TOTALS.values())
    print(
        f"{plan.algo_name} on {plan.run_config.env.id}: {summary['total_steps']} steps in {wall:.1f} s, "
        f"{torch.get_num_threads()} torch threads, training {summary['sps']:.0f} steps/s"
    )
    print(f"{'part':<36} {'total s':>8} {'share':>6} {'calls':>8} {'ms/call':>8}")
    for name, total in sorted(TOTALS.items(), key=lambda item: -item[1]):
        print(f"{name:<36} {total:8.2f} {total / wall:6.1%} {COUNTS[name]:8d} {1000 * total / COUNTS[name]:8.3f}")
    print(f"{'the loop itself (untimed)':<36} {wall - accounted:8.2f} {(wall - accounted) / wall:6.1%}")


if __name__ == "__main__":
    main(sys.argv[1:])
