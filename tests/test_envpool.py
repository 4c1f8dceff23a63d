"""The EnvPool backend (+env.backend=envpool): the same task as rlrun's Gymnasium path where the
two define it alike, one-line errors for what it cannot run, and no resume."""

import dataclasses
import json
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlrun.algos.ppo import PPOConfig
from rlrun.algos.sac import SACConfig
from rlrun.config import AtariConfig, ConfigError, EnvConfig, from_mapping
from rlrun.core import checkpoint
from rlrun.envs.make import env_spaces, make_vector_env

RUN_STATE = {"env": {}, "rng": {}, "metrics": None, "last_eval": None, "clock": {"elapsed": 0.0, "paused": 0.0}}


def step_both_backends(config: EnvConfig, num_envs: int, steps: int, seed: int = 0):
    """Step Gymnasium's and EnvPool's vector envs for `config` through the same random actions;
    yields (reset or step outputs of Gymnasium, of EnvPool) at each step."""
    pytest.importorskip("envpool")
    gymnasium_envs = make_vector_env(dataclasses.replace(config, backend="gymnasium"), seed, num_envs, asynchronous=False)
    envpool_envs = make_vector_env(dataclasses.replace(config, backend="envpool"), seed, num_envs, asynchronous=False)
    actions = np.random.default_rng(seed)
    try:
        yield gymnasium_envs.reset(seed=seed), envpool_envs.reset(seed=seed)
        for _ in range(steps):
            if isinstance(gymnasium_envs.single_action_space, gym.spaces.Discrete):
                action = actions.integers(gymnasium_envs.single_action_space.n, size=num_envs)
            else:
                action = actions.uniform(-1.0, 1.0, (num_envs, *gymnasium_envs.single_action_space.shape)).astype(np.float32)
            yield gymnasium_envs.step(action), envpool_envs.step(action)
    finally:
        gymnasium_envs.close()
        envpool_envs.close()


def assert_same_episodes(gymnasium_info: dict, envpool_info: dict, **tolerance) -> int:
    """The same episodes end, with the same lengths and returns; returns how many ended."""
    ended = gymnasium_info.get("_episode", np.zeros(0, dtype=bool))
    np.testing.assert_array_equal(ended, envpool_info.get("_episode", np.zeros(0, dtype=bool)))
    for i in np.flatnonzero(ended):
        assert gymnasium_info["episode"]["l"][i] == envpool_info["episode"]["l"][i]
        np.testing.assert_allclose(gymnasium_info["episode"]["r"][i], envpool_info["episode"]["r"][i], **tolerance)
    return int(ended.sum())


def test_mujoco_steps_as_on_gymnasium_through_time_limits_and_autoresets():
    # reset_noise_scale=0 makes both start from the same state. HalfCheetah is chaotic: rounding
    # differences of the two MuJoCo builds (1e-15) grow past 1e-6 within ~60 steps, hence short
    # episodes; each autoreset starts both from the same state again.
    config = EnvConfig("HalfCheetah-v5", 1, kwargs={"reset_noise_scale": 0.0}, max_episode_steps=12)
    ended = 0
    for step, (gymnasium_out, envpool_out) in enumerate(step_both_backends(config, num_envs=2, steps=40)):
        obs, envpool_obs = gymnasium_out[0], envpool_out[0]
        assert envpool_obs.shape == obs.shape and envpool_obs.dtype == obs.dtype
        np.testing.assert_allclose(envpool_obs, obs, rtol=1e-6, atol=1e-9, err_msg=f"step {step}")
        if step == 0:
            continue
        _, reward, terminated, truncated, info = gymnasium_out
        np.testing.assert_allclose(envpool_out[1], reward, rtol=1e-5, atol=1e-6)  # EnvPool's rewards are float32
        np.testing.assert_array_equal(envpool_out[2], terminated)
        np.testing.assert_array_equal(envpool_out[3], truncated)
        ended += assert_same_episodes(info, envpool_out[4], rtol=1e-5, atol=1e-5)
    assert ended == 6  # each of 2 environments truncated at steps 12, 25 and 38 (13 = 12 + the autoreset step)


def test_atari_frames_rewards_and_episodes_as_on_gymnasium():
    pytest.importorskip("ale_py")
    # Sticky actions off and exactly one no-op frame after each reset on both sides; a time limit
    # of 150 agent steps (600 frames). An episode's final observation differs: Gymnasium's
    # AtariPreprocessing leaves the episode's last frame out of it, EnvPool does not.
    config = EnvConfig("ALE/Pong-v5", 1, atari=AtariConfig(noop_max=1), max_episode_steps=600)
    ended, scored = 0, 0
    for step, (gymnasium_out, envpool_out) in enumerate(step_both_backends(config, num_envs=2, steps=320)):
        final = gymnasium_out[2] | gymnasium_out[3] if step > 0 else np.zeros(2, dtype=bool)
        np.testing.assert_array_equal(envpool_out[0][~final], gymnasium_out[0][~final], err_msg=f"step {step}")
        if step == 0:
            continue
        _, reward, terminated, truncated, info = gymnasium_out
        np.testing.assert_array_equal(envpool_out[1], reward)  # clipped to its sign on both (training envs)
        np.testing.assert_array_equal(envpool_out[2], terminated)
        np.testing.assert_array_equal(envpool_out[3], truncated)
        ended += assert_same_episodes(info, envpool_out[4])
        scored += int(np.count_nonzero(reward))
    assert ended == 4 and scored > 0  # two time limits per environment, with points scored in them


def test_episode_returns_keep_the_game_score_and_seeds_give_other_episodes():
    pytest.importorskip("envpool")
    config = EnvConfig("HalfCheetah-v5", 1, backend="envpool", max_episode_steps=5)
    first, again, other = (make_vector_env(config, seed, 2, asynchronous=False) for seed in (3, 3, 4))
    observations = [env.reset(seed=seed)[0] for env, seed in ((first, 3), (again, 3), (other, 4))]
    np.testing.assert_array_equal(observations[0], observations[1])
    assert not np.array_equal(observations[0], observations[2])
    assert not np.array_equal(observations[0][0], observations[0][1])  # environment i is seeded seed + i
    rewards = 0.0
    for _ in range(5):
        _, reward, _, truncated, info = first.step(np.full((2, 6), 0.5, dtype=np.float32))
        rewards += reward
    assert truncated.all() and info["_episode"].all()
    np.testing.assert_allclose(info["episode"]["r"], rewards, rtol=1e-6)
    np.testing.assert_array_equal(info["episode"]["l"], [5, 5])
    _, reward, terminated, truncated, info = first.step(np.zeros((2, 6), dtype=np.float32))  # the autoreset step
    assert (reward == 0).all() and not (terminated | truncated).any() and "_episode" not in info
    for env in (first, again, other):
        env.close()


def check(env: EnvConfig, algo_name: str = "ppo", algo_config=None) -> None:
    from rlrun.envs.envpool import check_envpool

    check_envpool(env, algo_name, algo_config or PPOConfig(), *env_spaces(env))


def test_a_missing_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "envpool", None)  # makes `import envpool` fail
    with pytest.raises(ConfigError, match=r"^env.backend=envpool needs the envpool extra .*-e '\.\[envpool\]'$"):
        check(EnvConfig("HalfCheetah-v5", 1, backend="envpool"))


def test_a_task_whose_spaces_differ_between_the_backends_is_refused():
    pytest.importorskip("envpool")
    from rlrun.envs.envpool import check_envpool

    env = EnvConfig("HalfCheetah-v5", 1, backend="envpool")
    obs_space, action_space = env_spaces(env)
    check_envpool(env, "ppo", PPOConfig(), obs_space, action_space)
    wider = gym.spaces.Box(-np.inf, np.inf, (18,))  # as with exclude_current_positions_from_observation=False
    with pytest.raises(
        ConfigError, match=r"EnvPool's HalfCheetah-v5 has Box\(.*\(17,\).*Gymnasium's HalfCheetah-v5 Box\(.*\(18,\)"
    ):
        check_envpool(env, "ppo", PPOConfig(), wider, action_space)
    with pytest.raises(ConfigError, match=r"has Box\(-1.0, 1.0, \(6,\), float64\), Gymnasium's HalfCheetah-v5 Discrete\(6\)"):
        check_envpool(env, "ppo", PPOConfig(), obs_space, gym.spaces.Discrete(6))


def test_an_unknown_backend_is_one_line():
    with pytest.raises(ConfigError, match=r"^env.backend='pool' is not valid; choose one of: gymnasium, envpool$"):
        from_mapping(EnvConfig, {"id": "HalfCheetah-v5", "total_steps": 1, "backend": "pool"}, prefix="env.")


@pytest.mark.parametrize(
    "env,algo,words",
    [
        (EnvConfig("CartPole-v1", 1), "ppo", "env.backend=envpool runs Atari (ALE/<Game>-v5) and MuJoCo"),
        (EnvConfig("HalfCheetah-v5", 1), "sac", "algo=sac's replay buffer needs each episode's final observation"),
        (EnvConfig("HalfCheetah-v5", 1, kwargs={"width": 64}), "ppo", "EnvPool's HalfCheetah-v5 does not take width"),
        (
            EnvConfig("HalfCheetah-v5", 1, wrappers=({"_target_": "gymnasium.wrappers.ClipAction"},)),
            "ppo",
            "with env.backend=envpool there are none to wrap",
        ),
        (EnvConfig("ALE/Pong-v5", 1, atari=AtariConfig(noop_max=0)), "ppo", "env.atari.noop_max=0: EnvPool always plays"),
    ],
    ids=["not-atari-or-mujoco", "single-env-algorithm", "unknown-kwarg", "wrappers", "no-noops"],
)
def test_what_envpool_cannot_run_is_one_line(env, algo, words):
    pytest.importorskip("envpool")
    if env.id.startswith("ALE/"):
        pytest.importorskip("ale_py")
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")) as error:
        check(dataclasses.replace(env, backend="envpool"), algo, SACConfig() if algo == "sac" else PPOConfig())
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "saved,asked,step,total_steps,words",
    [
        ("envpool", "envpool", 300, 600, "is from a run on env.backend=envpool, which cannot resume"),
        ("gymnasium", "envpool", 300, 600, "is from env.backend=gymnasium, not env.backend=envpool"),
        ("envpool", "gymnasium", 300, 600, "is from env.backend=envpool, not env.backend=gymnasium"),
        ("envpool", "envpool", 600, 600, None),  # finished: nothing to continue, nothing refused
    ],
)
def test_a_run_on_envpool_does_not_resume(tmp_path, saved, asked, step, total_steps, words):
    config = {"env": {"id": "HalfCheetah-v5", "backend": saved}}
    path = checkpoint.Checkpointer(tmp_path, "ppo", "HalfCheetah-v5", config, keep=1).save(step, {}, {}, RUN_STATE)
    resume = lambda: checkpoint.check_resumable(path, "ppo", "HalfCheetah-v5", backend=asked, total_steps=total_steps)
    if words is None:
        assert resume()["step"] == step
    else:
        with pytest.raises(ConfigError, match=words):
            resume()


@pytest.mark.slow
def test_ppo_trains_on_envpool_and_a_rerun_is_refused_before_anything_is_written(rlrun, tmp_path):
    pytest.importorskip("envpool")
    run_dir = tmp_path / "run"
    common = ("experiment=smoke", "algo=ppo", "env=HalfCheetah", "+env.backend=envpool", "threads=1", "device=cpu")
    result = rlrun(*common, "algo.num_envs=2", "+env.max_episode_steps=100", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["total_steps"] == 600
    episodes = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    lengths = [record["train/episode_length"] for record in episodes if "train/episode_length" in record]
    assert lengths and set(lengths) == {100}  # 2 environments × 100-step episodes, 3 autoreset steps each
    saved = torch.load(checkpoint.latest(run_dir), weights_only=True)
    assert saved["run"]["env"] == {"backend": "envpool"}
    files = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    result = rlrun(*common, "algo.num_envs=2", "+env.max_episode_steps=100", "total_steps=1200", f"hydra.run.dir={run_dir}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"rlrun: error: checkpoint {checkpoint.latest(run_dir)} is from a run on env.backend=envpool, which cannot resume "
        "(EnvPool cannot save its environments mid-episode); start a new run folder, or train on env.backend=gymnasium "
        "to resume exactly"
    ]
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == files


def test_a_non_finite_observation_names_envpool_unless_a_non_finite_action_went_in():
    pytest.importorskip("envpool")
    from rlrun.envs.make import EnvironmentFailure

    envs = make_vector_env(EnvConfig("Hopper-v5", 1, backend="envpool"), 0, 2, asynchronous=False)
    envs.reset(seed=0)
    real_step = envs._pool.step

    def nan_step(actions):
        obs, *rest = real_step(actions)
        obs[1, 0] = np.nan
        return (obs, *rest)

    envs._pool.step = nan_step
    with pytest.raises(EnvironmentFailure, match=r"^EnvPool's Hopper-v5 returned a non-finite observation$"):
        envs.step(np.zeros((2, 3), dtype=np.float32))
    envs.step(np.full((2, 3), np.nan, dtype=np.float32))  # the agent diverged: the run's own checks report that
    envs.close()
