"""The command line under generated input: random overrides of every type on keys of the real
config tree (and keys that do not exist), and damaged files in a run folder given to
`resume=`, each case a run of the `rlrun` entry point. Every case either trains or exits non-zero with exactly one `rlrun: error:` line,
no traceback, and no file that existed before changed.

The normal test run tries a bounded number of cases; `python -m pytest -m fuzz` tries many
more (RLRUN_FUZZ_EXAMPLES, default 300).
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, run_rlrun
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

ALGO_ENVS = [("sac", "Pendulum"), ("td3", "Pendulum"), ("ppo", "CartPole"), ("dqn", "CartPole")]
# Small budgets first; a generated override of the same key comes later and wins.
BUDGET = [
    "experiment=smoke",
    "total_steps=64",
    "eval.every=32",
    "eval.episodes=1",
    "log.every=16",
    "checkpoint.every=32",
    "progress=false",
    "threads=1",
]


def _leaf_keys() -> list[str]:
    """Every settable key of the composed configs of the algorithms above."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    keys: set[str] = set()
    with initialize_config_module("rlrun.configs", version_base="1.3"):
        for algo, env in ALGO_ENVS:
            config = OmegaConf.to_container(compose("config", overrides=[f"algo={algo}", f"env={env}"]), resolve=True)
            stack = [("", config)]
            while stack:
                prefix, node = stack.pop()
                for key, value in node.items():
                    if isinstance(value, dict) and value:
                        stack.append((f"{prefix}{key}.", value))
                    else:
                        keys.add(prefix + key)
    # W&B's keys start W&B itself, which reaches for the network and takes over the console;
    # tests/test_wandb.py covers them offline.
    return sorted(key for key in keys - {"algo.name"} if not key.startswith("log.wandb"))


KEYS = _leaf_keys()

scalars = st.one_of(
    st.integers(-3, 40),
    st.sampled_from([10**20, -(10**20), 2**63, 2**31]),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([1e-300, -0.0, 1e300, 5e-324]),
    st.booleans(),
    st.none(),
    st.text(max_size=12),
)
values = st.one_of(scalars, st.lists(scalars, max_size=4), st.lists(st.lists(st.integers(-2, 40), max_size=3), max_size=3))
keys = st.one_of(st.sampled_from(KEYS), st.text(min_size=1, max_size=10), st.sampled_from(KEYS).map(lambda k: k + "x"))


def _render(value) -> str:
    """A value as an override's right-hand side: Hydra's syntax where it has one, raw text otherwise."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value == math.inf else "-inf" if value == -math.inf else repr(value))
    if isinstance(value, list):
        return "[" + ",".join(_render(item) for item in value) + "]"
    return str(value)


overrides = st.lists(
    st.one_of(
        st.builds(lambda k, v: f"{k}={_render(v)}", keys, values),
        st.builds(
            lambda k, v: f"{k}='{v}'",
            st.sampled_from(KEYS),
            st.text(max_size=12).filter(lambda t: "'" not in t and "\\" not in t),
        ),
        st.builds(lambda k: f"~{k}", st.sampled_from(KEYS)),
        st.builds(lambda k, v: f"+{k}={_render(v)}", keys, scalars),
    ),
    max_size=3,
)


def run_command(args: list[str]) -> tuple[int, str]:
    """`rlrun <args>` through the real entry point, in a process of its own: (exit code, stderr).
    In the test process itself, after the rest of the suite, a case left pytest's own stderr
    closed; a process per case keeps every case independent of what ran before."""
    result = run_rlrun(*args, timeout=300)
    return result.returncode, result.stderr


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def check_outcome(code: int, stderr: str, before: dict[str, str], folder: Path) -> None:
    if code == 0:
        return
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("rlrun: warning:")]
    assert len(lines) == 1 and lines[0].startswith("rlrun: error: "), f"exit {code}:\n{stderr[-4000:]}"
    assert "Traceback" not in stderr
    after = snapshot(folder)
    assert {path: digest for path, digest in after.items() if path in before} == before, "a failing command changed a file"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("fuzz") / "run"
    result = run_rlrun("experiment=smoke", "algo=sac", "env=Pendulum", "total_steps=300", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    return run_dir


def _fuzz_overrides(algo_env, generated, tmp_path_factory) -> None:
    algo, env = algo_env
    folder = tmp_path_factory.mktemp("case")
    existing = folder / "existing.txt"
    existing.write_text("written before the command\n")
    before = snapshot(folder)
    code, stderr = run_command([*BUDGET, f"algo={algo}", f"env={env}", *generated, f"hydra.run.dir={folder / 'run'}"])
    check_outcome(code, stderr, before, folder)


DAMAGE = ["truncate", "random bytes", "foreign torch file", "empty", "missing field", "overrides.yaml", "config.yaml"]


def _damage(run_dir: Path, kind: str, data: bytes) -> None:
    checkpoint = sorted((run_dir / "checkpoints").glob("step_*.pt"))[-1]
    if kind == "truncate":
        checkpoint.write_bytes(checkpoint.read_bytes()[: len(data) * 97 % max(1, checkpoint.stat().st_size)])
    elif kind == "random bytes":
        checkpoint.write_bytes(data)
    elif kind == "foreign torch file":
        torch.save({"weights": torch.zeros(3), "format": data[:4].hex()}, checkpoint)
    elif kind == "empty":
        checkpoint.write_bytes(b"")
    elif kind == "missing field":
        state = torch.load(checkpoint, weights_only=True)
        victim = sorted(state)[len(data) % len(state)]
        del state[victim]
        torch.save(state, checkpoint)
    elif kind == "overrides.yaml":
        (run_dir / ".hydra" / "overrides.yaml").write_bytes(data)
    else:
        (run_dir / ".hydra" / "config.yaml").write_bytes(data)


def _fuzz_damage(finished_run, kind, data, extra, tmp_path_factory) -> None:
    folder = tmp_path_factory.mktemp("damaged")
    run_dir = folder / "run"
    shutil.copytree(finished_run, run_dir)
    _damage(run_dir, kind, data)
    before = snapshot(folder)
    code, stderr = run_command([f"resume={run_dir}", "total_steps=600", *extra])
    check_outcome(code, stderr, before, folder)


EXAMPLES = 12
MANY = int(os.environ.get("RLRUN_FUZZ_EXAMPLES", 300))
QUIET = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    "derandomize": True,
}


@pytest.mark.slow
@settings(max_examples=EXAMPLES, **QUIET)
@given(algo_env=st.sampled_from(ALGO_ENVS), generated=overrides)
@example(algo_env=("ppo", "CartPole"), generated=[])  # one that trains, whatever is generated
@example(algo_env=("dqn", "CartPole"), generated=["algo.double=true", "seed=3"])
def test_generated_overrides_train_or_get_one_line(algo_env, generated, tmp_path_factory):
    _fuzz_overrides(algo_env, generated, tmp_path_factory)


@settings(max_examples=EXAMPLES // 2, **QUIET)
@given(
    kind=st.sampled_from(DAMAGE),
    data=st.binary(min_size=1, max_size=64),
    extra=st.lists(st.sampled_from(["seed=1", "algo.lr=1e-3", "eval.episodes=1"]), max_size=2),
)
@pytest.mark.slow
def test_damaged_run_folders_get_one_line(finished_run, kind, data, extra, tmp_path_factory):
    _fuzz_damage(finished_run, kind, data, extra, tmp_path_factory)


@pytest.mark.fuzz
@settings(max_examples=MANY, deadline=None, suppress_health_check=list(HealthCheck))
@given(algo_env=st.sampled_from(ALGO_ENVS), generated=overrides)
def test_many_generated_overrides(algo_env, generated, tmp_path_factory):
    _fuzz_overrides(algo_env, generated, tmp_path_factory)


@pytest.mark.fuzz
@settings(max_examples=MANY // 3, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    kind=st.sampled_from(DAMAGE),
    data=st.binary(min_size=1, max_size=256),
    extra=st.lists(st.sampled_from(["seed=1", "algo.lr=1e-3"]), max_size=2),
)
def test_many_damaged_run_folders(finished_run, kind, data, extra, tmp_path_factory):
    _fuzz_damage(finished_run, kind, data, extra, tmp_path_factory)


def test_the_generators_reach_the_real_config_tree():
    assert {"seed", "total_steps", "algo.lr", "eval.episodes", "env.id", "checkpoint.keep"} <= set(KEYS)
    assert yaml.safe_load((REPO / "configs" / "experiment" / "smoke.yaml").read_text())["total_steps"] >= 64
