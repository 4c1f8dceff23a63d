"""SAC really learns: the eval return must rise past a bar that a random policy never reaches."""

import json

import pytest


@pytest.mark.slow
def test_sac_learns_pendulum(rlrun, tmp_path):
    # Budget: 5,000 steps with 64×64 networks (the tuned Pendulum settings otherwise), about
    # 45 s on one core of this 2-core machine. A random policy scores about -1,200.
    run_dir = tmp_path / "run"
    result = rlrun(
        "algo=sac", "env=Pendulum", "total_steps=5000", "algo.hidden_sizes=[64,64]", "eval.every=1000",
        "threads=1", "progress=false", f"hydra.run.dir={run_dir}", timeout=600,
    )
    assert result.returncode == 0, result.stderr
    evals = [row["eval/return_mean"] for row in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
             if "eval/return_mean" in row]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert len(evals) == 5
    assert evals[0] < -1000, evals  # untrained policy
    assert summary["eval_return_mean"] > -400, evals
