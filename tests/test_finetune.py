"""Online runs started from an offline run (init=): the policy carried over exactly, the
offline run's frozen input normalisation kept through evaluate= and export=, WSRL's fresh
buffer or the offline data mixed in, and the bad inputs, each one line before anything is
written."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("minari", reason="the offline extra: python -m pip install -c constraints.txt -e '.[offline]'")

from conftest import checkpoint_file, episodes, pendulum_dataset, run_rlrun  # noqa: E402

# Offline and online runs share the smoke sizes and these evaluation settings, so that the
# pre-trained policy meets the same evaluation episodes in both.
SMALL = ["experiment=smoke", "threads=1", "algo.hidden_sizes=[32,32]", "eval.episodes=2"]
ONLINE = {"td3_bc": "td3", "cql": "sac", "iql": "sac"}


@pytest.fixture(scope="module")
def pendulum(tmp_path_factory):
    return pendulum_dataset(tmp_path_factory.mktemp("datasets") / "pendulum-scripted-v0")


@pytest.fixture(scope="module")
def offline_runs(pendulum, tmp_path_factory):
    """A 300-step offline run of each algorithm on the Pendulum dataset, by name."""
    root = tmp_path_factory.mktemp("offline")
    runs = {}
    for algo in ONLINE:
        folder = root / algo
        trained = run_rlrun(f"algo={algo}", f"dataset={pendulum}", *SMALL, "total_steps=300", f"hydra.run.dir={folder}")
        assert trained.returncode == 0, trained.stderr
        runs[algo] = folder
    return runs


def eval_rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if "eval/return_mean" in row]


def fine_tune(init, run_dir, *args):
    return run_rlrun(
        f"algo={ONLINE[init.name]}", "env=Pendulum", f"init={init}", *SMALL, "total_steps=300",
        "finetune.warmup_steps=100", f"hydra.run.dir={run_dir}", *args,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("offline", list(ONLINE))
def test_the_first_evaluation_is_the_offline_runs_last(offline, offline_runs, tmp_path):
    run_dir = tmp_path / "online"
    result = fine_tune(offline_runs[offline], run_dir)
    assert result.returncode == 0, result.stderr
    last_offline = eval_rows(offline_runs[offline])[-1]
    first, *later = eval_rows(run_dir)
    assert first["step"] == 0 and [row["step"] for row in later] == [300]
    # The same policy on the same evaluation episodes: the same returns.
    assert first["eval/return_mean"] == last_offline["eval/return_mean"]
    assert first["eval/return_std"] == last_offline["eval/return_std"]
    offline_state = torch.load(checkpoint_file(offline_runs[offline], 300), weights_only=True)["agent"]
    online_state = torch.load(checkpoint_file(run_dir, 300), weights_only=True)["agent"]
    for name in ("mean", "std"):  # the dataset's statistics, kept frozen
        assert torch.equal(online_state["input_normalizer"][name], offline_state["normalizer"][name])


@pytest.mark.slow
def test_the_buffer_is_fresh_by_default_and_holds_the_dataset_with_offline_data(offline_runs, tmp_path):
    fresh, mixed = tmp_path / "fresh", tmp_path / "mixed"
    assert fine_tune(offline_runs["td3_bc"], fresh).returncode == 0
    result = fine_tune(offline_runs["td3_bc"], mixed, "finetune.offline_data=true", "algo.buffer_size=2000")
    assert result.returncode == 0, result.stderr
    fresh_buffer = torch.load(checkpoint_file(fresh, 300), weights_only=True)["loop"]["buffer"]
    mixed_buffer = torch.load(checkpoint_file(mixed, 300), weights_only=True)["loop"]["buffer"]
    assert fresh_buffer["size"] == 300  # the online steps only (WSRL)
    assert mixed_buffer["size"] == 800 + 300  # the dataset's 800 transitions, then the online ones
    offline_obs = np.concatenate([episode.observations[:-1] for episode in episodes()])  # what pendulum_dataset wrote
    assert np.array_equal(mixed_buffer["obs"][:800].numpy(), offline_obs)


@pytest.mark.slow
def test_a_fine_tuned_run_evaluates_and_exports_with_the_offline_normalisation(offline_runs, tmp_path):
    from rlrun.core.saved_run import load_agent

    run_dir = tmp_path / "online"
    assert fine_tune(offline_runs["cql"], run_dir).returncode == 0
    evaluated = run_rlrun(f"evaluate={run_dir}")
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(next((run_dir / "evaluations").glob("*.json")).read_text())
    assert result["return_mean"] == eval_rows(run_dir)[-1]["eval/return_mean"]  # as the run evaluated it

    exported = run_rlrun(f"export={run_dir}", "format=torchscript")
    assert exported.returncode == 0, exported.stderr
    policy = torch.jit.load(next((run_dir / "export").glob("policy-*.ts.pt")))
    saved = load_agent(checkpoint_file(run_dir, 300), {}, "cpu")
    assert saved.agent.normalizer.std.ne(1.0).all()  # restored from the fine-tuned run's own checkpoint
    obs = np.random.default_rng(0).uniform([-1, -1, -8], [1, 1, 8], (5, 3)).astype(np.float32)
    expected = np.stack([saved.agent.act(o) for o in obs])
    assert np.allclose(policy(torch.from_numpy(obs)).detach().numpy(), expected, atol=1e-5)


# ----- bad inputs ---------------------------------------------------------------------------
@pytest.mark.slow
def test_bad_inputs_get_one_line_before_anything_is_written(offline_runs, pendulum, tmp_path):
    run_dir = tmp_path / "run"
    no_run = tmp_path / "no-run"
    no_run.mkdir()
    td3_bc = offline_runs["td3_bc"]
    cases = [
        (["algo=td3", f"init={tmp_path / 'nowhere'}"], f"init={tmp_path / 'nowhere'}: no such folder"),
        (["algo=td3", f"init={no_run}"], f"init={no_run} is not an rlrun run folder"),
        (
            ["algo=sac", f"init={td3_bc}"],
            f"init={td3_bc} is an algo=td3_bc run, which algo=sac cannot start from; it starts algo=td3",
        ),
        (["algo=ppo", f"init={td3_bc}"], "algo=ppo cannot start from one"),
        (
            ["algo=td3", f"init={td3_bc}", "algo.hidden_sizes=[64,64]"],
            f"init={td3_bc} has algo.hidden_sizes=[32,32] (its td3_bc networks), but this run's algo.hidden_sizes=[64,64]",
        ),
        (["algo=td3", f"init={td3_bc}", "algo.num_critics=3"], "algo.num_critics=2 (its td3_bc networks)"),
        (
            ["algo=td3", f"init={td3_bc}", "env=MountainCarContinuous"],
            f"init={td3_bc} learnt for Pendulum-v1, but this run's env.id is MountainCarContinuous-v0",
        ),
        (
            ["algo=td3", f"init={td3_bc}", "algo.critic_loss=hl_gauss", "algo.v_min=-100", "algo.v_max=0"],
            "algo.critic_loss=hl_gauss makes each critic a histogram",
        ),
        (["algo=td3_bc", f"dataset={pendulum}", f"init={td3_bc}"], "algo=td3_bc cannot start from one"),
    ]
    for args, expected in cases:
        sizes = [] if any(a.startswith("algo.hidden_sizes") for a in args) else ["algo.hidden_sizes=[32,32]"]
        result = run_rlrun("env=Pendulum", "experiment=smoke", *sizes, *args, f"hydra.run.dir={run_dir}")
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and expected in result.stderr, result.stderr
        assert not run_dir.exists()
