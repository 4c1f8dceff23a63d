"""No code runs from a run folder: a checkpoint's stored config and a folder's stored overrides
may name Gymnasium wrapper classes with plain arguments, nothing that makes rlrun call other
code (docs/checkpoints.md, "What a run folder may make rlrun do")."""

import io
import os
import shutil

import pytest
import torch
import yaml
from conftest import run_rlrun
from hydra.utils import instantiate

from rlrun.config import ConfigError
from rlrun.envs.make import check_stored_wrappers

SAC_PENDULUM = ["experiment=smoke", "algo=sac", "env=Pendulum", "total_steps=300"]


class _Shell:
    """A pickle whose loading runs a shell command: what a hostile file would carry."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def payload(marker) -> dict:
    """The published attack: a wrapper argument that Hydra would build by torch.load-ing a
    pickle from hex bytes, whose loading runs `touch <marker>`."""
    buffer = io.BytesIO()
    torch.save(_Shell(f"touch {marker}"), buffer)
    hex_pickle = buffer.getvalue().hex()
    return {
        "_target_": "gymnasium.wrappers.ClipReward",
        "max_reward": 1,
        "min_reward": {
            "_target_": "torch.load",
            "weights_only": False,
            "f": {"_target_": "io.BytesIO", "_args_": [{"_target_": "builtins.bytes.fromhex", "_args_": [hex_pickle]}]},
        },
    }


def test_the_payload_runs_code_when_instantiated(tmp_path):
    """The attack is real: Hydra's instantiate of the payload's argument runs the command."""
    marker = tmp_path / "ran"
    instantiate(payload(marker)["min_reward"])
    assert marker.exists()


@pytest.mark.parametrize(
    "wrapper,words",
    [
        ("payload", r"has a _target_ inside its arguments \(min_reward\._target_\)"),
        ({"_target_": "gymnasium.wrappers.ClipReward", "min_reward": [{"_target_": "os.getpid"}]}, r"min_reward\.0\._target_"),
        (
            {"_target_": "gymnasium.wrappers.TransformReward", "func": {"_target_": "operator.neg", "_partial_": True}},
            "func._target_",
        ),
        ({"_target_": "gymnasium.wrappers.ClipReward", "_partial_": True}, "sets _partial_"),
        ({"_target_": "gymnasium.wrappers.ClipReward", "_args_": [{"_target_": "os.getpid"}]}, "sets _args_"),
        ({"_target_": "gymnasium.wrappers.ClipReward", "_recursive_": True}, "sets _recursive_"),
        ({"_target_": "os.system", "command": "true"}, "os.system is not a Gymnasium wrapper class"),
        ({"_target_": "builtins.exec"}, "is not a Gymnasium wrapper class"),
        ({"min_reward": 0}, "is not a {_target_"),
    ],
)
def test_stored_wrappers_that_would_call_code_are_refused(tmp_path, wrapper, words):
    wrapper = payload(tmp_path / "ran") if wrapper == "payload" else wrapper
    with pytest.raises(ConfigError, match=words):
        check_stored_wrappers([wrapper], "checkpoint x.pt")
    assert not (tmp_path / "ran").exists()


def test_plain_wrapper_classes_pass():
    check_stored_wrappers(
        [
            {"_target_": "gymnasium.wrappers.ClipReward", "min_reward": -1, "max_reward": [1]},
            {"_target_": "gymnasium.wrappers.ClipAction"},
        ],
        "checkpoint x.pt",
    )


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("trust") / "run"
    result = run_rlrun(*SAC_PENDULUM, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    return run_dir


def tampered_copy(run_dir, tmp_path, marker):
    """A copy of the run whose newest checkpoint's stored config holds the payload; the file
    still loads with torch.load(weights_only=True)."""
    copy = tmp_path / "shared"
    shutil.copytree(run_dir, copy)
    path = sorted((copy / "checkpoints").glob("step_*.pt"))[-1]
    state = torch.load(path, weights_only=True)
    state["config"]["env"]["wrappers"] = [payload(marker)]
    torch.save(state, path)
    torch.load(path, weights_only=True)
    return copy, path


@pytest.mark.parametrize("command", ["evaluate", "export", "evaluate-which"])
def test_evaluate_and_export_refuse_a_checkpoint_that_would_run_code(trained_run, tmp_path, command):
    marker = tmp_path / "ran"
    folder, path = tampered_copy(trained_run, tmp_path, marker)
    if command == "evaluate-which":  # the file named directly, from another run's folder
        args = [f"evaluate={trained_run}", f"which={path}"]
    else:
        args = [f"{command}={folder}"]
    result = run_rlrun(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"rlrun: error: checkpoint {path}: env.wrappers[0] has a _target_ inside its arguments (min_reward._target_); "
        "a stored config may not make rlrun call code. If you trust the file, give the wrapper on the command line instead"
    ]
    assert not marker.exists()


def test_resume_refuses_stored_overrides_that_would_run_code(trained_run, tmp_path):
    marker = tmp_path / "ran"
    folder = tmp_path / "shared"
    shutil.copytree(trained_run, folder)
    overrides_file = folder / ".hydra" / "overrides.yaml"
    wrapper = payload(marker)
    text = yaml.safe_dump(wrapper, default_flow_style=True, width=10_000).strip()
    overrides = yaml.safe_load(overrides_file.read_text()) + [f"+env.wrappers=[{text}]"]
    overrides_file.write_text(yaml.safe_dump(overrides))
    summary_before = (folder / "summary.json").read_text()

    result = run_rlrun(f"resume={folder}", "total_steps=600")
    assert result.returncode == 2, result.stderr
    assert "has a _target_ inside its arguments (min_reward._target_)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not marker.exists()
    assert (folder / "summary.json").read_text() == summary_before  # nothing written

    overrides_file.write_text(yaml.safe_dump([*overrides[:-1], "+hydra.callbacks.x._target_=os.getpid"]))
    result = run_rlrun(f"resume={folder}", "total_steps=600")
    assert result.returncode == 2 and "sets hydra.callbacks.x._target_, which would run code" in result.stderr


@pytest.mark.slow
def test_resume_refuses_configs_of_a_stored_searchpath_that_would_run_code(tmp_path):
    """A run folder's .hydra/hydra.yaml names the config folders the run searched
    (hydra.searchpath), which resume= searches again: their files are as untrusted as the
    stored overrides."""
    marker = tmp_path / "ran"
    configs = tmp_path / "configs"
    (configs / "mine").mkdir(parents=True)
    (configs / "hydra" / "job_logging").mkdir(parents=True)
    mine = configs / "mine" / "plain.yaml"
    mine.write_text("# @package _global_\nalgo:\n  lr: 0.002\n")
    run_dir = tmp_path / "run"
    first = run_rlrun(*SAC_PENDULUM, f"hydra.searchpath=[file://{configs}]", "+mine=plain", f"hydra.run.dir={run_dir}")
    assert first.returncode == 0, first.stderr
    summary_before = (run_dir / "summary.json").read_text()

    shell = {"_target_": "os.system", "_args_": [f"touch {marker}"]}
    # dictConfig calls what a handler's "()" names
    logging_config = {
        "version": 1,
        "handlers": {"x": {"()": "os.system", "command": f"touch {marker}"}},
        "root": {"handlers": ["x"]},
    }
    (configs / "hydra" / "job_logging" / "evil.yaml").write_text(yaml.safe_dump(logging_config))
    cases = [
        ({"hydra": {"callbacks": {"x": shell}}}, f"{mine} sets Hydra's own settings, which may run code"),
        ({"defaults": [{"override /hydra/job_logging": "evil"}]}, "job_logging/evil.yaml sets Hydra's own settings"),
        ({"env": {"wrappers": [payload(marker)]}}, "has a _target_ inside its arguments (min_reward._target_)"),
        ({"algo": {"lr": shell}}, f"{mine} names a _target_ (algo.lr._target_)"),
    ]
    for content, words in cases:
        mine.write_text("# @package _global_\n" + yaml.safe_dump(content))
        result = run_rlrun(f"resume={run_dir}", "total_steps=600")
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("rlrun: error: ") and words in lines[0], lines
        assert not marker.exists()
        assert (run_dir / "summary.json").read_text() == summary_before
