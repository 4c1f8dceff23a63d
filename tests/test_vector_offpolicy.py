"""Vector environments in the replay-buffer loops (SAC, TD3, DDPG via rlrun.loops.replay; DQN):
each vector step stores one real transition per sub-environment (an ended episode's last
observation, not the next episode's first), logs each sub-environment's episodes, and keeps
the gradient steps per environment step whatever num_envs is."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import rlrun.algos.dqn
from rlrun.algos.dqn import DQN, DQNConfig
from rlrun.algos.sac import SAC, SACConfig
from rlrun.config import ConfigError, EnvConfig
from rlrun.envs.make import env_spaces, make_vector_env

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here on one torch thread (conftest.one_torch_thread)."""


class LoopOnly:
    """What a training loop uses of rlrun.core.run.Run, recording what the loop hands it."""

    def __init__(self, env: EnvConfig, total_steps: int, seed: int = 0) -> None:
        self.env_config, self.total_steps, self.seed = env, total_steps, seed
        self.episodes: list[tuple[int, float, int]] = []
        self.steps: list[int] = []

    def make_vector_env(self, num_envs, asynchronous, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP):
        self.envs = make_vector_env(self.env_config, self.seed, num_envs, asynchronous, autoreset_mode=autoreset_mode)
        return self.envs

    def start(self, agent, loop):
        self.loop = loop
        obs, _ = self.envs.reset(seed=self.seed)
        return obs, 0

    def record(self, metrics):
        pass

    def episode_end(self, step, episode_return, episode_length):
        self.episodes.append((step, float(episode_return), int(episode_length)))

    def after_step(self, step):
        self.steps.append(step)


def count_calls(monkeypatch, owner, name):
    calls = []
    original = getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def pendulum_step(obs: np.ndarray, env_action: np.ndarray) -> np.ndarray:
    """Pendulum-v1's next observation from an observation and a torque, by its own dynamics."""
    pendulum = gym.make("Pendulum-v1").unwrapped
    pendulum.reset(seed=0)
    pendulum.state = np.array([np.arctan2(obs[1], obs[0]), obs[2]])
    return pendulum.step(env_action)[0]


def test_sac_stores_every_sub_envs_real_transitions_and_keeps_the_replay_ratio(monkeypatch):
    num_envs, total_steps, learning_starts, updates_per_step = 3, 30, 10, 2
    env = EnvConfig(id="Pendulum-v1", total_steps=total_steps, max_episode_steps=5)  # episodes of 5 steps
    config = SACConfig(
        hidden_sizes=(16,), batch_size=8, learning_starts=learning_starts, updates_per_step=updates_per_step, num_envs=num_envs
    )
    agent = SAC(config, *env_spaces(env), CPU, seed=0)
    updates = count_calls(monkeypatch, agent, "update")
    run = LoopOnly(env, total_steps)
    agent.train(run)

    assert run.steps == list(range(num_envs, total_steps + 1, num_envs))  # a vector step counts num_envs steps
    # (total − learning_starts) × updates_per_step, although learning_starts is no multiple of num_envs.
    assert len(updates) == (total_steps - learning_starts) * updates_per_step
    # Each sub-env's episode ends at its 5th and 10th step: vector steps 5 and 10, steps 15 and 30.
    assert [(step, length) for step, _, length in run.episodes] == [(15, 5)] * 3 + [(30, 5)] * 3

    buffer = run.loop["buffer"]
    assert len(buffer) == total_steps and not buffer.terminated.any()  # time limits truncate, never terminate
    obs, next_obs = buffer.obs.numpy(), buffer.next_obs.numpy()
    env_actions = agent.actions.to_env(buffer.actions.numpy())
    # Every stored transition is a true Pendulum step, the 6 at episode ends included (their
    # next observation is the episode's last, not the next episode's first).
    for row in range(total_steps):
        np.testing.assert_allclose(next_obs[row], pendulum_step(obs[row], env_actions[row]), atol=1e-5)
    # Rows are vector step by vector step; within an episode a sub-env continues where it was.
    by_step = obs.reshape(10, num_envs, 3), next_obs.reshape(10, num_envs, 3)
    for t in (0, 1, 2, 3, 5, 6, 7, 8):
        np.testing.assert_array_equal(by_step[1][t], by_step[0][t + 1])
    assert not np.isclose(by_step[1][4], by_step[0][5]).all(axis=1).any()  # step 5 starts new episodes


def test_dqn_stores_terminal_transitions_with_their_final_observation_and_keeps_its_schedules(monkeypatch):
    num_envs, total_steps, learning_starts = 4, 200, 10
    env = EnvConfig(id="CartPole-v1", total_steps=total_steps)
    config = DQNConfig(
        hidden_sizes=(16,),
        batch_size=8,
        buffer_size=total_steps,
        learning_starts=learning_starts,
        num_envs=num_envs,
        train_every=4,
        gradient_steps=2,
        target_update_every=8,
    )
    agent = DQN(config, *env_spaces(env), CPU, seed=0)
    updates = count_calls(monkeypatch, agent, "update")
    target_updates = count_calls(monkeypatch, rlrun.algos.dqn, "polyak_update")
    run = LoopOnly(env, total_steps)
    agent.train(run)

    # Training points (multiples of 4) and target updates (of 8) in (learning_starts, total_steps].
    assert len(updates) == 2 * (total_steps // 4 - learning_starts // 4)
    assert len(target_updates) == total_steps // 8 - learning_starts // 8

    buffer = run.loop["buffer"]
    terminated = buffer.terminated.bool()
    x, angle = buffer.next_obs[:, 0], buffer.next_obs[:, 2]
    out_of_bounds = (x.abs() > 2.4) | (angle.abs() > 12 * 2 * np.pi / 360)
    # A terminal transition ends in the state that terminated it; a reset observation (all
    # within ±0.05) there would be in bounds.
    assert terminated.sum() >= num_envs and torch.equal(terminated, out_of_bounds)
    assert len(run.episodes) == int(terminated.sum())  # one logged episode per termination
    assert sum(length for _, _, length in run.episodes) <= total_steps


def test_dqn_explores_per_sub_env():
    agent = DQN(DQNConfig(hidden_sizes=(8,)), gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(3), CPU, seed=0)
    obs = torch.randn(1000, 4)
    greedy = agent.greedy(obs)

    env_actions, stored = agent.explore(obs, 0.0, np.random.default_rng(1))
    assert torch.equal(stored, greedy) and np.array_equal(env_actions, greedy.numpy())

    env_actions, stored = agent.explore(obs, 1.0, np.random.default_rng(1))
    assert np.array_equal(stored, env_actions) and np.array_equal(env_actions, np.random.default_rng(1).integers(3, size=1000))

    env_actions, stored = agent.explore(obs, 0.5, np.random.default_rng(1))
    assert np.array_equal(stored, env_actions)
    # Half the sub-envs explore, and a uniform action differs from the greedy one 2 times in 3.
    assert 0.25 < (env_actions != greedy.numpy()).mean() < 0.42


@pytest.mark.parametrize("config_class", [SACConfig, DQNConfig])
def test_num_envs_must_be_positive(config_class):
    with pytest.raises(ConfigError, match="algo.num_envs=0 must be positive"):
        config_class(num_envs=0)
