"""The measuring scripts in scripts/ run and report what they promise."""

import json
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


# d3rlpy pins gymnasium 1.0, so it lives in a Python of its own (scripts/d3rlpy_peer.py says how to make it).
PEER_PYTHON = os.environ.get("RLRUN_D3RLPY_PYTHON")


@pytest.mark.skipif(
    not PEER_PYTHON or not Path(PEER_PYTHON).exists(), reason="d3rlpy's own Python: set RLRUN_D3RLPY_PYTHON to it"
)
def test_benchmark_offline_mode_trains_rlrun_and_d3rlpy_on_one_dataset(tmp_path):
    pytest.importorskip("minari", reason="the offline extra: python -m pip install -c constraints.txt -e '.[offline]'")
    from conftest import pendulum_dataset

    dataset = pendulum_dataset(tmp_path / "pendulum-scripted-v0")
    output = subprocess.run(
        [sys.executable, str(SCRIPTS / "benchmark.py"), "--dataset", str(dataset), "--methods", "rlrun:iql,d3rlpy:iql"]
        + ["--steps", "40", "--eval-every", "20", "--eval-episodes", "1", "--threads", "1", "--seeds", "0"]
        + ["--set", "algo.hidden_sizes=[16,16]", "--peer-python", PEER_PYTHON, "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert output.returncode == 0, output.stderr[-2000:]
    results = json.loads((tmp_path / "out" / "benchmark.json").read_text())
    assert [r["runner"] for r in results] == ["rlrun", "d3rlpy"]
    for result in results:
        assert result["steps_run"] == 40 and result["train_sps"] > 0 and result["peak_rss_mib"] > 0
        # Both evaluate at the same gradient steps and score on the dataset's references (−1200 to −150).
        assert sorted(result["eval_normalized_scores"], key=int) == ["20", "40"]
        score, episode_return = result["eval_normalized_scores"]["40"], result["eval_returns"]["40"]
        assert score == pytest.approx(100 * (episode_return + 1200) / 1050)
    table = (tmp_path / "out" / "benchmark.md").read_text()
    row = next(line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| iql | pendulum-scripted-v0 | 1 |"))
    rlrun_sps, d3rlpy_sps, ratio = float(row[3]), float(row[4]), float(row[5].strip().rstrip("×"))
    assert ratio == pytest.approx(rlrun_sps / d3rlpy_sps, rel=0.02)
    assert "| pendulum-scripted-v0 | d3rlpy:iql | 1 |" in table


def test_benchmark_offline_mode_without_d3rlpys_python_says_how_to_make_it(tmp_path):
    output = subprocess.run(
        [sys.executable, str(SCRIPTS / "benchmark.py"), "--dataset", str(tmp_path), "--methods", "rlrun:iql,d3rlpy:iql"]
        + ["--peer-python", str(tmp_path / "no-python"), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert output.returncode == 2
    error = output.stderr.splitlines()[-1]  # one line, after argparse's usage
    assert error.startswith(f"benchmark.py: error: --peer-python {tmp_path / 'no-python'}: no Python with d3rlpy")
    assert "pip install -c constraints.txt d3rlpy" in error
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_finetune_gain_compares_init_with_scratch(tmp_path):
    pytest.importorskip("minari")
    output = subprocess.run(
        [sys.executable, str(SCRIPTS / "finetune_gain.py"), "--seeds", "1", "--collector-steps", "300", "--episodes", "2"]
        + ["--offline-steps", "100", "--online-steps", "300", "--eval-every", "150", "--warmup-steps", "100"]
        + ["--learning-starts", "100", "--folder", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert output.returncode == 0, output.stderr[-2000:]
    table = [line.strip("|").split("|") for line in output.stdout.splitlines() if line.startswith("| ")]
    assert [row[0].strip() for row in table[2:]] == ["0", "150", "300"]  # init= also evaluates before any online step
    assert table[2][2].strip() == ""  # from scratch has no step-0 evaluation
    assert "TD3 from TD3+BC (init=):" in output.stdout and "TD3 from scratch:" in output.stdout


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
