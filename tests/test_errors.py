"""Every config mistake a user can make gets one line naming the bad value, before any run."""

import shutil

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
    (["algo.num_envs=0"], ["algo.num_envs=0 must be positive"]),
    (["algo.batch_size=512", "algo.buffer_size=256"], ["algo.batch_size=512", "algo.buffer_size=256"]),
    (["eval.episodes=0"], ["eval.episodes=0 must be positive"]),
    (["algo.gamma=1.5"], ["algo.gamma=1.5", "[0.0, 1.0]"]),
    (["device=tpu"], ["device='tpu'", "auto, cpu, cuda"]),
    (["env=CartPole"], ["algo=sac needs a Box action space", "CartPole-v1", "discrete", "fit: ppo, dqn, rainbow"]),
    (["algo=dqn", "env=HalfCheetah"], ["algo=dqn needs a Discrete action space", "HalfCheetah-v5", "sac, ppo, td3, ddpg"]),
    (["algo=td3", "env=CartPole"], ["algo=td3 needs a Box action space", "CartPole-v1"]),
    (["algo.hidden_sizes=[]"], ["algo.hidden_sizes=[]"]),
    (["env.id=no_such_module:Foo-v0"], ["env.id='no_such_module:Foo-v0'", "cannot import 'no_such_module'"]),
    (["progress=maybe"], ["progress must be true or false", "'maybe'"]),
    (["precision=fp16"], ["precision='fp16' is not valid", "float32, bfloat16"]),
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


@pytest.mark.parametrize("multirun", ["-m", "hydra.mode=MULTIRUN"])
def test_every_bad_job_of_a_sweep_is_reported_before_any_runs(rlrun, tmp_path, multirun):
    result = rlrun(multirun, "algo=sac", "env=Pendulum", "total_steps=100,0,-1", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2
    assert "total_steps=0" in lines[0] and "total_steps=-1" in lines[1]
    assert not (tmp_path / "sweep").exists()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished SAC Pendulum smoke run (checkpoints at steps 300 and 600)."""
    from conftest import run_rlrun

    run_dir = tmp_path_factory.mktemp("finished") / "run"
    result = run_rlrun("experiment=smoke", "algo=sac", "env=Pendulum", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    return run_dir


def _copy_without_checkpoints(run_dir, target):
    shutil.copytree(run_dir, target, ignore=shutil.ignore_patterns("checkpoints"))
    return target


def _copy_with_truncated_checkpoint(run_dir, target):
    shutil.copytree(run_dir, target)
    latest = target / "checkpoints" / "step_000000600.pt"
    latest.write_bytes(latest.read_bytes()[:1000])
    return target


def _snapshot(folder):
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")} if folder.exists() else {}


# (arguments with {run}/{tmp} placeholders, how to prepare {run} from the finished run, words)
FOLDER_CASES = [
    (["resume={tmp}/nowhere"], None, ["resume={tmp}/nowhere: no such folder"]),
    (["resume={tmp}"], None, ["resume={tmp} is not an rlrun run folder"]),
    (["resume={run}"], _copy_without_checkpoints, ["has no checkpoint to continue from"]),
    (
        ["resume={run}"],
        _copy_with_truncated_checkpoint,
        ["cannot read checkpoint {run}/checkpoints/step_000000600.pt", "delete it to continue from step_000000300.pt"],
    ),
    (
        ["resume={run}", "algo=td3"],
        shutil.copytree,
        ["checkpoint {run}/checkpoints/step_000000600.pt is from algo=sac, not algo=td3"],
    ),
    (
        ["resume={run}", "env=MountainCarContinuous"],
        shutil.copytree,
        ["is from env.id=Pendulum-v1, not env.id=MountainCarContinuous-v0"],
    ),
    (["-m", "resume={run}"], shutil.copytree, ["resume= continues one run", "hydra.sweep.dir"]),
    (["algo=sac", "env=Pendulum", "hydra.run.dir=/proc/rlrun-run"], None, ["hydra.run.dir=/proc/rlrun-run is not writable"]),
    (["algo=sac", "env=Pendulum", "hydra.run.dir={tmp}/a-file/run"], None, ["cannot be created: {tmp}/a-file is a file"]),
    (
        ["algo=sac", "env=Pendulum", "env.id=NoSuchEnv-v0"],
        None,
        ["env.id='NoSuchEnv-v0' is not a registered Gymnasium environment"],
    ),
    (
        ["algo=sac", "env=Pendulum", "hydra.run.dir={tmp}/" + "a" * 300],
        None,
        ["hydra.run.dir has a folder name of 300 bytes ('aaaa", "more than the 255 this file system allows"],
    ),
    # a run folder named after the overrides, as Hydra's docs suggest, with long overrides
    (
        [
            "algo=sac",
            "env=Pendulum",
            "hydra.run.dir={tmp}/${{hydra.job.override_dirname}}",
            f"algo.hidden_sizes=[{','.join(['64'] * 80)}]",
        ],
        None,
        ["hydra.run.dir has a folder name of 281 bytes ('algo.hidden_sizes=[64,64"],
    ),  # with ,algo=sac,env=Pendulum
    (
        ["-m", "algo=sac", "env=Pendulum", "hydra.sweep.dir={tmp}/" + "b" * 256],
        None,
        ["hydra.sweep.dir has a folder name of 256 bytes ('bbbb"],
    ),
]


@pytest.mark.parametrize(
    "args,prepare,words", FOLDER_CASES, ids=[" ".join(c[0]) + (f" ({c[1].__name__})" if c[1] else "") for c in FOLDER_CASES]
)
def test_bad_folders_and_resumes_fail_with_one_line_and_touch_nothing(rlrun, finished_run, tmp_path, args, prepare, words):
    run_dir = tmp_path / "run"
    if prepare is not None:
        prepare(finished_run, run_dir)
    (tmp_path / "a-file").write_text("in the way")
    before = _snapshot(tmp_path)
    fill = lambda text: text.format(run=run_dir, tmp=tmp_path)  # noqa: E731
    result = rlrun(*map(fill, args))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rlrun: error: "), result.stderr
    for word in words:
        assert fill(word) in lines[0]
    assert _snapshot(tmp_path) == before  # nothing written, nothing lost


def test_an_atari_game_without_the_atari_extra_names_the_install_command(rlrun, tmp_path):
    hide_ale = "import sys\nsys.modules['ale_py'] = None  # as if ale-py were not installed"
    result = rlrun("algo=dqn", "env=Pong", f"hydra.run.dir={tmp_path / 'run'}", patch=hide_ale)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "rlrun: error: env.id='ALE/Pong-v5' needs the Atari extra (ale_py is missing): "
        "pip install -c constraints.txt -e '.[atari]'"
    ]
    assert not (tmp_path / "run").exists()


def test_a_dmc_task_without_the_dmc_extra_names_the_install_command(rlrun, tmp_path):
    hide_shimmy = "import sys\nsys.modules['shimmy'] = None  # as if Shimmy were not installed"
    result = rlrun("algo=sac", "env=dmc-cheetah-run", f"hydra.run.dir={tmp_path / 'run'}", patch=hide_shimmy)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "rlrun: error: env.id='dm_control/cheetah-run-v0' needs the DeepMind Control Suite extra (shimmy is missing): "
        "pip install -c constraints.txt -e '.[dmc]'"
    ]
    assert not (tmp_path / "run").exists()


def test_a_launcher_whose_extra_is_missing_names_the_install_command():
    from hydra.errors import MissingConfigException

    from rlrun.commands.train import describe_error as _describe

    # What Hydra raises for hydra/launcher=slurm when hydra-submitit-launcher is not installed.
    error = MissingConfigException("Could not load 'hydra/launcher/submitit_slurm'.", "hydra/launcher/submitit_slurm")
    assert _describe(error, ["hydra/launcher=slurm"]) == (
        "hydra/launcher=submitit_slurm needs the slurm extra (hydra-submitit-launcher): "
        "python -m pip install -c constraints.txt -e '.[slurm]'"
    )
