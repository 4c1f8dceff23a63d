"""The GPU path: `device=auto` trains on CUDA with the replay buffer, rollouts and updates on
the device; an update never waits for the device; an environment step sends only the env's
outputs to the device and brings only the action back.

Skipped without a CUDA GPU. On a GPU machine the rest of the suite runs on CUDA too, since its
command-line runs use the default device=auto.
"""

import json
from contextlib import contextmanager

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import run_rlrun
from torch.profiler import ProfilerActivity, profile

from rlrun.algos.crossq import CrossQ, CrossQConfig
from rlrun.algos.ddpg import DDPG, DDPGConfig
from rlrun.algos.dqn import DQN, DQNConfig
from rlrun.algos.dsac_t import DSACT, DSACTConfig
from rlrun.algos.mrq import MRQ, MRQConfig
from rlrun.algos.ppo import PPO, PPOConfig
from rlrun.algos.sac import SAC, SACConfig
from rlrun.algos.td3 import TD3, TD3Config
from rlrun.blocks.buffers import ReplayBuffer, SequenceReplayBuffer
from rlrun.config import EnvConfig
from rlrun.envs.make import make_env, make_vector_env

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

GPU = torch.device("cuda")
SMALL = dict(hidden_sizes=(32, 32), batch_size=64, learning_starts=100)
OFF_POLICY = {
    "sac": (SAC, SACConfig(**SMALL)),
    "td3": (TD3, TD3Config(**SMALL)),
    "ddpg": (DDPG, DDPGConfig(**SMALL)),
    "dsac_t": (DSACT, DSACTConfig(**SMALL)),
    "crossq": (
        CrossQ,
        CrossQConfig(actor_hidden_sizes=(32, 32), critic_hidden_sizes=(32, 32), batch_size=64, learning_starts=100),
    ),
    # Greedy throughout (ε = 0), so that every step reads its action back from the GPU.
    "dqn": (DQN, DQNConfig(**SMALL, train_every=1, start_epsilon=0.0, end_epsilon=0.0)),
}


@pytest.mark.parametrize(
    "algo, env",
    [
        ("sac", "Pendulum"),
        ("td3", "Pendulum"),
        ("ddpg", "Pendulum"),
        ("dsac_t", "Pendulum"),
        ("crossq", "Pendulum"),
        ("mrq", "Pendulum"),
        ("ppo", "Pendulum"),
        ("dqn", "CartPole"),
    ],
)
def test_device_auto_trains_on_the_gpu(tmp_path, algo, env):
    result = run_rlrun("experiment=smoke", f"algo={algo}", f"env={env}", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["status"], summary["device"]) == ("completed", "cuda")
    assert np.isfinite(summary["eval_return_mean"])


@contextmanager
def no_waiting_for_the_gpu():
    """Any operation that makes the host wait for the device raises inside this block."""
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_the_guard_catches_a_wait():
    with pytest.raises(RuntimeError, match="synchroniz"), no_waiting_for_the_gpu():
        torch.ones(1, device=GPU).item()


def spaces(algo):
    """CartPole's spaces for DQN, Pendulum's for the others."""
    if algo == "dqn":
        return gym.spaces.Box(-np.inf, np.inf, (4,), np.float32), gym.spaces.Discrete(2)
    return gym.spaces.Box(-np.inf, np.inf, (3,), np.float32), gym.spaces.Box(-2.0, 2.0, (1,), np.float32)


@pytest.mark.parametrize("algo", OFF_POLICY)
def test_storing_sampling_and_updating_never_wait_for_the_gpu(algo):
    agent_class, config = OFF_POLICY[algo]
    obs_space, action_space = spaces(algo)
    agent = agent_class(config, obs_space, action_space, GPU, seed=0)
    action_shape, action_dtype = ((), torch.int64) if algo == "dqn" else ((1,), torch.float32)
    buffer = ReplayBuffer(500, obs_space.shape, action_shape, GPU, seed=0, action_dtype=action_dtype)

    def add_vector_step(num_envs=2):
        obs = torch.randn((num_envs, *obs_space.shape), device=GPU)
        actions = agent.greedy(obs) if algo == "dqn" else agent.explore(obs)
        next_obs = torch.randn((num_envs, *obs_space.shape), device=GPU)
        buffer.add_batch(obs, actions, np.full(num_envs, 0.5), next_obs, terminated=np.zeros(num_envs, bool))

    for _ in range(50):
        add_vector_step()
    with no_waiting_for_the_gpu():
        for _ in range(4):  # TD3's and DSAC-T's delayed updates come every second step
            add_vector_step()
            metrics = agent.update(buffer.sample(config.batch_size))
    assert all(value.device.type == "cuda" for value in metrics.values())


# MR.Q learns from its own buffer (subsequences, priorities), so its update takes the buffer.
MRQ_SMALL = MRQConfig(
    zs_dim=32,
    za_dim=16,
    zsa_dim=32,
    encoder_hidden_dim=32,
    value_hidden_dim=32,
    policy_hidden_dim=32,
    batch_size=64,
    learning_starts=100,
    target_update_freq=2,  # target copies and encoder steps inside the guarded updates
)


def test_an_mrq_update_never_waits_for_the_gpu():
    obs_space, action_space = spaces("mrq")
    agent = MRQ(MRQ_SMALL, obs_space, action_space, GPU, seed=0)
    buffer = SequenceReplayBuffer(500, obs_space.shape, action_space.shape, GPU, seed=0, horizon=5)

    def add_step():
        obs = torch.randn((1, *obs_space.shape), device=GPU)
        next_obs = torch.randn((1, *obs_space.shape), device=GPU)
        buffer.add_batch(obs, agent.explore(obs), np.full(1, 0.5), next_obs, np.zeros(1, bool), np.zeros(1, bool))

    for _ in range(50):
        add_step()
    with no_waiting_for_the_gpu():
        for _ in range(4):
            add_step()
            metrics = agent.update(buffer)
    assert all(value.device.type == "cuda" for value in metrics.values())


def test_an_mrq_step_copies_only_the_observation_in_and_the_action_out():
    run = LoopOnly("Pendulum-v1", total_steps=400)
    agent = MRQ(MRQ_SMALL, *spaces("mrq"), GPU, seed=0)
    to_device, to_host = copies(agent.train, run)
    # As for SAC's loop: the buffer's bookkeeping (startable slots, priorities) stays on the device.
    assert to_device == 1 + 2 * run.total_steps + run.episodes + MRQ_SMALL.learning_starts, (to_device, run.episodes)
    assert to_host == run.total_steps - MRQ_SMALL.learning_starts


def test_a_ppo_update_never_waits_for_the_gpu():
    obs_space, action_space = spaces("ppo")
    agent = PPO(PPOConfig(hidden_sizes=(32, 32), num_minibatches=4, update_epochs=2), obs_space, action_space, GPU, seed=0)
    n = 256
    rollout = dict(
        obs=torch.randn(n, 3, device=GPU),
        actions=torch.randn(n, 1, device=GPU),
        log_probs=-torch.rand(n, device=GPU),
        values=torch.randn(n, device=GPU),
        advantages=torch.randn(n, device=GPU),
        returns=torch.randn(n, device=GPU),
        indices=torch.arange(n, device=GPU),
    )
    with no_waiting_for_the_gpu():
        metrics = agent.update(**rollout)
    assert all(value.device.type == "cuda" for value in metrics.values())


class LoopOnly:
    """What a training loop uses of rlrun.core.run.Run, without logging, evaluation or
    checkpoints, so that a profile of the loop holds only the loop's own traffic."""

    def __init__(self, env_id: str, total_steps: int, seed: int = 0) -> None:
        self.env_config = EnvConfig(id=env_id, total_steps=total_steps)
        self.total_steps, self.seed = total_steps, seed
        self.episodes = 0

    def make_env(self):
        self.training_env = make_env(self.env_config, self.seed, training=True)
        return self.training_env

    def make_vector_env(self, num_envs, asynchronous, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP):
        self.training_env = make_vector_env(self.env_config, self.seed, num_envs, asynchronous, autoreset_mode=autoreset_mode)
        return self.training_env

    def start(self, agent, loop):
        obs, _ = self.training_env.reset(seed=self.seed)
        return obs, 0

    def record(self, metrics):
        pass

    def episode_end(self, step, episode_return, episode_length):
        self.episodes += 1

    def after_step(self, step):
        pass


def copies(train, run):
    """(host → device, device → host) copies the GPU made while `train(run)` ran."""
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        train(run)
        torch.cuda.synchronize()
    names = [event.name for event in prof.events()]
    to_device = sum(name.startswith("Memcpy HtoD") for name in names)
    to_host = sum(name.startswith("Memcpy DtoH") for name in names)
    assert to_device + to_host > 0, f"the profiler saw no copies at all: {sorted(set(names))[:40]}"
    return to_device, to_host


@pytest.mark.parametrize("algo", OFF_POLICY)
def test_an_off_policy_step_copies_only_the_observation_in_and_the_action_out(algo):
    agent_class, config = OFF_POLICY[algo]
    run = LoopOnly("CartPole-v1" if algo == "dqn" else "Pendulum-v1", total_steps=400)
    agent = agent_class(config, *spaces(algo), GPU, seed=0)
    to_device, to_host = copies(agent.train, run)

    learning = run.total_steps - config.learning_starts
    # In: the first observation; each step's observations, and its rewards and termination
    # flags together; each ended episode's final observation; and while learning has not
    # started the random actions, which are drawn on the host. Out: the acting steps' actions.
    random_actions = 0 if algo == "dqn" else config.learning_starts
    assert to_device == 1 + 2 * run.total_steps + run.episodes + random_actions, (to_device, run.episodes)
    acting_steps = run.total_steps if algo == "dqn" else learning
    assert to_host == acting_steps


def test_a_ppo_step_copies_only_the_env_outputs_in_and_the_actions_out():
    config = PPOConfig(num_envs=2, num_steps=32, hidden_sizes=(32, 32), num_minibatches=2, update_epochs=1)
    run = LoopOnly("Pendulum-v1", total_steps=4 * config.batch_size)
    agent = PPO(config, *spaces("ppo"), GPU, seed=0)
    to_device, to_host = copies(agent.train, run)

    vector_steps = run.total_steps // config.num_envs
    rollouts = run.total_steps // config.batch_size
    # In: the observations, rewards, terminations and dones of every vector step (the first
    # observations too), and each rollout's index of real transitions. Out: the actions.
    assert to_device == 1 + 4 * vector_steps + (rollouts - 1), to_device
    assert to_host == vector_steps
