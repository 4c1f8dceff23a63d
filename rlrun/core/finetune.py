"""Online runs started from an offline run (`rlrun algo=td3 init=<td3_bc run>`): which offline
algorithm starts which online one and what carries over, the checks made before anything is
written, and the agent that keeps the offline run's frozen input normalisation.

The default recipe is WSRL's (Zhou et al. 2024, "Efficient Online RL Fine-Tuning Need Not
Retain Offline Data", arXiv:2412.07762; github.com/zhouzypaul/wsrl, finetune.py): the whole
pre-trained agent is restored, the pre-trained policy collects `finetune.warmup_steps` steps into
a fresh replay buffer, then the online algorithm learns from online data only. With
`finetune.offline_data=true` the buffer starts holding the offline dataset instead (the older
recipe: CORL's algorithms/finetune/ scripts, WSRL's `append`).

The offline agents standardise observations with their dataset's statistics (DatasetNormalizer)
and TD3 and SAC do not, so `FineTuned` puts that normalisation, frozen, in front of the online
agent: acting, exploring, learning and the exported policy see what the offline networks saw,
and checkpoints hold the statistics, so that resume=, evaluate= and export= need nothing from
the offline run's folder (except resume= with offline_data, which reads its dataset again).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlrun.blocks.buffers import Batch
from rlrun.blocks.spaces import obs_batch
from rlrun.config import ConfigError, FinetuneConfig
from rlrun.core.checkpoint import latest, load
from rlrun.envs.datasets import load_transitions, open_dataset
from rlrun.loops.dataset import DatasetNormalizer
from rlrun.loops.replay import train_from_pretrained
from rlrun.protocols import Algorithm, RunContext

# online algorithm → {offline algorithm: the agent state it takes over, by checkpoint key}. The
# networks, their targets and (TD3+BC, CQL) their optimisers' moments, restored as WSRL restores
# its whole agent; each optimiser keeps the online algorithm's own step size. CQL is SAC with a
# penalty, so SAC also takes its temperature. IQL's actor is a Gaussian with a state-independent
# σ, which SAC's tanh-Gaussian head takes over as `iql_actor_as_sac` shows; its value network V
# has no counterpart in SAC and is left behind.
STARTS: dict[str, dict[str, tuple[str, ...]]] = {
    "td3": {"td3_bc": ("actor", "target_actor", "critic", "target_critic", "actor_optimizer", "critic_optimizer")},
    "sac": {
        "cql": ("actor", "critic", "target_critic", "log_alpha", "actor_optimizer", "critic_optimizer", "alpha_optimizer"),
        "iql": ("actor", "critic", "target_critic", "critic_optimizer"),
    },
}
INPUT_NORMALIZER = "input_normalizer"  # the checkpoint key of FineTuned's statistics


def _pairs() -> str:
    return ", ".join(f"{offline} → algo={online}" for online, starts in STARTS.items() for offline in starts)


def check_init_algorithm(algo_name: str) -> None:
    """One line if `algo_name` cannot start from an offline run at all (no folder is read)."""
    if algo_name not in STARTS:
        raise ConfigError(
            f"init= starts an online algorithm from an offline run ({_pairs()}); algo={algo_name} cannot start from one"
        )


@dataclass(frozen=True)
class InitStart:
    """The offline run a new run starts from, checked: its newest checkpoint and its dataset."""

    folder: Path
    checkpoint: Path
    algo: str  # the offline algorithm
    dataset: str  # the dataset= it learnt from


def check_init(
    init: str, algo_name: str, algo_config: Any, env_id: str, obs_space: gym.Space, action_space: gym.Space, offline_data: bool
) -> InitStart:
    """The offline run folder `init` checked against the online run (algorithm, environment,
    spaces, network sizes); ConfigError, one line naming what differs, before anything is written."""
    check_init_algorithm(algo_name)
    folder = Path(init)
    given = f"init={init}"
    if not folder.is_dir():
        raise ConfigError(f"{given}: no such folder; give the folder of an offline run ({_pairs()}), e.g. outputs/<date>/<time>")
    if not (folder / "checkpoints").is_dir() and not (folder / ".hydra" / "config.yaml").is_file():
        raise ConfigError(
            f"{given} is not an rlrun run folder (no checkpoints/, no .hydra/config.yaml); give an offline run's folder"
        )
    checkpoint = latest(folder)
    if checkpoint is None:
        raise ConfigError(f"{given} has no checkpoint to start from (checkpoints/step_*.pt); train it first")
    state = load(checkpoint, mmap=True)
    offline_algo = state["algo"]
    starts = STARTS[algo_name]
    if offline_algo not in starts:
        fits = [online for online, offline in STARTS.items() if offline_algo in offline]
        instead = f"; it starts algo={fits[0]}" if fits else f"; algo={algo_name} starts from {' or '.join(starts)} runs"
        raise ConfigError(f"{given} is an algo={offline_algo} run, which algo={algo_name} cannot start from{instead}")
    if state["env_id"] != env_id:
        raise ConfigError(
            f"{given} learnt for {state['env_id']}, but this run's env.id is {env_id}; set env.id={state['env_id']} "
            "(an online run goes on in the offline run's environment)"
        )
    offline_config = state["config"]["algo"]
    for key, ours, theirs in (
        ("hidden_sizes", str(list(algo_config.hidden_sizes)), str(list(offline_config["hidden_sizes"]))),
        ("num_critics", str(algo_config.num_critics), str(offline_config["num_critics"])),
    ):
        ours, theirs = ours.replace(" ", ""), theirs.replace(" ", "")
        if ours != theirs:
            raise ConfigError(
                f"{given} has algo.{key}={theirs} (its {offline_algo} networks), but this run's algo.{key}={ours}; "
                f"give algo.{key}={theirs} to start from it"
            )
    if getattr(algo_config, "critic_loss", "mse") != "mse":
        raise ConfigError(
            f"{given}: the {offline_algo} critics regress Q-values, but algo.critic_loss={algo_config.critic_loss} "
            "makes each critic a histogram; use algo.critic_loss=mse to start from it"
        )
    obs_dim = state["agent"]["normalizer"]["mean"].shape[0]
    action_dim = state["agent"]["critic"]["layers.0.weight"].shape[1] - obs_dim
    if (obs_dim,) != obs_space.shape or (action_dim,) != action_space.shape:
        raise ConfigError(
            f"{given} learnt with {obs_dim}-dimensional observations and {action_dim}-dimensional actions, but "
            f"{env_id} here has observations of shape {obs_space.shape} and actions of shape {action_space.shape} "
            "(check env.kwargs and env.wrappers)"
        )
    dataset = state["config"].get("dataset")
    if offline_data:
        open_dataset(dataset)  # one line if the dataset is gone: finetune.offline_data needs it
    return InitStart(folder, checkpoint, offline_algo, dataset)


def iql_actor_as_sac(iql_actor: dict[str, torch.Tensor], sac_actor: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """IQL's π(a|s) = N(tanh(μ(s)), σ²) as SAC's tanh-Gaussian head: the hidden layers are
    copied; the head's mean half is IQL's output layer (so tanh(mean) is IQL's deterministic
    action, unchanged) and its log-σ half has zero weights and IQL's log σ as bias."""
    converted = {}
    layers = sorted({int(key.split(".")[1]) for key in iql_actor if key.startswith("net.")})
    output = layers[-1]
    for index in layers[:-1]:
        for kind in ("weight", "bias"):
            converted[f"trunk.{index}.{kind}"] = iql_actor[f"net.{index}.{kind}"]
    weight, bias = iql_actor[f"net.{output}.weight"], iql_actor[f"net.{output}.bias"]
    converted["head.weight"] = torch.cat([weight, torch.zeros_like(weight)])
    converted["head.bias"] = torch.cat([bias, iql_actor["log_std"].clamp(-20.0, 2.0)])
    assert converted.keys() == sac_actor.keys(), "SAC's actor layout changed"
    return converted


class FineTuned:
    """An online agent (TD3, SAC) behind the offline run's input normalisation: every
    observation it acts on, explores from or learns from is first standardised by the offline
    dataset's statistics, frozen. Checkpoints hold the statistics beside the agent's own state."""

    def __init__(
        self, agent: Algorithm, algo_name: str, obs_space: gym.Space, settings: FinetuneConfig, start: InitStart | None
    ) -> None:
        """`start` is the offline run when this run starts from it (or, with offline_data, resumes)."""
        self.agent, self.algo_name, self.settings, self.start = agent, algo_name, settings, start
        self.device, self.actions, self.seed = agent.device, agent.actions, agent.seed
        self.normalizer = DatasetNormalizer(obs_space.shape[0], enabled=True).to(agent.device)

    def load_offline_start(self) -> None:
        """Take over the offline run's networks (STARTS) and its observation statistics."""
        offline = load(self.start.checkpoint, algo=self.start.algo)["agent"]
        online = self.agent.state_dict()
        for key in STARTS[self.algo_name][self.start.algo]:
            if key == "actor" and self.start.algo == "iql":
                online[key] = iql_actor_as_sac(offline[key], online[key])
            elif key.endswith("_optimizer"):
                online[key] = {**offline[key], "lr": online[key]["lr"]}
            else:
                online[key] = offline[key]
        self.agent.load_state_dict(online)
        self.normalizer.load_state_dict(offline["normalizer"])

    # ----- what the run and the loop call -------------------------------------------------
    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return self.agent.act(self.normalizer(obs_batch(obs, self.device))[0].cpu().numpy(), deterministic)

    def explore(self, obs: torch.Tensor) -> torch.Tensor:
        return self.agent.explore(self.normalizer(obs))

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.agent.update(batch._replace(obs=self.normalizer(batch.obs), next_obs=self.normalizer(batch.next_obs)))

    def policy_module(self) -> nn.Module:
        """raw observations → the online agent's exported policy on standardised ones."""
        return nn.Sequential(self.normalizer, self.agent.policy_module())

    def train(self, run: RunContext) -> None:
        offline = None
        if self.settings.offline_data:
            offline = load_transitions(open_dataset(self.start.dataset))
        train_from_pretrained(self, run, self.agent.config, self.settings.warmup_steps, offline)

    def state_dict(self) -> dict[str, Any]:
        return {**self.agent.state_dict(), INPUT_NORMALIZER: self.normalizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if INPUT_NORMALIZER not in state:
            raise ConfigError(
                "the checkpoint has no input_normalizer: it is not from a run started with init=; "
                "continue it without init=, or start a new run folder"
            )
        self.normalizer.load_state_dict(state[INPUT_NORMALIZER])
        self.agent.load_state_dict({key: value for key, value in state.items() if key != INPUT_NORMALIZER})
