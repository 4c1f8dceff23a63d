"""The measuring scripts in scripts/ run and report what they promise."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.mark.parametrize("algo", ["sac", "ppo"])
def test_profile_step_accounts_for_a_training_run(algo):
    output = subprocess.run(
        [sys.executable, str(SCRIPTS / "profile_step.py"), "experiment=smoke", f"algo={algo}", "env=Pendulum"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert output.returncode == 0, output.stderr[-2000:]
    assert f"{algo} on Pendulum-v1: 600 steps" in output.stdout
    shares = {}
    for line in output.stdout.splitlines():
        parts = line.rsplit(None, 4)
        if len(parts) == 5 and parts[2].endswith("%"):
            shares[parts[0]] = float(parts[2].rstrip("%"))
    for part in ("environment step", "acting", "update: backward", "update: optimiser step"):
        assert shares.get(part, 0.0) > 0.0, (part, output.stdout)
    # The parts and the untimed rest add up to the run's wall time.
    assert sum(shares.values()) + float(output.stdout.split("(untimed)")[1].split()[1].rstrip("%")) == pytest.approx(100, abs=1)


def test_envpool_speed_measures_both_backends_side_by_side():
    pytest.importorskip("envpool")
    output = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "envpool_speed.py"),
            "--env-only",
            "--steps",
            "20",
            "algo=ppo",
            "env=Hopper",
            "algo.num_envs=2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SCRIPTS.parent)},
    )
    assert output.returncode == 0, output.stderr[-2000:]
    assert [line.split()[:3] for line in output.stderr.splitlines() if line.startswith("repeat")] == [
        ["repeat", "0:", "gymnasium"],
        ["repeat", "0:", "envpool"],
    ]
    rows = [
        line.strip("|").split("|") for line in output.stdout.splitlines() if line.startswith("| wall") or line.startswith("| CPU")
    ]
    assert len(rows) == 2
    for row in rows:
        gymnasium, envpool, ratio = float(row[1]), float(row[2]), float(row[3].strip().rstrip("×"))
        assert gymnasium > 0 and envpool > 0 and ratio == pytest.approx(envpool / gymnasium, rel=0.05)


def test_vector_envs_speed_measures_each_num_envs_against_the_first():
    output = subprocess.run(
        [sys.executable, str(SCRIPTS / "vector_envs_speed.py"), "--cases", "dqn:CartPole", "--num-envs", "1,2"]
        + ["--steps", "200", "--set", "experiment=smoke"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert output.returncode == 0, output.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in output.stdout.splitlines() if line.startswith("| dqn | CartPole |")]
    assert [row[2].strip() for row in rows] == ["1", "2"]
    steps_per_second = [float(row[3]) for row in rows]
    ratios = [float(row[5].strip().rstrip("×")) for row in rows]
    assert ratios[0] == 1.0 and ratios[1] == pytest.approx(steps_per_second[1] / steps_per_second[0], abs=0.02)
    assert all(float(row[6]) > 0 for row in rows)  # CPU seconds per run


def test_vector_envs_speed_without_updates_measures_the_loop_alone():
    output = subprocess.run(
        [sys.executable, str(SCRIPTS / "vector_envs_speed.py"), "--without-updates", "--cases", "sac:Pendulum"]
        + ["--num-envs", "1,2", "--steps", "200", "--set", "experiment=smoke"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert output.returncode == 0, output.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in output.stdout.splitlines() if line.startswith("| sac | Pendulum |")]
    assert [row[2].strip() for row in rows] == ["1", "2"]
    assert all(float(row[3]) > 0 for row in rows)  # CPU µs per environment step


@pytest.mark.slow
def test_update_cost_times_each_agent_in_each_round():
    output = subprocess.run(
        [sys.executable, str(SCRIPTS / "update_cost.py"), "--env", "Pendulum", "--updates", "3", "--rounds", "2"]
        + ["sac hidden_sizes=[32,32]", "dsac_t hidden_sizes=[32,32] activation=relu", "mrq zs_dim=16 target_update_freq=2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert output.returncode == 0, output.stderr[-2000:]
    rows = [line.split() for line in output.stdout.splitlines() if line.startswith("round")]
    agents = ["sac", "dsac_t", "mrq"]
    assert [(row[1], row[2]) for row in rows] == [(round_number, agent) for round_number in ("1", "2") for agent in agents]
    assert all(float(row[row.index("update") + 1]) > 0 for row in rows)


def test_buffer_memory_measures_bytes_per_transition_of_the_atari_buffers():
    output = subprocess.run(
        [sys.executable, str(SCRIPTS / "buffer_memory.py"), "--atari", "--transitions", "200"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert output.returncode == 0, output.stderr[-2000:]
    cells = [line.split("|")[1:-1] for line in output.stdout.splitlines() if line.startswith("| ")]
    rows = {row[0].strip(): row[1:] for row in cells if "Buffer" in row[0]}
    per_transition = {name.split(" (")[0]: float(row[0].replace(",", "")) for name, row in rows.items()}
    assert per_transition["ReplayBuffer"] == 2 * 4 * 84 * 84 + 8 + 4 + 4  # obs, next_obs, action, reward, terminated
    for whole, frames in (("ReplayBuffer", "FrameReplayBuffer"), ("PrioritizedReplayBuffer", "PrioritizedFrameReplayBuffer")):
        assert 7.5 < per_transition[whole] / per_transition[frames] < 8.0


@pytest.mark.slow
def test_batched_seeds_speed_compares_a_group_with_separate_runs():
    output = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "batched_seeds_speed.py"),
            "--env",
            "Pendulum",
            "--seeds",
            "1,2",
            "--steps",
            "300",
            "--set",
            "experiment=smoke",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert output.returncode == 0, output.stderr[-2000:]
    rows = [
        line.strip("|").split("|") for line in output.stdout.splitlines() if line.startswith("| 1 ") or line.startswith("| 2 ")
    ]
    assert [int(row[0]) for row in rows] == [1, 2]
    for row in rows:
        batched_cpu, separate_cpu, ratio = (float(cell) for cell in row[4:7])
        assert batched_cpu > 0 and separate_cpu > 0 and ratio == pytest.approx(batched_cpu / separate_cpu, abs=0.05)
    # A group of one seed is a separate run: the same final return.
    batched_return, separate_return = (float(x) for x in rows[0][8].split("/"))
    assert batched_return == separate_return
