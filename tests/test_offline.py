"""Offline RL on Minari datasets (dataset=): reading a dataset, the bad inputs, each offline
algorithm's smoke run and one hand-checked loss each."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

pytest.importorskip("minari", reason="the offline extra: python -m pip install -c constraints.txt -e '.[offline]'")

from conftest import build_agent, checkpoint_file, episodes, pendulum_dataset, random_batch, run_rlrun  # noqa: E402

from rlrun.blocks.spaces import BoxActions  # noqa: E402
from rlrun.config import ConfigError  # noqa: E402
from rlrun.envs.datasets import load_transitions, open_dataset, write_dataset  # noqa: E402

OFFLINE = ["td3_bc", "iql", "cql"]


@pytest.fixture(scope="module")
def pendulum(tmp_path_factory):
    """A small Pendulum dataset on disk, with reference scores."""
    return pendulum_dataset(tmp_path_factory.mktemp("datasets") / "pendulum-scripted-v0")


# ----- reading datasets ---------------------------------------------------------------------
def test_a_dataset_is_read_by_path_with_its_environment_and_references(pendulum):
    info = open_dataset(str(pendulum))
    assert info.env["id"] == "Pendulum-v1" and info.episodes == 4 and info.steps == 800
    assert (info.ref_min_score, info.ref_max_score) == (-1200.0, -150.0)
    assert info.normalized_score(-675.0) == pytest.approx(50.0)
    data = load_transitions(info)
    assert data.obs.shape == (800, 3) and data.actions.shape == (800, 1) and data.next_obs.shape == (800, 3)
    # transition t is (o_t, a_t, r_t, o_{t+1}): within an episode next_obs is the following obs
    assert np.array_equal(data.next_obs[:199], data.obs[1:200])
    assert data.terminated.sum() == 0  # Pendulum's episodes are truncated, never terminated


def test_a_dataset_is_read_by_id_under_the_minari_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    write_dataset("rlrun-test/pendulum-v1", episodes(count=2), "Pendulum-v1")
    info = open_dataset("rlrun-test/pendulum-v1")
    assert info.data_path == tmp_path / "rlrun-test" / "pendulum-v1" / "data"
    assert info.steps == 400 and info.ref_min_score is None and info.normalized_score(0.0) is None


def test_a_missing_dataset_says_where_it_looked_and_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="minari download mujoco/hopper/medium-v0") as error:
        open_dataset("mujoco/hopper/medium-v0")
    assert str(tmp_path / "mujoco/hopper/medium-v0") in str(error.value) and "rlrun collect=" in str(error.value)


def test_a_nan_in_a_dataset_names_the_episode(tmp_path):
    found = episodes(count=3)
    found[1].rewards[17] = np.nan
    folder = tmp_path / "broken-v0"
    write_dataset(str(folder), found, "Pendulum-v1")
    with pytest.raises(ConfigError, match="episode 1 has a NaN or infinite value in its rewards"):
        load_transitions(open_dataset(str(folder)))


def test_an_empty_dataset_is_one_line(tmp_path):
    folder = tmp_path / "empty-v0"
    write_dataset(str(folder), [], "Pendulum-v1")
    with pytest.raises(ConfigError, match="is empty"):
        open_dataset(str(folder))


# ----- the command line ---------------------------------------------------------------------
def test_an_online_algorithm_with_a_dataset_is_refused_before_anything_is_written(pendulum, tmp_path):
    result = run_rlrun("algo=sac", f"dataset={pendulum}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert "algo=sac learns online" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("algo", OFFLINE)
def test_an_offline_algorithm_without_a_dataset_is_refused(algo, tmp_path):
    result = run_rlrun(f"algo={algo}", "env=Pendulum", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2 and f"algo={algo} learns offline from a dataset: give dataset=" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_discrete_action_dataset_is_refused_for_td3_bc(tmp_path):
    folder = tmp_path / "cartpole-random-v0"
    write_dataset(str(folder), episodes("CartPole-v1", count=2), "CartPole-v1")
    result = run_rlrun("algo=td3_bc", f"dataset={folder}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2, result.stderr
    assert "algo=td3_bc needs a Box action space" in result.stderr and "Discrete" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_missing_dataset_on_the_command_line(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "root"))
    result = run_rlrun("algo=td3_bc", "dataset=nowhere/pendulum-v0", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2 and "minari download nowhere/pendulum-v0" in result.stderr
    assert not (tmp_path / "run").exists()


def test_without_the_offline_extra_dataset_names_the_install(pendulum, tmp_path):
    hidden = "import sys\nsys.modules['minari'] = None  # as if Minari were not installed"
    result = run_rlrun("algo=td3_bc", f"dataset={pendulum}", f"hydra.run.dir={tmp_path / 'run'}", patch=hidden)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "rlrun: error: dataset= needs Minari, the offline extra: python -m pip install -c constraints.txt -e '.[offline]'"
    )


@pytest.mark.slow
@pytest.mark.parametrize("algo", OFFLINE)
def test_an_offline_smoke_run_logs_the_normalized_score(algo, pendulum, tmp_path):
    run_dir = tmp_path / "run"
    result = run_rlrun(f"algo={algo}", f"dataset={pendulum}", "experiment=smoke", "threads=1", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [row for row in rows if "eval/normalized_score" in row]
    assert [row["step"] for row in evals] == [300, 600]
    for row in evals:
        assert row["eval/normalized_score"] == pytest.approx(100 * (row["eval/return_mean"] + 1200) / 1050)
    assert any("losses/critic" in row for row in rows)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["env_id"] == "Pendulum-v1" and summary["total_steps"] == 600
    assert summary["dataset"] == str(pendulum) and summary["eval_normalized_score"] == evals[-1]["eval/normalized_score"]
    checkpoint = torch.load(run_dir / "checkpoints" / "step_000000600.pt", weights_only=True)
    assert checkpoint["config"]["env"]["id"] == "Pendulum-v1"
    assert set(checkpoint["loop"]) == {"sampling"}  # the sampling RNG only: the dataset is read again on resume


@pytest.mark.slow
@pytest.mark.parametrize("algo", OFFLINE)
def test_the_exported_policy_normalises_and_acts_as_the_agent(algo, pendulum, tmp_path):
    from rlrun.core.saved_run import load_agent

    run_dir = tmp_path / "run"
    trained = run_rlrun(
        f"algo={algo}", f"dataset={pendulum}", "experiment=smoke", "total_steps=300", "threads=1", f"hydra.run.dir={run_dir}"
    )
    assert trained.returncode == 0, trained.stderr
    exported = run_rlrun(f"export={run_dir}", "format=torchscript")
    assert exported.returncode == 0, exported.stderr
    policy = torch.jit.load(next((run_dir / "export").glob("policy-*.ts.pt")))
    saved = load_agent(run_dir / "checkpoints" / "step_000000300.pt", {}, "cpu")
    assert saved.agent.normalizer.std.ne(1.0).all()  # the dataset's statistics, restored from the checkpoint
    obs = np.random.default_rng(0).uniform([-1, -1, -8], [1, 1, 8], (5, 3)).astype(np.float32)
    expected = np.stack([saved.agent.act(o) for o in obs])
    assert np.allclose(policy(torch.from_numpy(obs)).detach().numpy(), expected, atol=1e-5)

    evaluated = run_rlrun(f"evaluate={run_dir}", "eval.episodes=2")
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(next((run_dir / "evaluations").glob("*.json")).read_text())
    assert result["env_id"] == "Pendulum-v1" and result["normalized_score"] == pytest.approx(
        100 * (result["return_mean"] + 1200) / 1050
    )


# ----- the losses, by hand ------------------------------------------------------------------
def test_td3_bc_lambda_is_alpha_over_the_mean_absolute_q():
    from rlrun.algos.td3_bc import bc_weight

    q = torch.tensor([-2.0, 4.0, 1.0, -1.0], requires_grad=True)
    lmbda = bc_weight(2.5, q)
    assert lmbda.item() == pytest.approx(2.5 / 2.0)  # mean |Q| = (2 + 4 + 1 + 1) / 4 = 2
    assert not lmbda.requires_grad  # λ is a constant in the actor's gradient


def test_iql_expectile_loss_by_hand():
    from rlrun.algos.iql import awr_weights, expectile_loss

    # u = Q − V = [2, −1], τ = 0.7: weights [0.7, 0.3], so ½ (0.7·4 + 0.3·1) = 1.55
    assert expectile_loss(torch.tensor([2.0, -1.0]), 0.7).item() == pytest.approx(1.55)
    # τ = 0.5 is half the mean squared error
    u = torch.tensor([1.0, -3.0, 0.5])
    assert expectile_loss(u, 0.5).item() == pytest.approx(0.5 * (u**2).mean().item())
    # exp(β A), clipped at max_weight: exp(3·0) = 1, exp(3·1) ≈ 20.09, exp(3·2) ≈ 403 → 100
    weights = awr_weights(torch.tensor([0.0, 1.0, 2.0]), 3.0, 100.0)
    assert weights.tolist() == pytest.approx([1.0, np.exp(3.0), 100.0])


def test_iql_scales_rewards_to_a_return_range_of_1000():
    from rlrun.algos.iql import IQL, IQLConfig, return_range_scale
    from rlrun.envs.datasets import Transitions

    # Three episodes (first transitions at 0, 2 and 5) with returns 3, −6 and 0: range 9.
    rewards = np.array([1.0, 2.0, -1.0, -2.0, -3.0, 0.0], dtype=np.float32)
    first = np.array([True, False, True, False, False, True])
    zeros = np.zeros((6, 3), dtype=np.float32)
    data = Transitions(zeros, zeros[:, :1], rewards, zeros, np.zeros(6, np.float32), first)
    assert return_range_scale(data) == pytest.approx(1000.0 / 9.0)
    assert return_range_scale(data._replace(rewards=np.zeros(6, np.float32))) == 1.0  # all alike: unscaled

    # The scale multiplies the reward in the critics' target: scale 2 on r trains as 2r does.
    scaled, doubled = (build_agent(IQL, IQLConfig(hidden_sizes=(16,))) for _ in range(2))
    scaled.reward_scale = 2.0
    batch = random_batch([0.0, 1.0, 0.0, 0.0])
    scaled.update(batch)
    doubled.update(batch._replace(rewards=2.0 * batch.rewards))
    for a, b in zip(scaled.critic.parameters(), doubled.critic.parameters()):
        assert torch.equal(a, b)


def test_cql_penalty_is_a_log_sum_exp_minus_the_data_q_by_hand():
    from rlrun.algos.cql import cql_penalty

    # One critic, two states. State 0: sampled Q = [0, ln 3], so log(e⁰ + 3) = ln 4, data Q = 0.
    # State 1: sampled Q = [1, 1], log(2e) = 1 + ln 2, data Q = 2. Mean: (ln 4 + ln 2 − 1) / 2.
    q_sampled = torch.tensor([[[0.0, np.log(3.0)], [1.0, 1.0]]])
    q_data = torch.tensor([[0.0, 2.0]])
    expected = (np.log(4.0) + np.log(2.0) - 1.0) / 2
    assert cql_penalty(q_sampled, q_data, 1.0).tolist() == pytest.approx([expected])
    # T = 2: 2 log Σ exp(Q / 2); state 0: 2 log(1 + √3)
    at_two = (2 * np.log(1 + np.sqrt(3.0)) + 2 * np.log(2 * np.exp(0.5)) - 2.0) / 2
    assert cql_penalty(q_sampled, q_data, 2.0).tolist() == pytest.approx([at_two])


def test_cql_samples_line_up_with_their_states_and_densities():
    """sampled_q's (n, B, 3M) layout: every action of row b was drawn for state b, and the
    uniform proposal's log-density is −|A| log 2."""
    from rlrun.algos.cql import CQL, CQLConfig

    obs_space = gym.spaces.Box(-1.0, 1.0, (3,))
    agent = CQL(CQLConfig(n_actions=4, hidden_sizes=(8,)), obs_space, gym.spaces.Box(-2.0, 2.0, (2,)), torch.device("cpu"), 0)
    obs = torch.randn(5, 3)
    q, log_density = agent.sampled_q(obs, obs)
    assert q.shape == (2, 5, 12) and log_density.shape == (5, 12)
    assert torch.allclose(log_density[:, :4], torch.full((5, 4), -2 * np.log(2.0)))
    # Row b's Q values depend on state b only: changing state 4 leaves rows 0–3 alone.
    torch.manual_seed(1)
    q1, _ = agent.sampled_q(obs, obs)
    changed = obs.clone()
    changed[4] += 1.0
    torch.manual_seed(1)
    q2, _ = agent.sampled_q(changed, changed)
    assert torch.equal(q1[:, :4], q2[:, :4]) and not torch.equal(q1[:, 4], q2[:, 4])


# ----- collect= -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def td3_run(tmp_path_factory):
    """A smoke-sized TD3 run on Pendulum, to collect from."""
    folder = tmp_path_factory.mktemp("runs") / "td3"
    trained = run_rlrun("algo=td3", "env=Pendulum", "experiment=smoke", "threads=1", f"hydra.run.dir={folder}")
    assert trained.returncode == 0, trained.stderr
    return folder


@pytest.mark.slow
def test_collect_writes_a_dataset_of_a_saved_run_that_an_offline_run_learns_from(td3_run, tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    collected = run_rlrun(
        f"collect={td3_run}", "episodes=3", "noise=0.2", "reference_episodes=2", "out=rlrun-test/pendulum-td3-v0"
    )
    assert collected.returncode == 0, collected.stderr
    info = open_dataset("rlrun-test/pendulum-td3-v0")
    assert info.episodes == 3 and info.steps == 600 and info.env["id"] == "Pendulum-v1"
    data = load_transitions(info)
    returns = data.rewards.reshape(3, 200).sum(axis=1)
    assert info.ref_max_score == pytest.approx(returns.mean(), rel=1e-5)  # the collecting policy's mean return
    assert info.ref_min_score < 0  # a random policy's mean return on Pendulum
    assert "ref_max_score" in collected.stdout and "dataset=rlrun-test/pendulum-td3-v0" in collected.stdout

    run_dir = tmp_path / "offline"
    offline = run_rlrun(
        "algo=td3_bc", "dataset=rlrun-test/pendulum-td3-v0", "experiment=smoke", "threads=1", f"hydra.run.dir={run_dir}"
    )
    assert offline.returncode == 0, offline.stderr
    assert "eval/normalized_score" in (run_dir / "metrics.jsonl").read_text()


def test_collect_names_its_dataset_after_the_run_by_default(td3_run):
    for version in (0, 1):
        result = run_rlrun(f"collect={td3_run}", "episodes=1", "reference_episodes=1")
        assert result.returncode == 0, result.stderr
        assert (td3_run / "datasets" / f"pendulum-v1-td3-v{version}" / "data" / "metadata.json").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "collect= needs episodes=<how many>"),
        (["episodes=0"], "episodes=0 must be a whole number, at least 1"),
        (["episodes=2", "noise=-1"], "noise=-1 must be a number, zero or positive"),
        (["episodes=1", "reference_episodes=1", "out=./no-version"], "ending in -v<version>"),
        (["episodes=2", "colour=red"], "collect= does not take 'colour=red'"),
        (["episodes=2", "which=best7"], "which='best7' is not valid"),
    ],
)
def test_collect_bad_options_are_one_line(td3_run, args, message):
    result = run_rlrun(f"collect={td3_run}", *args)
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_collect_from_a_folder_that_is_no_run(tmp_path):
    result = run_rlrun(f"collect={tmp_path}", "episodes=1")
    assert result.returncode == 2 and "not a run folder" in result.stderr


@pytest.fixture(scope="module")
def sac_run_with_a_wrapped_buffer(tmp_path_factory):
    """SAC on Pendulum with two sub-environments and a 500-transition buffer that 600 steps
    overflow: the ring's oldest row is mid-buffer and each sub-environment's oldest episode
    starts mid-way."""
    folder = tmp_path_factory.mktemp("runs") / "sac"
    args = ("algo=sac", "env=Pendulum", "experiment=smoke", "algo.num_envs=2", "algo.buffer_size=500", "threads=1")
    trained = run_rlrun(*args, f"hydra.run.dir={folder}")
    assert trained.returncode == 0, trained.stderr
    return folder


@pytest.mark.slow
def test_collect_from_replay_writes_the_buffers_transitions_as_episodes(sac_run_with_a_wrapped_buffer, tmp_path):
    out = tmp_path / "pendulum-sac-replay-v0"
    collected = run_rlrun(f"collect={sac_run_with_a_wrapped_buffer}", "from=replay", "reference_episodes=2", f"out={out}")
    assert collected.returncode == 0, collected.stderr
    info = open_dataset(str(out))
    # Each sub-environment holds steps 50..299 of its stream: an episode cut at its start that
    # Pendulum truncates at step 200, then one the run's end cut (both written as truncated).
    assert info.episodes == 4 and info.steps == 500 and info.longest_episode == 150

    buffer = torch.load(checkpoint_file(sac_run_with_a_wrapped_buffer, 600), weights_only=True)["loop"]["buffer"]
    action_space = gym.make("Pendulum-v1").action_space
    stored = {
        (o.tobytes(), a.tobytes(), float(r), n.tobytes())
        for o, a, r, n in zip(
            buffer["obs"].numpy(),
            BoxActions(action_space).to_env(buffer["actions"].numpy()).astype(np.float32),
            buffer["rewards"].numpy(),
            buffer["next_obs"].numpy(),
        )
    }
    data = load_transitions(info)
    written = {
        (o.tobytes(), a.tobytes(), float(r), n.tobytes())
        for o, a, r, n in zip(data.obs, data.actions, data.rewards, data.next_obs)
    }
    assert written == stored and len(stored) == 500
    assert not data.terminated.any() and data.first.sum() == 4
    assert info.ref_min_score is not None and info.ref_max_score is not None


@pytest.mark.slow
def test_collect_from_replay_needs_a_replay_buffer_of_transitions(sac_run_with_a_wrapped_buffer, tmp_path):
    for args, message in (
        (["from=replay", "episodes=3"], "episodes= choose episodes of the policy; from=replay writes the replay buffer"),
        (["from=buffer"], "from='buffer' is not valid; choose policy"),
    ):
        result = run_rlrun(f"collect={sac_run_with_a_wrapped_buffer}", *args)
        assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    lean = tmp_path / "lean"
    trained = run_rlrun(
        "algo=sac", "env=Pendulum", "experiment=smoke", "checkpoint.replay_buffer=false", "threads=1", f"hydra.run.dir={lean}"
    )
    assert trained.returncode == 0, trained.stderr
    result = run_rlrun(f"collect={lean}", "from=replay")
    assert result.returncode == 2 and "holds no replay buffer" in result.stderr, result.stderr
    assert not (lean / "datasets").exists()
    rainbow = tmp_path / "rainbow"
    trained = run_rlrun("algo=rainbow", "env=CartPole", "experiment=smoke", "threads=1", f"hydra.run.dir={rainbow}")
    assert trained.returncode == 0, trained.stderr
    result = run_rlrun(f"collect={rainbow}", "from=replay")
    assert result.returncode == 2 and "buffer stores n-step returns: use from=policy" in result.stderr, result.stderr


# ----- combine= -----------------------------------------------------------------------------
def test_combine_mixes_datasets_of_one_environment_with_the_widest_reference_scores(tmp_path):
    medium, expert = tmp_path / "pendulum-medium-v0", tmp_path / "pendulum-expert-v0"
    write_dataset(str(medium), episodes(count=3, seed=0), "Pendulum-v1", ref_min_score=-1200.0, ref_max_score=-700.0)
    write_dataset(
        str(expert), episodes(count=2, seed=50, expert=True), "Pendulum-v1", ref_min_score=-1180.0, ref_max_score=-150.0
    )
    out = tmp_path / "pendulum-medium-expert-v0"
    result = run_rlrun(f"combine={medium},{expert}", f"out={out}")
    assert result.returncode == 0, result.stderr
    assert f"dataset={out}" in result.stdout

    mixed = open_dataset(str(out))
    assert mixed.episodes == 5 and mixed.steps == 1000 and mixed.env["id"] == "Pendulum-v1"
    assert (mixed.ref_min_score, mixed.ref_max_score) == (-1190.0, -150.0)
    parts = [load_transitions(open_dataset(str(path))) for path in (medium, expert)]
    combined = load_transitions(mixed)
    for field in ("obs", "actions", "rewards", "next_obs", "terminated", "first"):
        assert np.array_equal(getattr(combined, field), np.concatenate([getattr(part, field) for part in parts])), field


@pytest.mark.slow
def test_combine_refuses_in_one_line_and_writes_nothing(tmp_path):
    pendulum = pendulum_dataset(tmp_path / "pendulum-scripted-v0")
    heavier = tmp_path / "pendulum-heavy-v0"
    write_dataset(str(heavier), episodes(count=1), gym.make("Pendulum-v1", g=20.0).spec)
    cartpole = tmp_path / "cartpole-random-v0"
    write_dataset(str(cartpole), episodes("CartPole-v1", count=2), "CartPole-v1")
    out = tmp_path / "mixed-v0"
    for args, message in (
        ([f"combine={pendulum},{cartpole}", f"out={out}"], "combine= needs datasets of one environment; these differ"),
        ([f"combine={pendulum},{heavier}", f"out={out}"], "combine= needs datasets of one environment; these differ"),
        ([f"combine={pendulum}", f"out={out}"], "combine= needs two or more datasets"),
        ([f"combine={pendulum},{pendulum}"], "combine= needs out=<folder or Minari id>"),
        ([f"combine={pendulum},{tmp_path / 'nowhere-v0'}", f"out={out}"], "no Minari dataset there"),
        ([f"combine={pendulum},{pendulum}", f"out={pendulum}"], "already exists"),
        (["-m", f"combine={pendulum},{pendulum}", f"out={out}"], "combine= reads datasets and takes no -m"),
    ):
        result = run_rlrun(*args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not out.exists()
