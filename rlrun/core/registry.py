"""Algorithms by name. Adding one: a file in rlrun/algos/, a yaml in configs/algo/, a line here."""

from __future__ import annotations

import importlib

from rlrun.config import ConfigError

# name → "module:class"; imported only when chosen, so start-up stays fast.
ALGORITHMS: dict[str, str] = {
    "sac": "rlrun.algos.sac:SAC",
    "ppo": "rlrun.algos.ppo:PPO",
    "dqn": "rlrun.algos.dqn:DQN",
    "rainbow": "rlrun.algos.rainbow:Rainbow",
    "td3": "rlrun.algos.td3:TD3",
    "ddpg": "rlrun.algos.ddpg:DDPG",
    "dsac_t": "rlrun.algos.dsac_t:DSACT",
    "crossq": "rlrun.algos.crossq:CrossQ",
    "mrq": "rlrun.algos.mrq:MRQ",
    "td3_bc": "rlrun.algos.td3_bc:TD3BC",
    "iql": "rlrun.algos.iql:IQL",
    "cql": "rlrun.algos.cql:CQL",
    "dt": "rlrun.algos.dt:DecisionTransformer",
}
# The algorithms that train a batched group of seeds in one process (their train_seeds;
# docs/batched-seeds.md, hydra/launcher=batched).
BATCHED_ALGORITHMS = ("sac", "td3", "ddpg")
# The algorithms that learn from a dataset (dataset=) instead of an environment.
OFFLINE_ALGORITHMS = ("td3_bc", "iql", "cql", "dt")


def get_algorithm(name: str) -> type:
    if name not in ALGORITHMS:
        raise ConfigError(f"algo.name={name!r} is not a registered algorithm; choose one of: {', '.join(ALGORITHMS)}")
    module_name, class_name = ALGORITHMS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)
