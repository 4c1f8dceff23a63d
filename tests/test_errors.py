"""Every config mistake a user can make gets one line naming the bad value, before any run."""

import pytest

CASES = [
    # (overrides, words the one-line message must contain)
    (["algo=sacc"], ["unknown algo 'sacc'", "sac"]),
    (["env=HalfCheeta"], ["unknown env 'HalfCheeta'", "HalfCheetah", "Pendulum", "CartPole"]),
    (["env.id=HalfCheetah-v9"], ["env.id='HalfCheetah-v9'", "HalfCheetah-v5"]),
    (["algo.lrr=0.1"], ["unknown config key 'algo.lrr'", "algo.lr"]),
    (["eval.evry=5"], ["unknown config key 'eval.evry'", "eval.every"]),
    (["total_steps=abc"], ["total_steps must be an integer", "'abc'"]),
    (["total_steps=0"], ["total_steps=0 must be positive"]),
    (["total_steps=-5"], ["total_steps=-5 must be positive"]),
    (["algo.batch_size=0"], ["algo.batch_size=0 must be positive"]),
    (["algo.batch_size=512", "algo.buffer_size=256"], ["algo.batch_size=512", "algo.buffer_size=256"]),
    (["eval.episodes=0"], ["eval.episodes=0 must be positive"]),
    (["algo.gamma=1.5"], ["algo.gamma=1.5", "[0.0, 1.0]"]),
    (["device=tpu"], ["device='tpu'", "auto, cpu, cuda"]),
    (["env=CartPole"], ["algo=sac needs a Box action space", "CartPole-v1", "discrete", "fit: ppo, dqn"]),
    (["algo=dqn", "env=HalfCheetah"], ["algo=dqn needs a Discrete action space", "HalfCheetah-v5", "sac, ppo, td3, ddpg"]),
    (["algo=td3", "env=CartPole"], ["algo=td3 needs a Box action space", "CartPole-v1"]),
    (["algo.hidden_sizes=[]"], ["algo.hidden_sizes=[]"]),
    (["env.id=no_such_module:Foo-v0"], ["env.id='no_such_module:Foo-v0'", "cannot import 'no_such_module'"]),
    (["progress=maybe"], ["progress must be true or false", "'maybe'"]),
]


@pytest.mark.parametrize("overrides,words", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_config_fails_before_training_with_one_line(rlrun, tmp_path, overrides, words):
    run_dir = tmp_path / "run"
    result = rlrun("algo=sac", "env=Pendulum", *overrides, f"hydra.run.dir={run_dir}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rlrun: error: ")
    for word in words:
        assert word in lines[0]
    assert not run_dir.exists()  # failed before Hydra made a run folder


def test_every_bad_job_of_a_sweep_is_reported_before_any_runs(rlrun, tmp_path):
    result = rlrun("-m", "algo=sac", "env=Pendulum", "total_steps=100,0,-1", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2
    assert "total_steps=0" in lines[0] and "total_steps=-1" in lines[1]
    assert not (tmp_path / "sweep").exists()
