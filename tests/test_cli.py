"""The `rlrun` command end to end, in subprocesses, as a user runs it."""

import json

import gymnasium as gym
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlrun.algos.sac import SAC, SACConfig
from rlrun.core import checkpoint

SCALARS = {
    "train/episode_return",
    "train/episode_length",
    "eval/return_mean",
    "eval/return_std",
    "losses/critic",
    "losses/actor",
    "losses/alpha",
    "train/alpha",
    "train/q_mean",
    "perf/sps",
    "perf/train_seconds",
}


def test_smoke_run_writes_the_run_folder(rlrun, tmp_path):
    run_dir = tmp_path / "run"
    result = rlrun("experiment=smoke", "algo=sac", "env=Pendulum", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr

    # What Hydra's own run writes (commands/train.py runs a single job through Hydra's run_job).
    assert {p.name for p in (run_dir / ".hydra").iterdir()} == {"config.yaml", "hydra.yaml", "overrides.yaml"}
    overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    assert overrides == ["experiment=smoke", "algo=sac", "env=Pendulum"]  # hydra.* overrides go to hydra.yaml
    assert yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]["mode"] == "RUN"
    assert "sac on Pendulum-v1, seed 0, 600 steps" in (run_dir / "rlrun.log").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["total_steps"] == 600
    assert summary["algo"] == "sac" and summary["env_id"] == "Pendulum-v1"
    assert summary["eval_return_mean"] < 0 and summary["sps"] > 0 and summary["wall_time_s"] > 0

    events = EventAccumulator(str(run_dir)).Reload()
    assert set(events.Tags()["scalars"]) >= SCALARS
    assert [e.step for e in events.Scalars("eval/return_mean")] == [300, 600]
    assert "_hparams_/experiment" in events.PluginTagToContent("hparams")

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {key for row in rows for key in row} >= SCALARS
    assert any(row["step"] == 600 and "eval/return_mean" in row for row in rows)

    saved = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert saved == ["best.pt", "step_000000300.pt", "step_000000600.pt"]
    state = checkpoint.load(run_dir / "checkpoints" / "step_000000600.pt")  # weights_only=True
    assert state["algo"] == "sac" and state["env_id"] == "Pendulum-v1" and state["step"] == 600
    assert state["config"]["algo"]["hidden_sizes"] == [32, 32]
    env = gym.make("Pendulum-v1")
    agent = SAC(SACConfig(hidden_sizes=(32, 32)), env.observation_space, env.action_space, torch.device("cpu"), 0)
    agent.load_state_dict(state["agent"])
    torch.testing.assert_close(agent.actor.state_dict(), state["agent"]["actor"])


def test_help_lists_the_config_groups(rlrun):
    result = rlrun("--help")
    assert result.returncode == 0
    groups = dict(line.split(": ", 1) for line in result.stdout.splitlines() if line.startswith(("algo: ", "env: ")))
    assert set(groups["algo"].split(", ")) >= {"sac", "td3", "ddpg", "ppo"}
    assert set(groups["env"].split(", ")) >= {"HalfCheetah", "Hopper", "Walker2d", "Ant", "Humanoid", "Pendulum", "CartPole"}


def test_cfg_job_prints_the_composed_config_with_tuned_values(rlrun, tmp_path):
    result = rlrun("--cfg", "job", "algo=sac", "env=Pendulum", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr
    assert "id: Pendulum-v1" in result.stdout
    assert "lr: 0.001" in result.stdout  # from configs/tuned/sac-Pendulum.yaml
    assert not (tmp_path / "run").exists()  # nothing ran
    overridden = rlrun("--cfg", "job", "algo=sac", "env=Pendulum", "algo.lr=5e-4")
    assert "lr: 0.0005" in overridden.stdout  # the command line beats the tuned file


def test_a_run_folder_can_be_named_after_the_overrides(rlrun, tmp_path):
    # Hydra's documented idiom; the folder check before the run reads it with its hydra keys.
    result = rlrun("experiment=smoke", "algo=sac", "env=Pendulum", f"hydra.run.dir={tmp_path}/${{hydra.job.override_dirname}}")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "algo=sac,env=Pendulum,experiment=smoke" / "summary.json").read_text())
    assert summary["status"] == "completed"
