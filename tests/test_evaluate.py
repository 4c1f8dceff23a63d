"""Looking at a trained agent: `rlrun evaluate=`, checkpoints/best.pt, videos, `rlrun export=`."""

import hashlib
import importlib.util
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import run_rlrun

from rlrun.config import EnvConfig
from rlrun.core.saved_run import load_agent

# algo → (env, extra overrides) of the smoke runs shared by this file's tests.
RUNS = {
    "sac": ("Pendulum", []),
    "ppo": ("Pendulum", []),  # observation normalisation and clipped Box actions
    "dqn": ("CartPole", []),
    "td3": ("Pendulum", []),
    "crossq": ("Pendulum", []),  # batch renormalisation layers, in evaluation mode when acting
    "mrq": ("Pendulum", []),  # the state encoder in front of the policy
}


def smoke_run(folder: Path, algo: str, *extra: str) -> Path:
    env, overrides = RUNS[algo]
    run_dir = folder / f"{algo}-{env}"
    result = run_rlrun(
        "experiment=smoke",
        f"algo={algo}",
        f"env={env}",
        "threads=1",
        "device=cpu",
        *overrides,
        *extra,
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs")
    return {algo: smoke_run(folder, algo) for algo in RUNS}


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` with its content hash."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def eval_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if "eval/return_mean" in row]


@pytest.mark.slow
@pytest.mark.parametrize("algo", RUNS)
def test_evaluating_the_final_checkpoint_reproduces_the_runs_last_evaluation(runs, algo):
    run_dir = runs[algo]
    before = snapshot(run_dir)
    result = run_rlrun(f"evaluate={run_dir}", "device=cpu")
    assert result.returncode == 0, result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    written = sorted((run_dir / "evaluations").glob("step_*.json"))
    assert len(written) == 1
    evaluation = json.loads(written[-1].read_text())
    assert evaluation["step"] == summary["total_steps"] and evaluation["episodes"] == len(evaluation["returns"])
    assert evaluation["return_mean"] == pytest.approx(summary["eval_return_mean"], abs=1e-6)
    assert "return" in result.stdout and str(written[-1]) in result.stdout
    # Nothing that training wrote changed; the evaluation is a new file.
    after = snapshot(run_dir)
    assert {name: digest for name, digest in after.items() if name in before} == before
    assert set(after) - set(before) == {str(written[-1].relative_to(run_dir))}


@pytest.mark.slow
def test_a_second_evaluation_is_a_new_file_and_options_apply(runs):
    run_dir = runs["sac"]
    first = run_rlrun(f"evaluate={run_dir}", "eval.episodes=3", "seed=5", "which=300")
    second = run_rlrun(f"evaluate={run_dir}", "eval.episodes=3", "seed=5", "which=300", "eval.deterministic=false")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    files = [run_dir / "evaluations" / name for name in ("step_000000300.json", "step_000000300-2.json")]
    assert sorted(run_dir.glob("evaluations/step_000000300*.json")) == sorted(files)
    results = [json.loads(path.read_text()) for path in files]
    assert all(r["step"] == 300 and r["episodes"] == 3 and r["eval_seed"] == 10_005 for r in results)
    assert [r["deterministic"] for r in results] == [True, False]
    assert results[0]["returns"] != results[1]["returns"]  # sampling changes the episodes


@pytest.mark.slow
def test_best_checkpoint_holds_the_best_evaluation_and_is_never_pruned(tmp_path):
    run_dir = smoke_run(tmp_path, "sac", "checkpoint.keep=1", "eval.every=150")
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = eval_rows(run_dir)
    best = max(rows, key=lambda row: row["eval/return_mean"])
    assert summary["best_eval_return_mean"] == pytest.approx(best["eval/return_mean"])
    assert summary["best_step"] == best["step"]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt", "step_000000600.pt"]
    state = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert state["step"] == best["step"] and state["loop"] == {}
    result = run_rlrun(f"evaluate={run_dir}", "which=best")
    assert result.returncode == 0, result.stderr
    evaluation = json.loads((run_dir / "evaluations" / "best.json").read_text())
    assert evaluation["return_mean"] == pytest.approx(best["eval/return_mean"], abs=1e-6)


def read_frames(path: Path) -> np.ndarray:
    pytest.importorskip("moviepy", reason="needs the video extra")
    from rlrun.envs.video import read_frames

    return read_frames(path)


def recorded_all_frames(frames: np.ndarray, episode_length: int) -> bool:
    """A video holds the reset frame and one per step; moviepy's writer can drop the last one
    (it counts frames as int(duration × fps), and the float product can fall just short)."""
    return episode_length <= frames.shape[0] <= episode_length + 1


@pytest.mark.slow
def test_evaluate_records_videos_that_decode_to_the_episodes_frames(runs):
    run_dir = runs["sac"]
    result = run_rlrun(f"evaluate={run_dir}", "eval.episodes=2", "video=true")
    assert result.returncode == 0, result.stderr
    videos = sorted((run_dir / "videos" / "eval-600").glob("episode-*.mp4"))
    assert [v.name for v in videos] == ["episode-0.mp4", "episode-1.mp4"]
    frames = read_frames(videos[0])
    assert recorded_all_frames(frames, episode_length=200) and frames.shape[-1] == 3 and frames.dtype == np.uint8
    assert frames.std(axis=0).max() > 0  # the pendulum moves


def test_mujoco_renders_headless(tmp_path):
    from rlrun.envs.video import check_video_support, record_episodes

    # InvertedPendulum: a MuJoCo task whose episode ends within a few dozen steps when the
    # cart does not balance, which keeps software rendering short.
    env = EnvConfig(id="InvertedPendulum-v5", total_steps=1000)
    check_video_support(env)
    files, result = record_episodes(env, lambda obs: np.array([0.5], dtype=np.float32), tmp_path / "pendulum", 1, seed=0)
    frames = read_frames(files[0])
    assert 1 < result.lengths[0] < 1000 and recorded_all_frames(frames, episode_length=result.lengths[0])
    assert frames.std(axis=0).max() > 0


def test_a_video_plays_at_the_speed_of_the_episode(tmp_path):
    from moviepy import VideoFileClip

    from rlrun.envs.video import record_episodes

    # Pendulum declares render_fps 30; two environment steps per agent step → 15 frames a second.
    env = EnvConfig(id="Pendulum-v1", total_steps=1000, action_repeat=2)
    files, result = record_episodes(env, lambda obs: np.array([0.5], dtype=np.float32), tmp_path / "v", 1, seed=0)
    with VideoFileClip(str(files[0]), audio=False) as clip:
        assert clip.fps == 15
        assert clip.duration == pytest.approx(result.lengths[0] / 15, abs=0.1)  # 200 steps of 1/30 s: 6.7 s


def test_an_atari_video_counts_the_skipped_frames():
    pytest.importorskip("ale_py", reason="needs the Atari extra")
    from rlrun.envs.make import make_env
    from rlrun.envs.video import ATARI_FRAMES_PER_SECOND, video_fps

    env = EnvConfig(id="ALE/Pong-v5", total_steps=1000)
    made = make_env(env, 0, training=False, render_mode="rgb_array")
    try:
        made.reset(seed=0)
        ale = made.unwrapped.ale
        before = ale.getEpisodeFrameNumber()
        made.step(0)
        # one recorded frame per agent step, which spans frame_skip emulator frames of 1/60 s
        assert ale.getEpisodeFrameNumber() - before == env.atari.frame_skip == 4
        assert made.metadata["render_fps"] == 30  # what ale-py declares, and RecordVideo would use: twice as fast
        assert video_fps(env, made) == ATARI_FRAMES_PER_SECOND / 4 == 15
    finally:
        made.close()


@pytest.mark.slow
def test_videos_during_training_leave_learning_unchanged(runs, tmp_path):
    with_video = smoke_run(tmp_path, "sac", "video.every=300")
    assert [row["eval/return_mean"] for row in eval_rows(with_video)] == [
        row["eval/return_mean"] for row in eval_rows(runs["sac"])
    ]
    for step in (300, 600):
        frames = read_frames(with_video / "videos" / f"step-{step}" / "episode-0.mp4")
        assert recorded_all_frames(frames, episode_length=200)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(with_video), size_guidance={"images": 0}).Reload()
    assert [image.step for image in events.Images("eval/video")] == [300, 600]


def real_observations(env_id: str, count: int) -> np.ndarray:
    """Observations of a random-action episode (or several)."""
    env = gym.make(env_id)
    env.action_space.seed(0)
    obs, _ = env.reset(seed=0)
    seen = []
    while len(seen) < count:
        seen.append(obs)
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
    return np.stack(seen).astype(np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("algo", RUNS)
def test_exported_policy_matches_the_in_process_policy(runs, algo, fmt, tmp_path):
    from rlrun.commands.export import export_policy

    saved = load_agent(runs[algo] / "checkpoints" / "step_000000600.pt", {}, "cpu")
    exported, _ = export_policy(saved, tmp_path, fmt)
    obs = real_observations(saved.plan.run_config.env.id, 64)
    expected = np.stack([np.asarray(saved.agent.act(o)) for o in obs])
    if fmt == "onnx":
        onnxruntime = pytest.importorskip("onnxruntime", reason="needs the export extra")
        actions = onnxruntime.InferenceSession(str(exported)).run(None, {"obs": obs})[0]
    else:
        actions = torch.jit.load(str(exported))(torch.from_numpy(obs)).numpy()
    assert actions.shape == expected.shape
    np.testing.assert_allclose(actions, expected, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_export_command_writes_the_policy_and_its_description(runs):
    pytest.importorskip("onnxscript", reason="needs the export extra")
    run_dir = runs["ppo"]
    result = run_rlrun(f"export={run_dir}", "format=onnx", "which=best")
    assert result.returncode == 0, result.stderr
    best_step = json.loads((run_dir / "summary.json").read_text())["best_step"]
    description = json.loads((run_dir / "export" / "policy-best.onnx.json").read_text())
    assert (run_dir / "export" / description["file"]).is_file() and description["file"] == "policy-best.onnx"
    assert description["step"] == best_step and description["input"] == {"name": "obs", "shape": ["batch", 3], "dtype": "float32"}
    assert description["output"]["low"] == [-2.0] and description["output"]["high"] == [2.0]
    # The other format beside it: a description of its own, the first one kept.
    assert run_rlrun(f"export={run_dir}", "format=torchscript", "which=best").returncode == 0
    assert json.loads((run_dir / "export" / "policy-best.onnx.json").read_text()) == description
    other = json.loads((run_dir / "export" / "policy-best.torchscript.json").read_text())
    assert other["file"] == "policy-best.ts.pt" and other["format"] == "torchscript"
    assert not list((run_dir / "export").glob("*.tmp"))


@pytest.mark.slow
def test_ppo_on_atari_frames_evaluates_and_exports_with_uint8_input(tmp_path):
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    from rlrun.commands.export import export_policy
    from rlrun.envs.make import make_env

    run_dir = tmp_path / "ppo-Pong"
    result = run_rlrun(
        "experiment=smoke", "algo=ppo", "env=Pong", "total_steps=304", "threads=1", "device=cpu", f"hydra.run.dir={run_dir}"
    )
    assert result.returncode == 0, result.stderr
    result = run_rlrun(f"evaluate={run_dir}", "device=cpu")
    assert result.returncode == 0, result.stderr
    (written,) = (run_dir / "evaluations").glob("step_*.json")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert json.loads(written.read_text())["return_mean"] == summary["eval_return_mean"]

    saved = load_agent(run_dir / "checkpoints" / "step_000000304.pt", {}, "cpu")
    env = make_env(saved.plan.run_config.env, 0, training=False)
    obs, _ = env.reset(seed=0)
    frames = []
    for _ in range(48):  # preprocessed frame stacks of a random-action game
        frames.append(obs)
        obs, *_ = env.step(env.action_space.sample())
    frames = np.stack(frames)
    expected = np.array([saved.agent.act(frame) for frame in frames])
    formats = ["torchscript"]
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnxscript"):
        formats.append("onnx")
    for fmt in formats:
        exported, description = export_policy(saved, tmp_path / "export", fmt)
        described = json.loads(description.read_text())
        assert described["input"] == {"name": "obs", "shape": ["batch", 4, 84, 84], "dtype": "uint8"}
        if fmt == "onnx":
            import onnxruntime

            actions = onnxruntime.InferenceSession(str(exported)).run(None, {"obs": frames})[0]
        else:
            actions = torch.jit.load(str(exported))(torch.from_numpy(frames)).numpy()
        np.testing.assert_array_equal(actions, expected)


# ----- bad input: one line, exit 2, nothing written -------------------------------------------
def one_line_error(result) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rlrun: error: "), result.stderr
    return lines[0]


@pytest.mark.slow
def test_bad_evaluate_and_export_inputs_get_one_line_and_write_nothing(runs, tmp_path):
    run_dir = runs["dqn"]
    no_best = tmp_path / "no-best"
    (no_best / "checkpoints").mkdir(parents=True)
    (no_best / "checkpoints" / "step_000000600.pt").write_bytes((run_dir / "checkpoints" / "step_000000600.pt").read_bytes())
    empty = tmp_path / "empty-run"
    (empty / ".hydra").mkdir(parents=True)
    (empty / ".hydra" / "config.yaml").write_text("seed: 0\n")
    cases = [
        ((f"evaluate={empty}",), "has no checkpoint"),
        ((f"evaluate={no_best}", "which=best"), "has no best checkpoint yet"),
        ((f"evaluate={run_dir}", "which=12345"), "no checkpoint at step 12345"),
        ((f"evaluate={tmp_path / 'missing'}",), "no such folder"),
        ((f"export={run_dir}", "format=tflite"), "format='tflite' is not valid; choose one of: onnx, torchscript"),
        (("-m", f"evaluate={run_dir}"), "evaluate= reads a saved run and takes no -m"),
        ((f"evaluate={run_dir}", f"resume={run_dir}"), "takes no resume="),
        ((f"evaluate={run_dir}", "algo.lr=1"), "evaluate= does not take 'algo.lr=1'"),
        ((f"evaluate={run_dir}", "video=maybe"), "video='maybe' must be true or false"),
        (
            (
                "algo=sac",
                "env=Pendulum",
                "env.id=tests.plain_env:NoRender-v0",
                "video.every=100",
                f"hydra.run.dir={tmp_path / 'new'}",
            ),
            "cannot render frames here",
        ),
    ]
    before = {folder: snapshot(folder) for folder in (run_dir, no_best, empty)}
    for args, words in cases:
        line = one_line_error(run_rlrun(*args))
        assert words in line, (args, line)
    assert {folder: snapshot(folder) for folder in before} == before
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_a_checkpoint_of_another_run_is_filed_as_that_runs_result(tmp_path):
    own = smoke_run(tmp_path / "own", "sac", "total_steps=300")
    other_seed = smoke_run(tmp_path / "seed1", "sac", "total_steps=300", "seed=1")
    other_algo = smoke_run(tmp_path / "td3", "td3", "total_steps=300")
    foreign = other_seed / "checkpoints" / "step_000000300.pt"
    result = run_rlrun(f"evaluate={own}", f"which={foreign}", "eval.episodes=2")
    assert result.returncode == 0, result.stderr
    assert f"rlrun: warning: which={foreign} was trained with seed=1, {own} with seed=0" in result.stderr
    assert f"of run {other_seed}:" in result.stdout
    (written,) = (own / "evaluations").iterdir()
    assert written.name == f"other-{other_seed.name}-step_000000300.json"  # not step_000000300.json, this run's own
    evaluation = json.loads(written.read_text())
    assert evaluation["run"] == str(other_seed) and evaluation["seed"] == 1 and evaluation["checkpoint"] == str(foreign)

    # Another algorithm's checkpoint says nothing about this run: refused, nothing written.
    before = snapshot(own)
    line = one_line_error(run_rlrun(f"evaluate={own}", f"which={other_algo / 'checkpoints' / 'step_000000300.pt'}"))
    assert f"is a checkpoint of algo=td3 on Pendulum-v1, but {own} is a run of algo=sac on Pendulum-v1" in line
    # Counts without a sane bound are refused before anything runs.
    line = one_line_error(run_rlrun(f"evaluate={own}", "eval.episodes=1000000000000"))
    assert "eval.episodes=1000000000000 is more than the limit of 1,000,000" in line
    if importlib.util.find_spec("minari") is not None:
        line = one_line_error(run_rlrun(f"collect={own}", "episodes=2000000", f"out={tmp_path / 'data'}"))
        assert "episodes=2000000 is more than the limit of 1,000,000" in line
    assert snapshot(own) == before
