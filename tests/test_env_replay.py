"""Saving a training environment mid-episode and restoring it in a fresh process-like copy
continues the exact same trajectory: the basis of exact resume."""

import io

import numpy as np
import pytest
import torch

from rlrun.config import EnvConfig
from rlrun.envs import env_state, make_env, make_vector_env, restore_env


def through_a_checkpoint(state):
    """The state as a weights-only checkpoint gives it back."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("env_id", ["HalfCheetah-v5", "Pendulum-v1", "CartPole-v1", "ALE/Pong-v5"])
def test_a_restored_env_continues_the_same_trajectory(env_id):
    if env_id.startswith("ALE/"):
        pytest.importorskip("ale_py")
    config = EnvConfig(id=env_id, total_steps=1)
    original = make_env(config, seed=3, training=True)
    obs, _ = original.reset(seed=3)
    for _ in range(250):  # a few episodes for the short ones, mid-episode for all
        obs, _, terminated, truncated, _ = original.step(original.action_space.sample())
        if terminated or truncated:
            obs, _ = original.reset()

    restored = make_env(config, seed=99, training=True)
    assert np.array_equal(restore_env(restored, through_a_checkpoint(env_state(original))), obs)
    for _ in range(300):
        action = original.action_space.sample()
        assert np.array_equal(action, restored.action_space.sample())  # the action-space RNG too
        expected, actual = original.step(action), restored.step(action)
        assert np.array_equal(expected[0], actual[0]) and expected[1:4] == actual[1:4]
        if expected[2] or expected[3]:
            assert expected[4]["episode"]["r"] == actual[4]["episode"]["r"]  # episode statistics too
            assert np.array_equal(original.reset()[0], restored.reset()[0])  # later episodes' seeds too


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_restored_vector_env_continues_including_pending_autoresets(asynchronous):
    config = EnvConfig(id="CartPole-v1", total_steps=1)
    original = make_vector_env(config, seed=1, num_envs=3, asynchronous=asynchronous)
    obs, _ = original.reset(seed=1)
    for step in range(300):
        obs, _, terminated, truncated, _ = original.step(original.action_space.sample())
        if step > 30 and (terminated | truncated).any():
            break  # saved right after an episode end: that sub-env's next step is an autoreset
    state = through_a_checkpoint(env_state(original))
    assert any(episode["done"] for episode in state["episodes"])

    restored = make_vector_env(config, seed=5, num_envs=3, asynchronous=asynchronous)
    assert np.array_equal(restore_env(restored, state), obs)
    for _ in range(300):
        action = original.action_space.sample()
        expected, actual = original.step(action), restored.step(restored.action_space.sample())
        for a, b in zip(expected[:4], actual[:4]):
            assert np.array_equal(a, b)
        assert np.array_equal(expected[4].get("_episode", False), actual[4].get("_episode", False))
    original.close()
    restored.close()


def test_a_replay_that_diverges_is_reported(caplog):
    config = EnvConfig(id="Pendulum-v1", total_steps=1)
    original = make_env(config, seed=0, training=True)
    original.reset(seed=0)
    for _ in range(20):
        original.step(original.action_space.sample())
    state = env_state(original)
    state["episodes"][0]["obs"] = state["episodes"][0]["obs"] + 1.0  # as if the env were not deterministic
    with caplog.at_level("WARNING", logger="rlrun"):
        restore_env(make_env(config, seed=0, training=True), state)
    assert "did not replay to its saved state" in caplog.text
