"""Decision Transformer (algo=dt): its context windows, the causal mask, acting on a context,
a smoke run with evaluate= and export=, and its bad inputs."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("minari", reason="needs the offline extra")

from conftest import OBS_SPACE, build_agent, episodes, pendulum_dataset, run_rlrun  # noqa: E402

from rlrun.algos.dt import ContextWindows, DecisionTransformer, DTConfig, returns_to_go  # noqa: E402
from rlrun.envs.datasets import write_dataset  # noqa: E402

SMALL = DTConfig(context_length=4, num_layers=2, embed_dim=16, num_heads=2, dropout=0.0)


@pytest.fixture(scope="module")
def pendulum(tmp_path_factory):
    return pendulum_dataset(tmp_path_factory.mktemp("datasets") / "pendulum-scripted-v0")


# ----- context windows ---------------------------------------------------------------------------
def hand_made_windows(context_length=4) -> ContextWindows:
    """Two episodes, of 3 and 5 steps: observation i is [i, i, i], action i is i / 10, reward i + 1."""
    n = 8
    obs = np.repeat(np.arange(n, dtype=np.float32)[:, None], 3, axis=1)
    actions = (np.arange(n, dtype=np.float32) / 10)[:, None]
    rewards = np.arange(1, n + 1, dtype=np.float32)
    first = np.array([1, 0, 0, 1, 0, 0, 0, 0], dtype=bool)
    return ContextWindows(obs, actions, rewards, first, context_length, torch.device("cpu"), seed=0)


def test_returns_to_go_restart_at_each_episode():
    rewards = np.arange(1, 9, dtype=np.float32)
    first = np.array([1, 0, 0, 1, 0, 0, 0, 0], dtype=bool)
    assert returns_to_go(rewards, first).tolist() == [6, 5, 3, 30, 26, 21, 15, 8]


def test_a_window_at_an_episode_start_is_left_padded_and_masked():
    windows = hand_made_windows()
    window = windows.window(torch.tensor([0, 1, 4, 7]))
    assert window["mask"].tolist() == [
        [False, False, False, True],  # the first step of episode 1
        [False, False, True, True],
        [False, False, True, True],  # episode 2's second step: episode 1 is not read
        [True, True, True, True],
    ]
    assert window["obs"][:, :, 0].tolist() == [[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 3, 4], [4, 5, 6, 7]]
    assert window["timesteps"].tolist() == [[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1], [1, 2, 3, 4]]
    assert window["returns_to_go"][..., 0].tolist() == [[0, 0, 0, 6], [0, 0, 6, 5], [0, 0, 30, 26], [26, 21, 15, 8]]
    assert torch.allclose(window["actions"][2, :, 0], torch.tensor([0.0, 0.0, 0.3, 0.4]))


def test_sampled_windows_end_anywhere_and_never_cross_an_episode_start():
    windows = hand_made_windows(context_length=3)
    window = windows.sample(256)
    assert window["mask"][:, -1].all()
    real_obs = window["obs"][..., 0]
    # Within a window, real steps are consecutive observations of one episode (2 never precedes 3).
    for row, mask in zip(real_obs, window["mask"]):
        values = row[mask].tolist()
        assert values == list(range(int(values[0]), int(values[0]) + len(values)))
        assert not (values[0] <= 2 < values[-1])


def test_the_sampler_rng_is_its_checkpoint_state():
    a, b = hand_made_windows(), hand_made_windows()
    a.sample(5)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.sample(7)["obs"], b.sample(7)["obs"])


# ----- the transformer --------------------------------------------------------------------------
def test_a_later_token_cannot_change_an_earlier_prediction():
    agent = build_agent(DecisionTransformer, SMALL, OBS_SPACE)
    agent.net.eval()
    window = hand_made_windows().window(torch.tensor([7]))
    inputs = [window[name] for name in ("returns_to_go", "obs", "actions", "timesteps", "mask")]
    before = agent.net(*inputs)
    changed = [x.clone() for x in inputs]
    changed[0][0, 2:] += 5.0  # returns-to-go of steps 3 and 4
    changed[1][0, 2] += 1.0  # observation of step 3
    changed[2][0, 1:] -= 0.5  # actions of steps 2 to 4: a_t is never an input to its own prediction
    after = agent.net(*changed)
    assert torch.equal(after[0, :2], before[0, :2])
    assert not torch.allclose(after[0, 2:], before[0, 2:])


def test_padded_steps_do_not_change_the_prediction():
    agent = build_agent(DecisionTransformer, SMALL, OBS_SPACE)
    agent.net.eval()
    window = hand_made_windows().window(torch.tensor([4]))  # two padded steps
    inputs = [window[name] for name in ("returns_to_go", "obs", "actions", "timesteps", "mask")]
    noisy = [x.clone() for x in inputs]
    noisy[1][0, :2] = torch.randn(2, 3)
    noisy[0][0, :2] = 9.0
    assert torch.equal(agent.net(*noisy)[0, 2:], agent.net(*inputs)[0, 2:])


def test_acting_rolls_the_context_and_decrements_the_return_to_go():
    agent = build_agent(DecisionTransformer, DTConfig(context_length=3, num_layers=1, embed_dim=16, target_return=10.0))
    agent.begin_episode()
    obs = np.array([0.1, 0.2, 0.3], dtype=np.float32)
    for reward in (1.0, 2.0, 3.0, 4.0):
        action = agent.act(obs)
        assert action.shape == (1,) and -2.0 <= action[0] <= 2.0
        agent.observe_reward(reward)
    assert agent.context["timesteps"].tolist() == [[1, 2, 3]]
    assert agent.context["returns_to_go"][0, :, 0].mul(1000).round().tolist() == [9.0, 7.0, 4.0]
    assert agent.context["mask"].all()
    agent.begin_episode()
    agent.act(obs)
    assert agent.context["mask"].tolist() == [[False, False, True]] and agent.return_to_go == 10.0


# ----- the command line ------------------------------------------------------------------------
@pytest.mark.slow
def test_a_smoke_run_evaluates_resumes_its_statistics_and_exports(pendulum, tmp_path):
    run_dir = tmp_path / "run"
    result = run_rlrun("algo=dt", f"dataset={pendulum}", "experiment=smoke", "threads=1", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["eval_normalized_score"] is not None
    checkpoint = torch.load(run_dir / "checkpoints" / "step_000000600.pt", weights_only=True)
    assert set(checkpoint["loop"]) == {"sampling"}
    # No target_return given: the dataset's best episode return.
    best = max(episode.rewards.sum() for episode in episodes())
    assert checkpoint["agent"]["target_return"].item() == pytest.approx(best, rel=1e-5)

    evaluated = run_rlrun(f"evaluate={run_dir}", "eval.episodes=1")
    assert evaluated.returncode == 0, evaluated.stderr
    written = json.loads(next((run_dir / "evaluations").glob("*.json")).read_text())
    assert written["return_mean"] == summary["eval_return_mean"]  # the same episode, the same context
    assert written["target_return"] == pytest.approx(best, rel=1e-5)

    # Asked for another return at evaluation; a target that is not a finite number is one line, nothing written.
    asked = run_rlrun(f"evaluate={run_dir}", "eval.episodes=1", "eval.target_return=-100")
    assert asked.returncode == 0, asked.stderr
    assert json.loads((run_dir / "evaluations" / "step_000000600-2.json").read_text())["target_return"] == -100.0
    for bad in ("nan", ".nan", "high"):
        refused = run_rlrun(f"evaluate={run_dir}", f"eval.target_return={bad}")
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert "must be a finite number: the return asked for" in refused.stderr
    assert len(list((run_dir / "evaluations").glob("*.json"))) == 2


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_the_exported_policy_takes_the_context_and_matches_acting(pendulum, tmp_path, fmt):
    from rlrun.commands.export import export_policy
    from rlrun.core.saved_run import load_agent

    if fmt == "onnx":
        onnxruntime = pytest.importorskip("onnxruntime", reason="needs the export extra")
        pytest.importorskip("onnxscript", reason="needs the export extra")
    run_dir = tmp_path / "run"
    args = ("algo=dt", f"dataset={pendulum}", "experiment=smoke", "total_steps=100", "threads=1")
    assert run_rlrun(*args, f"hydra.run.dir={run_dir}").returncode == 0
    saved = load_agent(run_dir / "checkpoints" / "step_000000100.pt", {}, "cpu")
    exported, description = export_policy(saved, tmp_path / "export", fmt)
    assert [i["name"] for i in json.loads(description.read_text())["inputs"]] == [
        "returns_to_go",
        "obs",
        "actions",
        "timesteps",
        "mask",
    ]
    agent = saved.agent
    agent.begin_episode()
    rng = np.random.default_rng(0)
    for _ in range(7):  # past the context length: a full, rolled context
        action = agent.act(rng.uniform(-1, 1, 3).astype(np.float32))
        agent.observe_reward(-1.5)
    context = {name: value.clone() for name, value in agent.context.items()}
    context["actions"][0, -1] = 0.0  # the newest action is what is asked for
    if fmt == "onnx":
        inputs = {name: value.numpy() for name, value in context.items()}
        exported_action = onnxruntime.InferenceSession(str(exported)).run(None, inputs)[0]
    else:
        exported_action = torch.jit.load(str(exported))(*context.values()).numpy()
    np.testing.assert_allclose(exported_action[0], action, rtol=1e-4, atol=1e-5)


def test_bad_inputs_get_one_line_before_anything_is_written(pendulum, tmp_path):
    run_dir = tmp_path / "run"
    cases = [
        (("algo=dt", f"dataset={pendulum}", "algo.target_return=nan"), "algo.target_return=nan must be a finite number"),
        (
            ("algo=dt", f"dataset={pendulum}", "algo.context_length=201"),
            f"algo.context_length=201 is longer than every episode of dataset={pendulum} (the longest has 200 steps)",
        ),
        (("algo=dt", "env=Pendulum"), "algo=dt learns offline from a dataset: give dataset=<Minari id or folder>"),
    ]
    for args, expected in cases:
        result = run_rlrun(*args, f"hydra.run.dir={run_dir}")
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and expected in result.stderr, result.stderr
        assert not run_dir.exists()


def test_a_dataset_longer_than_the_timestep_table_is_refused(pendulum, tmp_path):
    result = run_rlrun("algo=dt", f"dataset={pendulum}", "algo.max_timestep=100", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2 and "set algo.max_timestep=200 or more" in result.stderr


def test_a_discrete_action_dataset_is_refused(tmp_path):
    folder = tmp_path / "cartpole-random-v0"
    write_dataset(str(folder), episodes("CartPole-v1", count=2), "CartPole-v1")
    result = run_rlrun("algo=dt", f"dataset={folder}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2 and "algo=dt needs a Box action space" in result.stderr
