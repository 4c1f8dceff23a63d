"""A run killed with SIGKILL and resumed ends bit-identical to one that was never interrupted,
with no duplicated or missing log rows."""

import json
import shlex

import pytest
import torch
from conftest import checkpoint_file, pendulum_dataset, run_rlrun, start_rlrun, wait_for
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlrun.core.folders import strict_json
from rlrun.core.registry import ALGORITHMS

# Small but real runs: learning starts (step 200) before the kill, the replay buffer (500)
# wraps around before it, PPO's checkpoint falls mid-rollout (2000 is not a multiple of its
# 64-step rollouts) with two vector sub-environments. TD3 (SAC's loop) steps three
# sub-environments, so its schedules and learning_starts fall inside vector steps (a
# checkpoint at step 801); DQN steps four.
SMALL_BUFFER = "algo.buffer_size=500"
RUNS = {
    "sac": (["algo=sac", "env=Pendulum", SMALL_BUFFER, "total_steps=900", "checkpoint.every=300", "eval.every=450"], 600),
    # HL-Gauss critics: their support is rebuilt from the config, not saved (rlrun/blocks/hl_gauss.py).
    "sac-hl_gauss": (
        ["algo=sac", "env=Pendulum", "algo.critic_loss=hl_gauss", SMALL_BUFFER]
        + ["total_steps=900", "checkpoint.every=300", "eval.every=450"],
        600,
    ),
    "td3": (
        ["algo=td3", "env=Pendulum", "algo.num_envs=3", SMALL_BUFFER]
        + ["total_steps=1200", "checkpoint.every=400", "eval.every=600"],
        801,
    ),
    "dsac_t": (
        ["algo=dsac_t", "env=Pendulum", SMALL_BUFFER, "total_steps=900", "checkpoint.every=300", "eval.every=450"],
        600,
    ),
    # CrossQ's smoke config ends the batch renormalisation's warm-up (100 passes) before the kill.
    "crossq": (
        ["algo=crossq", "env=Pendulum", SMALL_BUFFER, "total_steps=900", "checkpoint.every=300", "eval.every=450"],
        600,
    ),
    # MR.Q's smoke config copies its targets and trains its encoder every 50 updates; the
    # prioritised sequence buffer (priorities, startable slots) wraps around before the kill.
    "mrq": (["algo=mrq", "env=Pendulum", SMALL_BUFFER, "total_steps=900", "checkpoint.every=300", "eval.every=450"], 600),
    "ppo": (
        ["algo=ppo", "env=CartPole", "algo.num_envs=2", "total_steps=3000", "checkpoint.every=1000", "eval.every=1500"],
        2000,
    ),
    "dqn": (["algo=dqn", "env=CartPole", SMALL_BUFFER, "total_steps=1500", "checkpoint.every=500", "eval.every=750"], 1000),
    "dqn-vector": (
        ["algo=dqn", "env=CartPole", "algo.num_envs=4", SMALL_BUFFER]
        + ["total_steps=1500", "checkpoint.every=500", "eval.every=750"],
        1000,
    ),
    # Rainbow: the prioritised n-step buffer (priorities, the accumulator's pending steps) and
    # the noisy layers' generator; two sub-environments, each with its own pending steps.
    "rainbow": (
        ["algo=rainbow", "env=CartPole", "algo.num_envs=2", SMALL_BUFFER]
        + ["total_steps=1500", "checkpoint.every=500", "eval.every=750"],
        1000,
    ),
    # Without noisy nets: ε-greedy's coin flips.
    "rainbow-epsilon": (
        ["algo=rainbow", "env=CartPole", "algo.noisy=false", SMALL_BUFFER]
        + ["total_steps=1500", "checkpoint.every=500", "eval.every=750"],
        1000,
    ),
    # Atari frame stacks in the frame-once buffers (FrameReplayBuffer, prioritised for Rainbow):
    # two sub-environments, episodes cut at 400 frames (about 100 steps) so that resets,
    # truncations and the rings' wrap-around (150 transitions) fall before the kill.
    "dqn-pong": (
        ["algo=dqn", "env=Pong", "algo.num_envs=2", "+env.max_episode_steps=400", "algo.buffer_size=150"]
        + ["algo.learning_starts=100", "total_steps=500", "checkpoint.every=150", "eval.every=500"],
        300,
    ),
    "rainbow-pong": (
        ["algo=rainbow", "env=Pong", "algo.num_envs=2", "+env.max_episode_steps=400", "algo.buffer_size=150"]
        + ["algo.learning_starts=100", "total_steps=500", "checkpoint.every=150", "eval.every=500"],
        300,
    ),
    # Offline: gradient steps on a dataset ({dataset} is a small Pendulum one); the checkpoint
    # holds the sampling RNG, and the resumed run reads the dataset again.
    "td3_bc": (["algo=td3_bc", "dataset={dataset}", "total_steps=600", "checkpoint.every=200", "eval.every=300"], 400),
    "iql": (["algo=iql", "dataset={dataset}", "total_steps=600", "checkpoint.every=200", "eval.every=300"], 400),
    # Decision Transformer: its window sampler's RNG, and dropout's draws from torch's.
    "dt": (["algo=dt", "dataset={dataset}", "total_steps=600", "checkpoint.every=200", "eval.every=300"], 400),
    # CQL with its Lagrange multiplier, so that its state is checked too.
    "cql": (
        ["algo=cql", "dataset={dataset}", "algo.lagrange=true", "total_steps=600", "checkpoint.every=200", "eval.every=300"],
        400,
    ),
    # SAC started from a CQL run ({init}, 300 steps on the small Pendulum dataset): the frozen
    # input normalisation in its checkpoint, warm-up by the pre-trained policy, then updates.
    "sac-init": (
        ["algo=sac", "env=Pendulum", "init={init}", "finetune.warmup_steps=300"]
        + ["total_steps=900", "checkpoint.every=300", "eval.every=450"],
        600,
    ),
}

# Registered algorithms whose state and update are another's: DDPG is TD3's code with its three
# additions switched off.
RUNS_AS = {"ddpg": "td3"}


def test_every_registered_algorithm_is_resumed_bit_identically():
    assert {RUNS_AS.get(name, name) for name in ALGORITHMS} <= set(RUNS)


def assert_identical(a, b, where=""):
    """Bitwise equality of two checkpoint subtrees (tensors, numbers, nested containers)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), f"tensors differ at {where}"
    else:
        assert a == b, where


def logged_rows(run_dir):
    """metrics.jsonl without the wall-clock timings (perf/*)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if not k.startswith("perf/")} for row in rows]


def tensorboard_scalars(run_dir):
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"] if not tag.startswith("perf/")
    }


@pytest.mark.slow
@pytest.mark.parametrize("algo", RUNS)
def test_a_killed_and_resumed_run_ends_bit_identical(tmp_path, algo):
    overrides, kill_after = RUNS[algo]
    if "env=Pong" in overrides:
        pytest.importorskip("ale_py")
    if any("{dataset}" in a or "{init}" in a for a in overrides):
        dataset = pendulum_dataset(tmp_path / "pendulum-scripted-v0")
        init = tmp_path / "offline"
        if any("{init}" in a for a in overrides):
            offline = run_rlrun("algo=cql", f"dataset={dataset}", "experiment=smoke", "total_steps=300", f"hydra.run.dir={init}")
            assert offline.returncode == 0, offline.stderr
        overrides = [a.format(dataset=dataset, init=init) for a in overrides]
    args = ["experiment=smoke", *overrides, "log.every=100"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    uninterrupted = start_rlrun(*args, f"hydra.run.dir={whole}")
    victim = start_rlrun(*args, f"hydra.run.dir={killed}")
    wait_for(checkpoint_file(killed, kill_after), victim)
    victim.kill()  # SIGKILL: no handler runs, nothing is flushed on the way out
    victim.communicate()
    total = int(next(a for a in overrides if a.startswith("total_steps=")).split("=")[1])
    assert not checkpoint_file(killed, total).exists(), "the run finished before it was killed"

    resumed = run_rlrun(f"resume={killed}")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from step" in (killed / "rlrun.log").read_text()
    _, errors = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, errors

    expected = torch.load(checkpoint_file(whole, total), weights_only=True)
    actual = torch.load(checkpoint_file(killed, total), weights_only=True)
    assert_identical(expected["agent"], actual["agent"], "agent")  # networks, targets, optimisers, RNG
    assert_identical(expected["loop"], actual["loop"], "loop")  # replay buffer or rollout
    assert logged_rows(killed) == logged_rows(whole)
    assert tensorboard_scalars(killed) == tensorboard_scalars(whole)
    assert (
        json.loads((killed / "summary.json").read_text())["eval_return_mean"]
        == json.loads((whole / "summary.json").read_text())["eval_return_mean"]
    )


def test_a_checkpoint_can_leave_the_replay_buffer_out(rlrun, tmp_path):
    args = ["experiment=smoke", "algo=sac", "env=Pendulum", "total_steps=900", "checkpoint.every=300"]
    with_buffer, without = tmp_path / "with", tmp_path / "without"
    assert rlrun(*args, "total_steps=600", f"hydra.run.dir={with_buffer}").returncode == 0
    assert rlrun(*args, "total_steps=600", "checkpoint.replay_buffer=false", f"hydra.run.dir={without}").returncode == 0
    full = torch.load(checkpoint_file(with_buffer, 600), weights_only=True)
    lean = torch.load(checkpoint_file(without, 600), weights_only=True)
    assert full["loop"]["buffer"]["size"] == 600 and "buffer" not in lean["loop"]
    assert checkpoint_file(without, 600).stat().st_size < checkpoint_file(with_buffer, 600).stat().st_size

    # Extending the run: it continues from step 600 with an empty buffer, which it refills
    # (learning_starts=200 transitions) before updating again.
    extended = rlrun(f"resume={without}", "total_steps=900")
    assert extended.returncode == 0, extended.stderr
    summary = json.loads((without / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["total_steps"] == 900
    losses = {row["step"]: row["losses/critic"] for row in logged_rows(without) if "losses/critic" in row}
    # No update while refilling (step 700 logs the checkpoint's latest loss again), then learning.
    assert losses[700] == losses[600] and losses[800] != losses[700]


def test_rerunning_a_finished_run_in_its_folder_changes_nothing(rlrun, tmp_path):
    run_dir = tmp_path / "run"
    args = ["experiment=smoke", "algo=dqn", "env=CartPole", f"hydra.run.dir={run_dir}"]
    assert rlrun(*args).returncode == 0
    before = {p.name: p.stat().st_mtime_ns for p in (run_dir / "checkpoints").iterdir()}
    metrics_before = (run_dir / "metrics.jsonl").read_text()
    again = rlrun(*args)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in (run_dir / "rlrun.log").read_text()
    assert {p.name: p.stat().st_mtime_ns for p in (run_dir / "checkpoints").iterdir()} == before
    assert (run_dir / "metrics.jsonl").read_text() == metrics_before
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"


# ----- a resume that cannot go on says so before touching the folder --------------------------
SMOKE_SAC = ["experiment=smoke", "algo=sac", "env=Pendulum", "threads=1", "device=cpu"]


def _strict_json(path):
    """The file's JSON, refusing NaN and infinities as strict readers do."""

    def refuse(constant):
        raise ValueError(f"{path} holds {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


def _folder_state(run_dir):
    return {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file() and p.name != ".rlrun.lock"}


def _refused(run_dir, *args):
    """The one error line of `rlrun resume=<run_dir> args`, which must leave the folder as it was."""
    before = _folder_state(run_dir)
    result = run_rlrun(f"resume={run_dir}", *args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("rlrun: error: "), result.stderr[-3000:]
    assert _folder_state(run_dir) == before
    return lines[0]


@pytest.mark.slow
def test_a_budget_below_the_checkpoints_step_is_refused_and_the_summary_kept(tmp_path):
    run_dir = tmp_path / "run"
    process = start_rlrun(*SMOKE_SAC, "total_steps=100000", "checkpoint.every=100", f"hydra.run.dir={run_dir}")
    wait_for(checkpoint_file(run_dir, 300), process)
    process.terminate()  # SIGTERM: a checkpoint at the step it stops at, status interrupted
    process.communicate(timeout=120)
    summary = _strict_json(run_dir / "summary.json")
    assert summary["status"] == "interrupted" and summary["total_steps"] >= 300
    line = _refused(run_dir, "total_steps=200")
    assert f"total_steps=200 is below the step of checkpoint {run_dir / 'checkpoints'}" in line
    assert f"give total_steps={summary['total_steps']} or more" in line
    assert _strict_json(run_dir / "summary.json") == summary


@pytest.mark.slow
def test_a_summary_brought_up_to_date_keeps_its_fields_and_stays_strict_json(tmp_path):
    """A run stopped after its last checkpoint (as by a signal during the final evaluation):
    the resume that finds nothing to train marks it completed and drops nothing. One
    evaluation episode has no sample std; it was written as NaN."""
    run_dir = tmp_path / "run"
    assert run_rlrun(*SMOKE_SAC, "total_steps=300", f"hydra.run.dir={run_dir}").returncode == 0
    summary = _strict_json(run_dir / "summary.json")
    stopped = {**summary, "status": "interrupted", "signal": "SIGTERM"}
    (run_dir / "summary.json").write_text(json.dumps(stopped))
    result = run_rlrun(f"resume={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    after = _strict_json(run_dir / "summary.json")
    assert after == {**stopped, "status": "completed"}
    assert after["sps"] and after["best_eval_return_mean"] is not None and after["eval_return_std"] == 0.0
    # Killed after its last checkpoint, before writing a summary: one is made from the checkpoint.
    (run_dir / "summary.json").unlink()
    assert run_rlrun(f"resume={run_dir}").returncode == 0
    remade = _strict_json(run_dir / "summary.json")
    assert remade["status"] == "completed" and remade["total_steps"] == 300 and remade["eval_return_std"] == 0.0
    assert remade["eval_return_mean"] == summary["eval_return_mean"]


def test_summaries_map_non_finite_numbers_to_null():
    text = strict_json({"eval_return_mean": float("nan"), "returns": [1.0, float("inf")], "nested": {"x": -float("inf")}})
    assert json.loads(text) == {"eval_return_mean": None, "returns": [1.0, None], "nested": {"x": None}}


@pytest.mark.slow
def test_a_resume_that_changes_sizes_seed_or_algorithm_is_refused_naming_the_setting(tmp_path):
    run_dir, td3_dir = tmp_path / "sac", tmp_path / "td3"
    assert run_rlrun(*SMOKE_SAC, "total_steps=300", f"hydra.run.dir={run_dir}").returncode == 0
    td3 = ["experiment=smoke", "algo=td3", "env=Pendulum", "threads=1", "total_steps=300"]
    assert run_rlrun(*td3, f"hydra.run.dir={td3_dir}").returncode == 0
    checkpoint = checkpoint_file(run_dir, 300)
    cases = [
        (["algo.hidden_sizes=[64,64]"], "(changed: algo.hidden_sizes=[32, 32] in the checkpoint, [64, 64] now)"),
        (["algo.num_critics=3"], "(changed: algo.num_critics=2 in the checkpoint, 3 now)"),
        (["algo.buffer_size=500"], f"checkpoint {checkpoint} was trained with algo.buffer_size=1000, not 500"),
        (["seed=1"], f"checkpoint {checkpoint} is from seed=0, not seed=1"),
    ]
    for overrides, words in cases:
        line = _refused(run_dir, "total_steps=600", *overrides)
        assert words in line, (overrides, line)
    # A checkpoint that says SAC but holds TD3's networks.
    state = torch.load(checkpoint, weights_only=True)
    state["agent"] = torch.load(checkpoint_file(td3_dir, 300), weights_only=True)["agent"]
    torch.save(state, checkpoint)
    line = _refused(run_dir, "total_steps=600")
    assert f"checkpoint {checkpoint} does not fit algo=sac as configured: it lacks agent." in line
    assert _strict_json(run_dir / "summary.json")["status"] == "completed"


@pytest.mark.slow
def test_a_sweep_job_and_a_folder_with_a_space_resume_by_their_paths(rlrun, tmp_path):
    """A sweep job's folder name holds commas and '=' (Hydra's sweep syntax) and a user's may
    hold a space; resume= takes either as given, or quoted the way the SIGTERM hint prints it."""
    args = ["experiment=smoke", "algo=sac", "env=Pendulum", "threads=1", "total_steps=300"]
    sweep = rlrun("-m", *args, "seed=0,1", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert sweep.returncode == 0, sweep.stderr
    spaced = tmp_path / "sp ace" / "run"
    assert rlrun(*args, f"hydra.run.dir='{spaced}'").returncode == 0
    jobs = sorted(folder for folder in (tmp_path / "sweep").iterdir() if "," in folder.name)
    as_printed = shlex.split(f"rlrun {shlex.quote(f'resume={spaced}')}")[1]  # what pasting the hint gives rlrun
    for resume_arg, folder in ((f"resume={jobs[0]}", jobs[0]), (f"resume='{jobs[1]}'", jobs[1]), (as_printed, spaced)):
        resumed = rlrun(resume_arg, "total_steps=600")
        assert resumed.returncode == 0, resumed.stderr
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["total_steps"] == 600


USER_GROUP = """# @package _global_
defaults:
  - override /algo: td3
algo:
  lr: 0.002
"""


@pytest.mark.slow
def test_a_run_composed_with_a_config_group_of_the_users_resumes(tmp_path):
    """The documented rerun of an Optuna study's best config (docs/sweeps.md): a config group
    in a folder of the user's, found through hydra.searchpath relative to where the run started.
    resume= from another folder composes the same config and continues."""
    (tmp_path / "configs" / "mine").mkdir(parents=True)
    (tmp_path / "configs" / "mine" / "fast.yaml").write_text(USER_GROUP)
    run_dir = tmp_path / "run"
    args = ["experiment=smoke", "env=Pendulum", "threads=1", "total_steps=300", f"hydra.run.dir={run_dir}"]
    first = run_rlrun(*args, "hydra.searchpath=[file://configs]", "+mine=fast", cwd=tmp_path)
    assert first.returncode == 0, first.stderr

    resumed = run_rlrun(f"resume={run_dir}", "total_steps=600")  # from the repository, not tmp_path
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["total_steps"] == 600
    config = torch.load(checkpoint_file(run_dir, 600), weights_only=True)["config"]
    assert config["algo"]["name"] == "td3" and config["algo"]["lr"] == 0.002

    # Without its configs the run cannot be composed again: one line naming the folder.
    (tmp_path / "configs").rename(tmp_path / "moved")
    missing = run_rlrun(f"resume={run_dir}", "total_steps=900")
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"rlrun: error: resume={run_dir}: the run composed its config with configs from file://configs, and "
        f"{tmp_path / 'configs'} is no folder now; give the folder that holds them: "
        f"rlrun 'hydra.searchpath=[file://<folder>]' resume={run_dir}"
    ]
    # ...which the command line gives
    moved = run_rlrun(f"hydra.searchpath=[file://{tmp_path / 'moved'}]", f"resume={run_dir}", "total_steps=900")
    assert moved.returncode == 0, moved.stderr
    assert json.loads((run_dir / "summary.json").read_text())["total_steps"] == 900
