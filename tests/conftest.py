import array
import contextlib
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
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


# ----- rlrun commands through the fork server (tests/forkserver.py) -------------------------


class _ForkServer:
    """One server per test process, started on first use; it stops when this process ends."""

    process: subprocess.Popen | None = None
    folder: str | None = None

    @classmethod
    def socket_path(cls) -> str:
        if cls.process is None or cls.process.poll() is not None:
            cls.folder = tempfile.mkdtemp(prefix="rlrun-forkserver-")
            path = os.path.join(cls.folder, "socket")
            cls.process = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("forkserver.py")), path],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                text=True,
                env=_env(),
                cwd=REPO,
            )
            assert cls.process.stdout.readline() == "ready\n", "the test fork server did not start"
        return os.path.join(cls.folder, "socket")


class ForkedRlrun:
    """`rlrun args` forked from the fork server, with the part of `subprocess.Popen`'s interface
    the tests use (pid, stdout/stderr pipes, poll, wait, communicate, signals)."""

    def __init__(self, args: tuple[str, ...], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd: Path = REPO) -> None:
        self.args = [sys.executable, "-m", "rlrun.cli", *args]
        self.returncode: int | None = None
        given, pipes = [], []
        for target in (stdout, stderr):
            if target == subprocess.PIPE:
                read, write = os.pipe()
                pipes.append(open(read, encoding="utf-8"))  # noqa: SIM115  closed by communicate
                given.append(write)
            else:
                pipes.append(None)
                given.append(target.fileno())
        self.stdout, self.stderr = pipes
        stdin = os.open(os.devnull, os.O_RDONLY)
        payload = pickle.dumps((list(args), _env(), str(cwd)))
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.connect(_ForkServer.socket_path())
        fds = [stdin, *given]
        self._server.sendmsg(
            [struct.pack("!I", len(payload)) + payload],
            [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())],
        )
        os.close(stdin)
        for fd, target in zip(given, (stdout, stderr)):
            if target == subprocess.PIPE:
                os.close(fd)  # the child holds its own copy: EOF once it exits
        (self.pid,) = struct.unpack("!I", self._receive(4, None))

    def _receive(self, size: int, timeout: float | None) -> bytes:
        self._server.settimeout(timeout)
        data = b""
        while len(data) < size:
            try:
                chunk = self._server.recv(size - len(data))
            except (TimeoutError, BlockingIOError):
                raise subprocess.TimeoutExpired(self.args, timeout) from None
            assert chunk, "the test fork server went away"
            data += chunk
        return data

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            (self.returncode,) = struct.unpack("!i", self._receive(4, timeout))
            self._server.close()
        return self.returncode

    def poll(self) -> int | None:
        try:
            return self.wait(timeout=0)
        except subprocess.TimeoutExpired:
            return None

    def communicate(self, timeout: float | None = None) -> tuple[str | None, str | None]:
        """Read both pipes to their end (a thread each, so neither fills up), then wait."""
        deadline = None if timeout is None else time.monotonic() + timeout
        read = {}
        readers = [
            threading.Thread(target=lambda name, pipe: read.__setitem__(name, pipe.read()), args=(name, pipe), daemon=True)
            for name, pipe in (("stdout", self.stdout), ("stderr", self.stderr))
            if pipe is not None and not pipe.closed
        ]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if reader.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout)
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        for pipe in (self.stdout, self.stderr):
            if pipe is not None:
                pipe.close()
        return read.get("stdout"), read.get("stderr")

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _fresh_processes() -> bool:
    return os.environ.get("RLRUN_TEST_FRESH_PROCESS") == "1"


def run_rlrun(*args: str, timeout: float = 300, patch: str | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run the `rlrun` command line as a user would (from `cwd`), capturing its output."""
    if patch is not None or _fresh_processes():
        return subprocess.run(_command(args, patch), capture_output=True, text=True, timeout=timeout, env=_env(), cwd=cwd)
    process = ForkedRlrun(args, cwd=cwd)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    return subprocess.CompletedProcess(list(args), process.returncode, out, err)


def run_rlrun_together(commands: list[tuple[str, ...]], timeout: float = 600) -> list[subprocess.CompletedProcess]:
    """Run several `rlrun` commands at the same time, one process each, and wait for them all:
    independent runs (seeds, sweeps) on a multi-core machine take the time of the slowest.
    Output goes to temporary files, so that no process stalls on a full pipe."""
    with contextlib.ExitStack() as stack:
        started = []
        for args in commands:
            out, err = (stack.enter_context(tempfile.TemporaryFile("w+")) for _ in range(2))
            if _fresh_processes():
                process = subprocess.Popen(_command(args, None), stdout=out, stderr=err, text=True, env=_env(), cwd=REPO)
            else:
                process = ForkedRlrun(args, stdout=out, stderr=err)
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


def start_rlrun(*args: str, patch: str | None = None) -> subprocess.Popen | ForkedRlrun:
    """Start `rlrun` in the background (to be signalled or killed); stdout/stderr are piped.
    SIGINT and SIGHUP are handled as in a terminal even when the tests run as a shell's
    background job or under nohup (which start children with them ignored, and rlrun keeps
    an ignored signal ignored); a forked command starts with them so as well."""
    if patch is None and not _fresh_processes():
        return ForkedRlrun(args)
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
    """The learning tests' module first, then the other modules with slow tests: pytest-xdist's
    workers then end on quick tests instead of one worker training alone at the end. Each
    module stays in one piece, so its module-scoped fixtures are made once. The long fuzz runs
    (tests/test_fuzz.py) only when asked for: python -m pytest -m fuzz."""
    has_slow = {item.path for item in items if "slow" in item.keywords}
    items.sort(key=lambda item: (item.path.name != "test_learning.py", item.path not in has_slow))
    if "fuzz" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="many generated cases; run with: python -m pytest -m fuzz")
    for item in items:
        if "fuzz" in item.keywords:
            item.add_marker(skip)
