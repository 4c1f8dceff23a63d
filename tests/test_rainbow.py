"""Rainbow: the categorical projection, the prioritised sampler and its weights, noisy layers,
n-step returns across an episode's end, the CLI and its bad inputs."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlrun.algos.rainbow import DataEfficientCNN, NoisyLinear, Rainbow, RainbowConfig, categorical_projection
from rlrun.blocks.buffers import PrioritizedReplayBuffer
from rlrun.core import checkpoint

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here on one torch thread (conftest.one_torch_thread)."""


def test_categorical_projection_matches_a_hand_computation():
    support = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0])  # Δz = 1
    next_probs = torch.tensor([[0.1, 0.2, 0.4, 0.2, 0.1]] * 3)
    returns = torch.tensor([0.5, 0.3, -5.0])
    discounts = torch.tensor([0.5, 0.0, 0.9])  # non-terminal; terminal; non-terminal, clipped at v_min
    target = categorical_projection(support, next_probs, returns, discounts)
    # Row 1: T̂z = 0.5 + 0.5 z = [-0.5, 0, 0.5, 1, 1.5], b = T̂z + 2 = [1.5, 2, 2.5, 3, 3.5]:
    # 0.1 splits 0.05/0.05 onto atoms 1, 2; 0.2 onto atom 2; 0.4 splits 0.2/0.2 onto 2, 3;
    # 0.2 onto 3; 0.1 splits 0.05/0.05 onto 3, 4.
    expected_1 = [0.0, 0.05, 0.45, 0.45, 0.05]
    # Row 2, terminal: every atom moves to R = 0.3, b = 2.3: 0.7 to atom 2, 0.3 to atom 3.
    expected_2 = [0.0, 0.0, 0.7, 0.3, 0.0]
    # Row 3: T̂z = −5 + 0.9 z ≤ −3.2, all clipped to v_min = −2: everything on atom 0.
    expected_3 = [1.0, 0.0, 0.0, 0.0, 0.0]
    torch.testing.assert_close(target, torch.tensor([expected_1, expected_2, expected_3]))


def buffer_with(priorities: list[float], alpha: float) -> PrioritizedReplayBuffer:
    buffer = PrioritizedReplayBuffer(len(priorities), (1,), CPU, 0, num_envs=1, n_step=1, gamma=0.9, priority_exponent=alpha)
    for t in range(len(priorities)):
        obs = np.array([[t]], dtype=np.float32)
        buffer.add_batch(obs, np.array([0]), np.array([0.0]), obs, np.array([False]), np.array([False]))
    buffer.priorities.priority[:] = torch.tensor(priorities)
    return buffer


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_prioritised_sampling_is_proportional_to_priority_to_the_alpha(alpha):
    scipy_stats = pytest.importorskip("scipy.stats")
    priorities = np.array([1.0, 2.0, 3.0, 4.0])
    buffer = buffer_with(priorities.tolist(), alpha)
    draws = 40_000
    index = buffer.sample(draws, beta=0.4).index.numpy()
    counts = np.bincount(index, minlength=4)
    expected = priorities**alpha / (priorities**alpha).sum()
    assert scipy_stats.chisquare(counts, expected * draws).pvalue > 0.001
    np.testing.assert_allclose(buffer.probabilities().numpy(), expected, rtol=1e-6)


def test_importance_weights_are_n_p_to_the_minus_beta_over_their_max():
    priorities = [1.0, 2.0, 3.0, 4.0]
    buffer = buffer_with(priorities, 0.5)
    beta = 0.4
    batch = buffer.sample(64, beta=beta)
    probability = buffer.probabilities()[batch.index]
    w = (4 * probability) ** -beta
    torch.testing.assert_close(batch.weights, w / w.max())
    assert batch.weights.max() == 1.0


def test_new_transitions_get_the_largest_priority_seen_and_updates_keep_the_larger():
    buffer = buffer_with([1.0, 1.0, 1.0, 1.0], 0.5)
    buffer.update_priorities(torch.tensor([1, 1, 2]), torch.tensor([3.0, 5.0, 0.5]))
    assert buffer.priorities.priority.tolist() == [1.0, 5.0, 0.5, 1.0]
    obs = np.zeros((1, 1), dtype=np.float32)
    buffer.add_batch(obs, np.array([0]), np.array([0.0]), obs, np.array([False]), np.array([False]))
    assert buffer.priorities.priority[0] == 5.0  # slot 0 overwritten, at the max priority seen


def test_n_step_returns_stop_at_an_episode_end():
    # γ = 0.5, n = 3. Episode 1: rewards 1, 2, 4, 8, terminated after the 4th step; episode 2:
    # rewards 16, 32, truncated after the 2nd. obs_t = t, and each step's next observation 10 + t.
    buffer = PrioritizedReplayBuffer(8, (1,), CPU, 0, num_envs=1, n_step=3, gamma=0.5, priority_exponent=0.5)
    rewards = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    terminated = [False, False, False, True, False, False]
    truncated = [False, False, False, False, False, True]
    for t in range(6):
        buffer.add_batch(
            np.array([[t]], dtype=np.float32),
            np.array([t % 2]),
            np.array([rewards[t]]),
            np.array([[10 + t]], dtype=np.float32),
            np.array([terminated[t]]),
            np.array([truncated[t]]),
        )
    assert len(buffer) == 6
    n = len(buffer)
    stored = {
        int(buffer.obs[i, 0]): (float(buffer.rewards[i]), float(buffer.discounts[i]), int(buffer.next_obs[i, 0]))
        for i in range(n)
    }
    assert stored == {
        0: (1 + 0.5 * 2 + 0.25 * 4, 0.125, 12),  # a full 3-step return, bootstrapping from s_3
        1: (2 + 0.5 * 4 + 0.25 * 8, 0.0, 13),  # reaches the termination: no bootstrap
        2: (4 + 0.5 * 8, 0.0, 13),
        3: (8.0, 0.0, 13),
        4: (16 + 0.5 * 32, 0.25, 15),  # cut off by the time limit: bootstraps with γ^2
        5: (32.0, 0.5, 15),
    }
    assert buffer.actions[:n].tolist() == [t % 2 for t in range(6)]
    assert buffer.pending_count.tolist() == [0]


def test_n_step_buffer_keeps_each_sub_environment_apart():
    buffer = PrioritizedReplayBuffer(8, (1,), CPU, 0, num_envs=2, n_step=2, gamma=0.5, priority_exponent=0.5)
    for t in range(2):
        obs = np.array([[t], [100 + t]], dtype=np.float32)
        buffer.add_batch(obs, np.array([0, 1]), np.array([1.0, 10.0]), obs + 1, np.array([False, False]), np.array([False] * 2))
    assert len(buffer) == 2
    assert buffer.obs[:2, 0].tolist() == [0.0, 100.0]
    assert buffer.rewards[:2].tolist() == [1.5, 15.0] and buffer.next_obs[:2, 0].tolist() == [2.0, 102.0]


def test_noisy_layer_changes_with_its_noise_and_uses_its_mean_in_eval_mode():
    torch.manual_seed(0)
    layer = NoisyLinear(4, 3, 0.5)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4)
    layer.sample_noise(generator)
    first = layer(x)
    layer.sample_noise(generator)
    assert not torch.equal(first, layer(x))
    layer.eval()
    torch.testing.assert_close(layer(x), x @ layer.weight_mu.T + layer.bias_mu)
    assert layer.weight_sigma.mean().item() == pytest.approx(0.5 / 2)  # σ₀/√fan_in


def test_deterministic_acting_uses_the_mean_weights():
    env = gym.make("CartPole-v1")
    agent = Rainbow(RainbowConfig(hidden_sizes=(16,)), env.observation_space, env.action_space, CPU, 0)
    obs = np.array([0.1, -0.2, 0.05, 0.3], dtype=np.float32)
    generator_state = agent.noise.generator.get_state()
    actions = {agent.act(obs, deterministic=True) for _ in range(5)}
    assert len(actions) == 1 and torch.equal(agent.noise.generator.get_state(), generator_state)  # no noise drawn
    agent.network.eval()
    mean_q = agent.q(torch.as_tensor(obs).unsqueeze(0))
    agent.network.train()
    assert actions == {int(mean_q.argmax())}
    assert agent.network.training  # back to noisy acting for training


def test_update_lowers_the_loss_and_returns_priorities():
    obs_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    torch.manual_seed(0)
    config = RainbowConfig(lr=1e-2, hidden_sizes=(16,), v_min=-1.0, v_max=1.0, num_atoms=11)
    agent = Rainbow(config, obs_space, gym.spaces.Discrete(2), CPU, 0)
    buffer = PrioritizedReplayBuffer(16, (4,), CPU, 0, num_envs=1, n_step=1, gamma=0.9, priority_exponent=0.5)
    for _ in range(16):
        obs = np.random.default_rng(0).normal(size=(1, 4)).astype(np.float32)
        buffer.add_batch(obs, np.array([1]), np.array([0.5]), obs, np.array([True]), np.array([False]))
    batch = buffer.sample(8, beta=1.0)
    losses = [agent.update(batch)[0]["losses/td"] for _ in range(30)]
    _, priorities = agent.update(batch)
    assert priorities.shape == (8,) and not priorities.requires_grad
    assert losses[-1] < 0.5 * losses[0]


def test_smoke_run_on_cartpole(rlrun, tmp_path):
    run_dir = tmp_path / "run"
    result = rlrun("experiment=smoke", "algo=rainbow", "env=CartPole", "threads=1", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["algo"] == "rainbow" and summary["total_steps"] == 600
    tags = set(EventAccumulator(str(run_dir)).Reload().Tags()["scalars"])
    assert {"losses/td", "train/q_mean", "train/beta", "eval/return_mean"} <= tags
    state = checkpoint.load(run_dir / "checkpoints" / "step_000000600.pt")  # weights_only=True
    buffer = state["loop"]["buffer"]
    # Every step is stored or still pending in the n-step accumulator (at most n − 1 of them).
    assert state["algo"] == "rainbow" and buffer["size"] + int(buffer["pending_count"].sum()) == 600
    assert buffer["priority"].shape == (buffer["size"],) and int(buffer["pending_count"].sum()) < 3
    env = gym.make("CartPole-v1")
    config = RainbowConfig(hidden_sizes=tuple(state["config"]["algo"]["hidden_sizes"]))
    agent = Rainbow(config, env.observation_space, env.action_space, CPU, 0)
    agent.load_state_dict(state["agent"])
    assert agent.act(np.zeros(4, dtype=np.float32)) in (0, 1)


@pytest.mark.parametrize(
    "override,message",
    [
        # CartPole's tuned support is [0, 100].
        ("algo.v_min=200", "algo.v_min=200 must be below algo.v_max=100"),
        ("algo.n_step=64 algo.buffer_size=40 algo.batch_size=32", "algo.n_step=64 is larger than algo.buffer_size=40"),
        ("algo.end_epsilon=0.1", "algo.end_epsilon=0.1 with algo.noisy=true: noisy nets explore instead of ε-greedy"),
        ("algo.priority_exponent=1.5", "algo.priority_exponent=1.5 must lie in [0.0, 1.0]"),
        ("algo.priority_exponent=-0.5", "algo.priority_exponent=-0.5 must lie in [0.0, 1.0]"),
        # CartPole-v1's episodes end at 500 steps.
        ("algo.n_step=501", "algo.n_step=501 is longer than an episode of CartPole-v1 (at most 500 steps); choose at most 500"),
        (
            "+env.max_episode_steps=50 algo.n_step=64",
            "algo.n_step=64 is longer than an episode of CartPole-v1 (at most 50 steps)",
        ),
        ("algo.noisy=true algo.start_epsilon=1.0", "algo.start_epsilon=1 with algo.noisy=true: noisy nets explore instead"),
        ("algo.cnn=resnet", "algo.cnn='resnet' is not valid; choose one of: nature, data_efficient"),
        ("env=Pendulum", "algo=rainbow needs a Discrete action space, but Pendulum-v1 has a continuous"),
    ],
)
def test_bad_settings_get_one_line(rlrun, tmp_path, override, message):
    environment = [] if override.startswith("env=") else ["env=CartPole"]
    result = rlrun("algo=rainbow", *environment, *override.split(), f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"rlrun: error: {message}"), result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_support_that_cannot_hold_the_returns_stops_the_run_with_one_line(rlrun, tmp_path):
    # CartPole pays 1 a step: a 3-step return alone is 2.97, beyond a support ending at 1.
    run_dir = tmp_path / "run"
    result = rlrun(
        "experiment=smoke", "algo=rainbow", "env=CartPole", "algo.v_min=0", "algo.v_max=1", "threads=1",
        f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rlrun: error: the value support [algo.v_min, algo.v_max] = [0, 1] cannot hold the returns")
    assert lines[0].endswith("widen algo.v_min/algo.v_max")
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
    assert (run_dir / "checkpoints" / "step_000000300.pt").is_file()  # written before the failure, kept


@pytest.mark.slow
def test_the_support_check_can_be_switched_off_and_stays_quiet_on_a_support_that_holds(rlrun, tmp_path):
    for name, overrides in (("off", ("algo.v_max=1", "algo.support_check=false")), ("holds", ())):
        run_dir = tmp_path / name
        result = rlrun("experiment=smoke", "algo=rainbow", "env=CartPole", *overrides, f"hydra.run.dir={run_dir}")
        assert result.returncode == 0, result.stderr
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        fractions = [row["train/target_outside_support"] for row in rows if "train/target_outside_support" in row]
        assert (not fractions) if name == "off" else (fractions and max(fractions) == 0.0)


def test_data_efficient_cnn_has_the_papers_shapes():
    cnn = DataEfficientCNN(4, 84, 84)
    convolutions = [m for m in cnn.conv if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convolutions] == [(32, (5, 5), (5, 5)), (64, (5, 5), (5, 5))]
    assert cnn.conv(torch.zeros(2, 4, 84, 84)).shape == (2, 64 * 3 * 3)  # 84 → 16 → 3
    assert cnn(torch.zeros(2, 4, 84, 84, dtype=torch.uint8)).shape == (2, 256)
    space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    agent = Rainbow(RainbowConfig(cnn="data_efficient", buffer_size=100), space, gym.spaces.Discrete(6), CPU, 0)
    assert isinstance(agent.network.torso, DataEfficientCNN)
    assert agent.q(torch.zeros(3, 4, 84, 84, dtype=torch.uint8)).shape == (3, 6)


def test_atari100k_composes_der_settings_for_rainbow():
    pytest.importorskip("ale_py")
    from hydra import compose, initialize_config_module

    from rlrun.commands.train import CONFIG_MODULE
    from rlrun.core.plan import validate

    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        plan = validate(compose("config", overrides=["experiment=atari100k", "algo=rainbow", "env=Pong"]))
        dqn = validate(compose("config", overrides=["experiment=atari100k", "algo=dqn", "env=Pong"]))
    algo = plan.algo_config
    assert (algo.train_every, algo.n_step, algo.target_update_every, algo.learning_starts) == (1, 20, 2000, 1600)
    assert (algo.lr, algo.adam_eps, algo.noisy_std, algo.max_grad_norm) == (1e-4, 1.5e-4, 0.1, 10.0)
    assert (algo.cnn, algo.buffer_size, algo.batch_size, algo.num_atoms) == ("data_efficient", 100_000, 32, 51)
    assert plan.run_config.total_steps == 100_000 and plan.run_config.env.atari.repeat_action_probability == 0.0
    assert plan.run_config.eval.every == 100_000 and plan.run_config.eval.episodes == 100  # one final evaluation
    # The run settings apply to every algorithm; DER's settings only to Rainbow.
    assert dqn.run_config.total_steps == 100_000 and dqn.algo_config.train_every != 1  # tuned/dqn-Pong.yaml's


@pytest.mark.slow
def test_atari100k_runs_a_few_hundred_steps_on_boxing(rlrun, tmp_path):
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    # DER's settings on a short budget: 400 steps, updates from step 100 (300 of them, each of
    # 20-step returns), one greedy evaluation game at the end.
    run_dir = tmp_path / "run"
    result = rlrun(
        "experiment=atari100k", "algo=rainbow", "env=Boxing", "total_steps=400", "algo.learning_starts=100",
        "eval.every=400", "eval.episodes=1", "checkpoint.every=400", "threads=1", "progress=false",
        f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["total_steps"] == 400 and -100 <= summary["eval_return_mean"] <= 100
    state = checkpoint.load(run_dir / "checkpoints" / "step_000000400.pt")
    assert state["config"]["env"]["id"] == "ALE/Boxing-v5" and state["config"]["algo"]["n_step"] == 20
    assert state["config"]["env"]["atari"]["repeat_action_probability"] == 0.0
    assert "torso.conv.2.weight" in state["agent"]["network"]  # the data-efficient CNN's second convolution
    assert state["agent"]["network"]["torso.fc.0.weight"].shape == (256, 576)


@pytest.mark.slow
def test_smoke_run_on_pong_with_the_cnn(rlrun, tmp_path):
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    # 300 steps: 100 of them learning (25 updates of the CNN), one greedy evaluation game.
    run_dir = tmp_path / "run"
    result = rlrun("experiment=smoke", "algo=rainbow", "env=Pong", "total_steps=300", "threads=1", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and -21 <= summary["eval_return_mean"] <= 21
    # The frame-once buffer: 300 steps of one episode are the first stack's 4 frames and 300 more.
    buffer = checkpoint.load(run_dir / "checkpoints" / "step_000000300.pt")["loop"]["buffer"]
    assert buffer["frames"].shape == (1, 304, 84, 84) and buffer["written"].tolist() == [304]
