"""Environments: id checks, Atari preprocessing, and exact save/restore.

Saving a training environment mid-episode and restoring it in a fresh copy continues the
exact same trajectory: the basis of exact resume."""

import importlib.util
import io
import re
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlrun.config import ConfigError, EnvConfig, dmc_id
from rlrun.envs.ids import check_env_id
from rlrun.envs.make import env_spaces, env_state, make_env, make_vector_env, restore_env


def test_env_ids_are_checked_against_the_registry_with_suggestions():
    check_env_id("Pendulum-v1")
    check_env_id("tests.crashing_env:CrashingPendulum-v0")  # "module:Id" imports the module that registers it
    with pytest.raises(
        ConfigError,
        match=r"^env.id='HalfCheetah-v9' is not a registered Gymnasium environment; "
        r"did you mean HalfCheetah-v5",
    ):
        check_env_id("HalfCheetah-v9")
    with pytest.raises(ConfigError, match=r"^env.id='NoSuchEnv-v0' is not a registered Gymnasium environment$"):
        check_env_id("NoSuchEnv-v0")
    with pytest.raises(ConfigError, match=r"^env.id='no_such_module:Foo-v0': cannot import 'no_such_module'"):
        check_env_id("no_such_module:Foo-v0")


def test_make_env_seeds_the_action_space_and_records_episodes():
    config = EnvConfig(id="CartPole-v1", total_steps=1)
    first, second = make_env(config, seed=7, training=True), make_env(config, seed=7, training=True)
    other = make_env(config, seed=8, training=True)
    draws = [[env.action_space.sample() for _ in range(32)] for env in (first, second, other)]
    assert draws[0] == draws[1] and draws[0] != draws[2]
    first.reset(seed=7)
    steps, done = 0, False
    while not done:
        *_, terminated, truncated, info = first.step(first.action_space.sample())
        steps, done = steps + 1, terminated or truncated
    assert info["episode"]["l"] == steps and info["episode"]["r"] == steps  # CartPole: reward 1 per step


def test_missing_ale_py_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "ale_py", None)  # makes `import ale_py` fail
    with pytest.raises(ConfigError, match=r"pip install -c constraints\.txt -e '\.\[atari\]'") as error:
        check_env_id("ALE/Pong-v5")
    assert "\n" not in str(error.value)


def test_atari_env_preprocessing_and_training_only_reward_clipping():
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    env_config = EnvConfig("ALE/Pong-v5", 1000)
    obs_space, action_space = env_spaces(env_config)
    assert obs_space.shape == (4, 84, 84) and obs_space.dtype == np.uint8
    assert isinstance(action_space, gym.spaces.Discrete)

    train_env = make_env(env_config, seed=0, training=True)
    eval_env = make_env(env_config, seed=0, training=False)
    try:
        # Clipping sits outside the episode statistics, so recorded returns are game scores
        # (the outermost wrapper, EpisodeReplay, only records seeds and actions).
        assert isinstance(train_env.env, gym.wrappers.TransformReward)
        assert isinstance(train_env.env.env, gym.wrappers.RecordEpisodeStatistics)
        assert isinstance(eval_env.env, gym.wrappers.RecordEpisodeStatistics)
        assert train_env.unwrapped._frameskip == 1  # AtariPreprocessing does the skipping
        obs, _ = train_env.reset(seed=0)
        assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    finally:
        train_env.close()
        eval_env.close()


def through_a_checkpoint(state):
    """The state as a weights-only checkpoint gives it back."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize(
    "env_id", ["HalfCheetah-v5", "Pendulum-v1", "CartPole-v1", "ALE/Pong-v5", "dm_control/cartpole-swingup-v0"]
)
def test_a_restored_env_continues_the_same_trajectory(env_id):
    if env_id.startswith("ALE/"):
        pytest.importorskip("ale_py")
    if env_id.startswith("dm_control/"):
        skip_without_dmc()
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


# ----- constructor arguments, episode limits and wrappers from the config ------------------------
CLIP = {"_target_": "gymnasium.wrappers.ClipReward", "min_reward": -0.5, "max_reward": 0.0}


def test_kwargs_episode_limit_and_wrappers_reach_training_and_evaluation_envs():
    env = EnvConfig(id="Pendulum-v1", total_steps=100, kwargs={"g": 3.0}, max_episode_steps=7, wrappers=(CLIP,))
    for training in (True, False):
        made = make_env(env, seed=0, training=training)
        assert made.unwrapped.g == 3.0
        made.reset(seed=0)
        rewards, steps, done = [], 0, False
        while not done:
            _, reward, terminated, truncated, _ = made.step(made.action_space.sample())
            rewards.append(reward)
            steps += 1
            done = terminated or truncated
        assert steps == 7 and truncated
        assert all(-0.5 <= r <= 0.0 for r in rewards) and min(rewards) == -0.5  # clipped: Pendulum's own go below -0.5
        made.close()


def test_wrappers_apply_in_order():
    scale = {"_target_": "gymnasium.wrappers.TransformReward", "func": {"_target_": "operator.neg", "_partial_": True}}
    clip_then_negate = make_env(EnvConfig(id="Pendulum-v1", total_steps=10, wrappers=(CLIP, scale)), 0, training=True)
    negate_then_clip = make_env(EnvConfig(id="Pendulum-v1", total_steps=10, wrappers=(scale, CLIP)), 0, training=True)
    for made in (clip_then_negate, negate_then_clip):
        made.reset(seed=0)
    action = np.array([0.0], dtype=np.float32)
    assert clip_then_negate.step(action)[1] >= 0.0  # clipped into [-0.5, 0], then negated
    assert negate_then_clip.step(action)[1] == 0.0  # negated (positive), then clipped to 0


@pytest.mark.parametrize(
    "wrappers,words",
    [
        (({"min_reward": 0},), "needs _target_"),
        (({"_target_": "gymnasium.wrappers.NoSuchWrapper"},), "cannot apply gymnasium.wrappers.NoSuchWrapper (cannot import it"),
        (({"_target_": "gymnasium.wrappers.ClipReward", "nope": 1},), "unexpected keyword argument 'nope'"),
    ],
)
def test_a_wrong_wrapper_is_one_line_before_training(wrappers, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        env_spaces(EnvConfig(id="Pendulum-v1", total_steps=10, wrappers=wrappers))


def test_a_wrong_constructor_argument_is_one_line_before_training():
    with pytest.raises(ConfigError, match="Pendulum-v1 raised TypeError when made: .*unexpected keyword argument 'gravity'"):
        env_spaces(EnvConfig(id="Pendulum-v1", total_steps=10, kwargs={"gravity": 3.0}))


def test_a_custom_environment_in_the_working_folder_trains_through_the_rlrun_command(tmp_path):
    import shutil
    import subprocess

    from conftest import REPO, _env

    shutil.copy(REPO / "examples" / "point_env.py", tmp_path / "my_point.py")
    # The entry point of the environment running the tests, activated or not.
    rlrun = Path(sys.executable).with_name("rlrun")
    assert rlrun.exists(), "the rlrun command is installed by the set-up command"
    result = subprocess.run(
        [
            rlrun,
            "experiment=smoke",
            "algo=sac",
            "env=Pendulum",
            "env.id=my_point:PointMass-v0",
            "+env.kwargs.friction=0.5",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "completed"
    saved = (tmp_path / "run" / ".hydra" / "config.yaml").read_text()
    assert "friction: 0.5" in saved and "my_point:PointMass-v0" in saved  # resume and evaluation see the same env


# ----- DeepMind Control Suite and action repeat ------------------------------------------------
def skip_without_dmc() -> None:
    # Not importorskip: importing dm_control here would fix its OpenGL backend before rlrun
    # chooses a headless one.
    if importlib.util.find_spec("shimmy") is None or importlib.util.find_spec("dm_control") is None:
        pytest.skip("needs the dmc extra")


def dmc(domain: str, task: str, **settings) -> EnvConfig:
    skip_without_dmc()
    return EnvConfig(id=dmc_id(domain, task), total_steps=1000, domain=domain, task=task, **settings)


def play(env: gym.Env, action, seed: int = 0) -> tuple[int, float, bool]:
    """One episode of a constant action: its length, return and whether it was truncated."""
    env.reset(seed=seed)
    steps, total, done = 0, 0.0, False
    while not done:
        _, reward, terminated, truncated, _ = env.step(action)
        steps, total, done = steps + 1, total + reward, terminated or truncated
    return steps, total, truncated


def test_a_dmc_task_has_flat_observations_and_the_suites_1000_step_episodes():
    obs_space, action_space = env_spaces(dmc("cartpole", "balance"))
    assert obs_space.shape == (5,) and action_space.shape == (1,)  # position (3) + velocity (2)
    env = make_env(dmc("cartpole", "balance"), seed=0, training=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (5,)
    steps, total, truncated = play(env, np.zeros(1))
    assert steps == 1000 and truncated and 0 < total <= 1000  # rewards lie in [0, 1]


def test_a_misspelt_dmc_task_gets_the_closest_ids():
    skip_without_dmc()
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "env.id='dm_control/cheetah-nope-v0' is not a registered Gymnasium environment; did you mean dm_control/cheetah-run-v0"
        ),
    ):
        check_env_id(dmc_id("cheetah", "nope"))


def test_action_repeat_sums_the_rewards_of_repeated_actions_and_stops_at_the_episode_end():
    action = np.array([0.3])
    single, repeated = (make_env(dmc("cartpole", "balance", action_repeat=k), 0, training=True) for k in (1, 3))
    single.reset(seed=5)
    repeated.reset(seed=5)
    for _ in range(4):
        steps = [single.step(action) for _ in range(3)]
        obs, reward, *_ = repeated.step(action)
        assert reward == pytest.approx(sum(step[1] for step in steps)) and np.array_equal(obs, steps[-1][0])
    steps, total, truncated = play(repeated, action)
    assert steps == 334 and truncated  # 1000 environment steps: 333 repeats of 3, and a last one cut short
    assert total == pytest.approx(play(single, action)[1])


def test_dmc_pixels_are_84_by_84_rgb_frames_channels_first():
    env_config = dmc("cartpole", "balance", pixels=True, action_repeat=2)
    obs_space, _ = env_spaces(env_config)
    assert obs_space.shape == (3, 84, 84) and obs_space.dtype == np.uint8
    env = make_env(env_config, seed=0, training=True)
    try:
        first, _ = env.reset(seed=0)
        later = first
        for _ in range(20):
            later, *_ = env.step(np.array([1.0]))
    finally:
        env.close()  # frees its GL context on this thread, not when a later test's garbage collection finds it
    assert first.shape == (3, 84, 84) and first.dtype == np.uint8
    assert first.std() > 0 and not np.array_equal(first, later)  # a picture, and the cart moved


@pytest.mark.parametrize(
    "settings,words",
    [
        (
            {"id": "Pendulum-v1", "pixels": True},
            "env.pixels=true needs a DeepMind Control Suite id (env=dmc), not env.id='Pendulum-v1'",
        ),
        ({"id": "Pendulum-v1", "action_repeat": 0}, "env.action_repeat=0 must be positive"),
        ({"id": "Pendulum-v1", "domain": "cheetah"}, "env.domain and env.task go together"),
        (
            {"id": "dm_control/walker-walk-v0", "domain": "cheetah", "task": "run"},
            "env.id='dm_control/walker-walk-v0' is not the env.domain=cheetah env.task=run environment",
        ),
    ],
)
def test_wrong_dmc_and_action_repeat_settings_are_one_line_before_training(settings, words):
    with pytest.raises(ConfigError, match="^" + re.escape(words)):
        env_spaces(EnvConfig(total_steps=10, **settings))


def test_action_repeat_on_an_atari_game_points_to_frame_skip():
    pytest.importorskip("ale_py")
    with pytest.raises(
        ConfigError, match=re.escape("env.action_repeat=2 does not apply to Atari games; set env.atari.frame_skip")
    ):
        env_spaces(EnvConfig("ALE/Pong-v5", 1000, action_repeat=2))


def test_action_repeat_on_the_envpool_backend_is_one_line():
    from rlrun.algos.ppo import PPOConfig
    from rlrun.envs.envpool import check_envpool

    env_config = EnvConfig("HalfCheetah-v5", 1000, backend="envpool", action_repeat=2)
    obs_space, action_space = env_spaces(EnvConfig("HalfCheetah-v5", 1000))
    with pytest.raises(
        ConfigError, match=re.escape("env.action_repeat=2 repeats actions in Gymnasium environments; with env.backend=envpool")
    ):
        check_envpool(env_config, "ppo", PPOConfig(), obs_space, action_space)
