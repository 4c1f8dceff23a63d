import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlrun.blocks.buffers import Batch
from rlrun.envs.datasets import Episode, write_dataset

REPO = Path(__file__).resolve().parents[1]


# The spaces the algorithm unit tests use: 3-dimensional observations, one action in [-2, 2].
OBS_SPACE = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
ACTION_SPACE = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)


def build_agent(agent_class: type, config: object, obs_space: gym.Space = OBS_SPACE, action_space: gym.Space = ACTION_SPACE):
    """An agent on the CPU with seed 0, its networks initialised from torch seed 0."""
    torch.manual_seed(0)
    return agent_class(config, obs_space, action_space, torch.device("cpu"), seed=0)


def random_batch(terminated: list[float]) -> Batch:
    """A batch for the 3-dimensional observations and one action above, rewards 1.5, with the
    given termination flags; the same numbers every call (torch seed 1)."""
    n = len(terminated)
    torch.manual_seed(1)
    return Batch(torch.randn(n, 3), torch.rand(n, 1) * 2 - 1, torch.full((n,), 1.5), torch.randn(n, 3), torch.tensor(terminated))


@pytest.fixture
def one_torch_thread():
    """Tiny networks run fastest on one thread, and the CPU is shared with other jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def checkpoint_file(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step:09d}.pt"


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 240) -> None:
    """Wait until `path` exists, failing if `process` ends first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def _env() -> dict:
    # One torch thread per run: tests run beside each other on small CI machines, where
    # several multi-threaded processes contend badly.
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def _command(args: tuple[str, ...], patch: str | None) -> list[str]:
    """`python -m rlrun.cli args`, or with `patch` (Python source) run first in the same
    process: how tests inject faults (a full disk, a NaN) into a real command-line run."""
    if patch is None:
        return [sys.executable, "-m", "rlrun.cli", *args]
    code = f"{patch}\nimport sys\nfrom rlrun.cli import main\nsys.argv = ['rlrun', *{list(args)!r}]\nmain()\n"
    return [sys.executable, "-c", code]


def run_rlrun(*args: str, timeout: float = 300, patch: str | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run the installed `rlrun` entry point the way a user would, capturing its output."""
    return subprocess.run(_command(args, patch), capture_output=True, text=True, timeout=timeout, env=_env(), cwd=cwd)


def run_rlrun_together(commands: list[tuple[str, ...]], timeout: float = 600) -> list[subprocess.CompletedProcess]:
    """Run several `rlrun` commands at the same time, one process each, and wait for them all:
    independent runs (seeds, sweeps) on a multi-core machine take the time of the slowest.
    Output goes to temporary files, so that no process stalls on a full pipe."""
    with contextlib.ExitStack() as stack:
        started = []
        for args in commands:
            out, err = (stack.enter_context(tempfile.TemporaryFile("w+")) for _ in range(2))
            process = subprocess.Popen(_command(args, None), stdout=out, stderr=err, text=True, env=_env(), cwd=REPO)
            stack.callback(process.kill)  # a no-op once it has exited; stops the others if one times out
            started.append((args, out, err, process))
        deadline = time.monotonic() + timeout
        results = []
        for args, out, err, process in started:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
            out.seek(0), err.seek(0)
            results.append(subprocess.CompletedProcess(list(args), process.returncode, out.read(), err.read()))
        return results


def _default_interrupt_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def start_rlrun(*args: str, patch: str | None = None) -> subprocess.Popen:
    """Start `rlrun` in the background (to be signalled or killed); stdout/stderr are piped.
    SIGINT and SIGHUP are handled as in a terminal even when the tests run as a shell's
    background job or under nohup (which start children with them ignored, and rlrun keeps
    an ignored signal ignored)."""
    return subprocess.Popen(
        _command(args, patch),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=REPO,
        preexec_fn=_default_interrupt_signals,
    )


# ----- offline datasets (Minari, the offline extra) -----------------------------------------
def swing_up(obs: np.ndarray) -> float:
    """A scripted Pendulum-v1 controller (mean return about −130 over seeds 0–9): pump energy
    at full torque until near the top, then a PD controller holds it upright. With the pole's
    dynamics θ̈ = 15 sin θ + 3u, E = ½θ̇² + 15 (cos θ − 1) is 0 upright at rest, and dE/dt = 3uθ̇."""
    cos, sin, velocity = obs
    if cos > 0.85:
        return -(12.0 * np.arctan2(sin, cos) + 3.0 * velocity)
    energy = 0.5 * velocity**2 + 15.0 * (cos - 1.0)
    direction = np.sign(velocity) if velocity != 0 else 1.0
    return 2.0 * direction if energy < 0 else -direction


def episodes(env_id="Pendulum-v1", count=4, seed=0, noise=0.5, expert=False):
    """`count` episodes of a noisy scripted policy (Pendulum: a damping controller, −θ̇, or
    with `expert` swing_up, plus Gaussian noise of σ = noise; other environments: uniform
    random actions)."""
    env = gym.make(env_id)
    env.action_space.seed(seed)
    rng = np.random.default_rng(seed)
    found = []
    for e in range(count):
        obs, _ = env.reset(seed=seed + e)
        observations, actions, rewards, terminations, truncations = [obs], [], [], [], []
        done = False
        while not done:
            if isinstance(env.action_space, gym.spaces.Box):
                scripted = swing_up(obs) if expert else -obs[2]
                action = np.clip([scripted + noise * rng.standard_normal()], -2.0, 2.0).astype(np.float32)
            else:
                action = env.action_space.sample()
            obs, reward, terminated, truncated, _ = env.step(action)
            observations.append(obs), actions.append(action), rewards.append(reward)
            terminations.append(terminated), truncations.append(truncated)
            done = terminated or truncated
        found.append(Episode(*map(np.array, (observations, actions, rewards, terminations, truncations)), seed=seed + e))
    return found


def pendulum_dataset(folder: Path) -> Path:
    """A small Minari dataset of Pendulum-v1 at `folder` (a name like pendulum-scripted-v0),
    with reference scores; written the way `rlrun collect=` writes one."""
    write_dataset(str(folder), episodes(), "Pendulum-v1", ref_min_score=-1200.0, ref_max_score=-150.0)
    return folder


def pendulum_expert_dataset(folder: Path) -> Path:
    """20 episodes of swing_up with action noise σ = 0.3 (mean return about −200), the
    offline learning tests' dataset; references: random −1200, swing_up −130."""
    found = episodes(count=20, seed=100, noise=0.3, expert=True)
    write_dataset(str(folder), found, "Pendulum-v1", ref_min_score=-1200.0, ref_max_score=-130.0)
    return folder


def pendulum_mixed_dataset(folder: Path) -> Path:
    """10 episodes of swing_up (noise σ = 0.3, returns about −200) and 10 of the damping
    controller (σ = 0.5, which leaves the pole hanging: returns about −1,000 to −1,900), so that
    a return-conditioned policy has two behaviours to choose between: the Decision
    Transformer's learning test."""
    found = episodes(count=10, seed=100, noise=0.3, expert=True) + episodes(count=10, seed=200, noise=0.5)
    write_dataset(str(folder), found, "Pendulum-v1", ref_min_score=-1200.0, ref_max_score=-130.0)
    return folder


@pytest.fixture
def rlrun():
    return run_rlrun


def pytest_collection_modifyitems(config, items):
    """The long fuzz runs (tests/test_fuzz.py) only when asked for: python -m pytest -m fuzz."""
    if "fuzz" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="many generated cases; run with: python -m pytest -m fuzz")
    for item in items:
        if "fuzz" in item.keywords:
            item.add_marker(skip)
