import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_rlrun(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed `rlrun` entry point the way a user would, capturing its output."""
    # One torch thread per run: tests run beside each other on small CI machines, where
    # several multi-threaded processes contend badly.
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "rlrun.cli", *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO,
    )


@pytest.fixture
def rlrun():
    return run_rlrun
