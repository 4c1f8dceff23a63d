"""CPU time of one gradient update and of one acting call, for off-policy algorithms side by side.

    python scripts/update_cost.py --env HalfCheetah sac dsac_t "dsac_t hidden_sizes=[256,256] activation=relu"

Each positional argument is an algorithm name, optionally followed by fields of its Config
(`key=value`, values in YAML). Agents are built on the environment's spaces with one torch
thread and updated on batches from a replay buffer of random transitions, in rounds that
alternate between the agents. Times are the process's CPU time, which other jobs on a shared
machine disturb far less than wall time; an environment step's cost is printed alongside.
MR.Q's update samples its own subsequences and every target_update_freq-th one also trains
the encoder that many times: timed over a multiple of 250 updates, its figure averages that in.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import yaml

from rlrun.algos.mrq import MRQ
from rlrun.blocks.buffers import ReplayBuffer, SequenceReplayBuffer
from rlrun.core.registry import get_algorithm

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def build(spec: str, obs_space: gym.Space, action_space: gym.Space):
    name, *settings = spec.split()
    overrides = {key: yaml.safe_load(value) for key, value in (setting.split("=", 1) for setting in settings)}
    overrides = {key: tuple(value) if isinstance(value, list) else value for key, value in overrides.items()}
    algorithm = get_algorithm(name)
    config = algorithm.Config(**overrides)
    return algorithm(config, obs_space, action_space, torch.device("cpu"), seed=0), config


def cpu_ms(function, repeats: int) -> float:
    start = time.process_time()
    for _ in range(repeats):
        function()
    return (time.process_time() - start) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("agents", nargs="+", help='an algorithm name, optionally with Config fields: "dsac_t lr=1e-3"')
    parser.add_argument("--env", default="HalfCheetah", help="a configs/env name (its spaces are used)")
    parser.add_argument("--updates", type=int, default=250, help="timed updates per agent and round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(0)
    env_id = yaml.safe_load((CONFIGS / "env" / f"{args.env}.yaml").read_text())["id"]
    env = gym.make(env_id)
    obs_space, action_space = env.observation_space, env.action_space
    agents = {spec: build(spec, obs_space, action_space) for spec in args.agents}

    obs_dim, action_dim = obs_space.shape[0], action_space.shape[0]
    # Random transitions: the cost of an update does not depend on what the batch holds.
    size = 4 * max(config.batch_size for _, config in agents.values())
    buffer = ReplayBuffer(size, obs_space.shape, action_space.shape, torch.device("cpu"), seed=0)
    buffer.add_batch(
        torch.randn(size, obs_dim),
        torch.rand(size, action_dim) * 2 - 1,
        np.random.randn(size),
        torch.randn(size, obs_dim),
        np.zeros(size, bool),
    )

    def update_of(agent, config):
        """One timed update. MR.Q samples its own subsequences: it gets a sequence buffer of the
        same kind of random transitions, one episode-free stream."""
        if not isinstance(agent, MRQ):
            return lambda: agent.update(buffer.sample(config.batch_size))
        horizon = max(config.enc_horizon, config.q_horizon)
        sequences = SequenceReplayBuffer(size, obs_space.shape, action_space.shape, torch.device("cpu"), 0, horizon)
        for _ in range(size):
            sequences.add_batch(
                torch.randn(1, obs_dim),
                torch.rand(1, action_dim) * 2 - 1,
                np.random.randn(1),
                torch.randn(1, obs_dim),
                *np.zeros((2, 1), bool),
            )
        return lambda: agent.update(sequences)

    updates = {spec: update_of(agent, config) for spec, (agent, config) in agents.items()}
    env.reset(seed=0)
    step_ms = cpu_ms(lambda: env.step(action_space.sample()), 1000)
    print(f"{env_id}: environment step {step_ms:.3f} ms CPU")
    obs = torch.randn(obs_dim)
    for round_number in range(args.rounds):
        for spec, (agent, _) in agents.items():
            update_once = updates[spec]
            for _ in range(10):  # warm-up: first-call allocations
                update_once()
            update = cpu_ms(update_once, args.updates)
            explore = cpu_ms(lambda agent=agent: agent.explore(obs), args.updates)
            print(f"round {round_number + 1}  {spec:50s} update {update:7.2f} ms  explore {explore:6.3f} ms CPU")


if __name__ == "__main__":
    main()
