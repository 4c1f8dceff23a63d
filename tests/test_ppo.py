"""PPO: GAE by hand, frozen observation normalisation, the CLI end to end."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from rlrun.algos.ppo import PPO, PPOConfig, compute_gae
from rlrun.blocks.nets import NatureCNN
from rlrun.config import EnvConfig, from_mapping
from rlrun.core import checkpoint
from rlrun.envs.make import env_spaces


def test_gae_on_a_hand_computed_rollout_with_a_termination_and_a_truncation():
    # γ = 0.9, λ = 0.8 (γλ = 0.72). Column 0: step 1 terminates, step 3 truncates (time limit).
    # next_values[t] is V of the observation step t returned: at a done that is the episode's
    # final observation. Column 1: no episode end, so the recursion runs over all five steps.
    gamma, lam = 0.9, 0.8
    rewards = torch.tensor([[1.0, 1.0], [2.0, 1.0], [3.0, 1.0], [4.0, 1.0], [5.0, 1.0]])
    values = torch.tensor([[0.5, 0.0], [1.0, 0.0], [1.5, 0.0], [2.0, 0.0], [2.5, 0.0]])
    next_values = torch.tensor([[1.0, 0.0], [7.0, 0.0], [2.0, 0.0], [3.0, 0.0], [6.0, 0.0]])
    terminated = torch.tensor([[0, 0], [1, 0], [0, 0], [0, 0], [0, 0]], dtype=torch.bool)
    truncated = torch.tensor([[0, 0], [0, 0], [0, 0], [1, 0], [0, 0]], dtype=torch.bool)

    advantages = compute_gae(rewards, values, next_values, terminated, terminated | truncated, gamma, lam)

    # Column 0, δ_t = r_t + γ(1 − term_t) V(s_{t+1}) − V(s_t):
    #   δ0 = 1 + 0.9·1.0 − 0.5 = 1.4
    #   δ1 = 2 + 0       − 1.0 = 1.0   termination: the final observation's 7.0 is ignored
    #   δ2 = 3 + 0.9·2.0 − 1.5 = 3.3
    #   δ3 = 4 + 0.9·3.0 − 2.0 = 4.7   truncation: bootstraps from the final observation's 3.0
    #   δ4 = 5 + 0.9·6.0 − 2.5 = 7.9   the rollout's end bootstraps from V(s_5) = 6.0
    # Â_t = δ_t + γλ(1 − done_t) Â_{t+1}, Â_5 = 0:
    #   Â4 = 7.9;  Â3 = 4.7 (done);  Â2 = 3.3 + 0.72·4.7 = 6.684;  Â1 = 1.0 (done);  Â0 = 1.4 + 0.72·1.0 = 2.12
    # Column 1: δ = 1 everywhere; Â4 = 1, Â3 = 1.72, Â2 = 2.2384, Â1 = 2.611648, Â0 = 2.88038656.
    expected = torch.tensor(
        [
            [2.12, 2.88038656],
            [1.0, 2.611648],
            [6.684, 2.2384],
            [4.7, 1.72],
            [7.9, 1.0],
        ]
    )
    torch.testing.assert_close(advantages, expected)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_policy_applies_the_observation_stats_frozen(env_id):
    env = gym.make(env_id)
    agent = PPO(PPOConfig(normalize_obs=True), env.observation_space, env.action_space, torch.device("cpu"), 0)
    agent.obs_rms.update(np.random.default_rng(0).normal(2.0, 3.0, size=(100, *env.observation_space.shape)))
    before = agent.obs_rms.state_dict()
    obs, _ = env.reset(seed=0)

    actions = [agent.act(obs) for _ in range(3)]

    after = agent.obs_rms.state_dict()
    for key in before:
        torch.testing.assert_close(after[key], before[key])  # evaluation never updates the stats
    normalized = ((torch.as_tensor(obs, dtype=torch.float64) - before["mean"]) / torch.sqrt(before["var"] + 1e-8)).float()
    expected = agent.model.deterministic(normalized.clamp(-10, 10)[None])[0].detach()
    if isinstance(env.action_space, gym.spaces.Discrete):
        assert actions == [int(expected)] * 3
    else:
        expected = np.clip(expected.numpy(), env.action_space.low, env.action_space.high)
        for action in actions:
            np.testing.assert_allclose(action, expected, rtol=1e-6)
            assert env.action_space.contains(action.astype(np.float32))


def _load_agent(run_dir, env_id):
    files = sorted((run_dir / "checkpoints").iterdir())
    state = checkpoint.load(files[-1])  # weights_only=True
    algo = {k: v for k, v in state["config"]["algo"].items() if k != "name"}
    env = gym.make(env_id)
    agent = PPO(from_mapping(PPOConfig, algo), env.observation_space, env.action_space, torch.device("cpu"), 0)
    agent.load_state_dict(state["agent"])
    return state, agent


def test_smoke_run_on_cartpole_saves_the_normalisation_stats(rlrun, tmp_path):
    run_dir = tmp_path / "run"
    # The tuned CartPole settings switch normalisation off; switch it on to check it is saved.
    result = rlrun(
        "experiment=smoke",
        "algo=ppo",
        "env=CartPole",
        "algo.normalize_obs=true",
        "algo.normalize_reward=true",
        "threads=1",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["total_steps"] == 600
    assert summary["algo"] == "ppo" and summary["env_id"] == "CartPole-v1"
    assert summary["eval_return_mean"] > 0

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    keys = {key for row in rows for key in row}
    assert {
        "losses/policy",
        "losses/value",
        "losses/entropy",
        "train/approx_kl",
        "train/clip_fraction",
        "train/learning_rate",
        "train/explained_variance",
        "train/episode_return",
        "eval/return_mean",
    } <= keys

    state, agent = _load_agent(run_dir, "CartPole-v1")
    assert state["algo"] == "ppo" and state["step"] == 600
    assert state["config"]["algo"]["hidden_sizes"] == [32, 32]  # configs/experiment_algo/smoke-ppo.yaml
    # 8 envs: 8 reset observations, then 8 per vector step for 75 steps.
    assert state["agent"]["obs_rms"]["count"].item() == pytest.approx(8 + 600 + 1e-4)
    assert 1e-4 < state["agent"]["return_rms"]["count"].item() <= 600 + 1e-4  # autoreset steps left out
    assert state["agent"]["obs_rms"]["var"].shape == (4,)
    np.testing.assert_array_equal(agent.obs_rms.mean, state["agent"]["obs_rms"]["mean"].numpy())
    torch.testing.assert_close(agent.model.state_dict(), state["agent"]["model"])


def test_smoke_run_on_pendulum(rlrun, tmp_path):
    run_dir = tmp_path / "run"
    result = rlrun("experiment=smoke", "algo=ppo", "env=Pendulum", "threads=1", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["total_steps"] == 600
    assert summary["eval_return_mean"] < 0
    state, agent = _load_agent(run_dir, "Pendulum-v1")
    assert {"model", "optimizer", "obs_rms", "return_rms"} <= set(state["agent"])
    assert "log_std" in state["agent"]["model"]  # the Gaussian policy's learnt log σ
    assert agent.act(np.zeros(3, dtype=np.float32)).shape == (1,)


FRAMES = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)


def test_image_observations_get_one_orthogonally_initialised_cnn_under_two_linear_heads():
    agent = PPO(PPOConfig(normalize_obs=False), FRAMES, gym.spaces.Discrete(6), torch.device("cpu"), 0)
    model = agent.model
    assert isinstance(model.torso, NatureCNN)
    assert [(head.in_features, head.out_features) for head in (*model.actor, *model.critic)] == [(512, 6), (512, 1)]

    def gram(layer: nn.Module) -> torch.Tensor:  # W·Wᵀ of the weight with its rows flattened
        weight = layer.weight.detach().flatten(1)
        return weight @ weight.T

    # Orthogonal rows scaled by the gain: √2 in the CNN, 0.01 for the policy, 1 for the value.
    for layer in (model.torso.conv[0], model.torso.conv[2], model.torso.fc[0]):
        torch.testing.assert_close(gram(layer), 2.0 * torch.eye(layer.weight.shape[0]), atol=1e-4, rtol=0)
        assert not layer.bias.any()
    torch.testing.assert_close(gram(model.actor[0]), 1e-4 * torch.eye(6), atol=1e-7, rtol=0)
    torch.testing.assert_close(gram(model.critic[0]), torch.eye(1))

    frames = torch.randint(0, 256, (5, *FRAMES.shape), dtype=torch.uint8)
    dist, value = model.distribution_and_value(frames)
    torch.testing.assert_close(dist.logits, model.distribution(frames).logits)
    torch.testing.assert_close(value, model.value(frames))
    # Both heads' losses reach the shared torso.
    for head in (dist.logits.sum(), value.sum()):
        model.zero_grad()
        head.backward(retain_graph=True)
        assert model.torso.fc[0].weight.grad.abs().sum() > 0


@pytest.mark.slow
def test_smoke_run_on_pong_with_the_shared_cnn(rlrun, tmp_path):
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    # The tuned CleanRL settings with the smoke sizes: 8 envs × 32 steps, one rollout trained
    # (2 epochs × 4 minibatches), 6 steps more to pass eval.every=300, one greedy game.
    run_dir = tmp_path / "run"
    result = rlrun("experiment=smoke", "algo=ppo", "env=Pong", "total_steps=304", "threads=1", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["total_steps"] == 304 and summary["env_id"] == "ALE/Pong-v5"
    assert -21 <= summary["eval_return_mean"] <= 21  # the game score, unclipped
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("losses/policy" in row for row in rows)

    state = checkpoint.load(run_dir / "checkpoints" / "step_000000304.pt")  # weights_only=True
    assert state["config"]["algo"]["num_envs"] == 8 and state["config"]["algo"]["clip_coef"] == 0.1  # tuned/ppo-Pong.yaml
    assert state["loop"]["rollout"]["obs"].dtype == torch.uint8  # frames stay uint8 in the rollout
    obs_space, action_space = env_spaces(EnvConfig("ALE/Pong-v5", 304))
    algo = {k: v for k, v in state["config"]["algo"].items() if k != "name"}
    agent = PPO(from_mapping(PPOConfig, algo), obs_space, action_space, torch.device("cpu"), 0)
    agent.load_state_dict(state["agent"])
    torch.testing.assert_close(agent.model.state_dict(), state["agent"]["model"])
    assert 0 <= agent.act(np.zeros(obs_space.shape, dtype=np.uint8)) < action_space.n


def test_image_observations_with_running_normalisation_fail_with_one_line(rlrun, tmp_path):
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    run_dir = tmp_path / "run"
    result = rlrun("algo=ppo", "env=Pong", "algo.normalize_obs=true", f"hydra.run.dir={run_dir}")
    assert result.returncode == 2
    # The last line: ale-py's C++ library prints its banner to stderr when it loads.
    assert result.stderr.strip().splitlines()[-1] == (
        "rlrun: error: algo.normalize_obs=true standardises vector observations; image observations are "
        "scaled by 1/255 in the CNN: set algo.normalize_obs=false (configs/tuned/ppo-Pong.yaml does)"
    )
    assert not run_dir.exists()


@pytest.mark.parametrize("env", ["CartPole", "HalfCheetah"])
def test_default_configs_compose_and_start(rlrun, tmp_path, env):
    # The full default (and tuned) settings, cut to one short run: 1,024 steps, one eval episode.
    run_dir = tmp_path / "run"
    result = rlrun(
        "algo=ppo",
        f"env={env}",
        "total_steps=1024",
        "eval.episodes=1",
        "threads=1",
        "progress=false",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"


def test_bad_ppo_config_fails_with_one_line(rlrun, tmp_path):
    result = rlrun("algo=ppo", "env=CartPole", "algo.num_minibatches=200", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert "algo.num_minibatches=200" in result.stderr and len(result.stderr.strip().splitlines()) == 1
