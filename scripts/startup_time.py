"""Wall time from typing an rlrun command to its first environment step.

    python scripts/startup_time.py                       # rlrun algo=sac env=Pendulum, 5 tries
    python scripts/startup_time.py --tries 3 algo=ppo env=CartPole

Starts the command in a fresh Python process (as the `rlrun` entry point does), stops it at
the first training environment step, and prints each try's seconds and their median. For
what the imports cost, add `python -X importtime -m rlrun.cli ...` yourself.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

# Run in the child: the real CLI, with the first training step ending the process.
CHILD = """
import os, sys
import rlrun.envs.make
original = rlrun.envs.make.EpisodeReplay.step
def first_step(self, action):
    original(self, action)
    print("FIRST_STEP", flush=True)
    os._exit(0)
rlrun.envs.make.EpisodeReplay.step = first_step
from rlrun.cli import main
sys.argv = ["rlrun", *sys.argv[1:]]
main()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=5)
    parser.add_argument("overrides", nargs="*", default=["algo=sac", "env=Pendulum"])
    args = parser.parse_args()
    times = []
    for _ in range(args.tries):
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            output = subprocess.run(
                [sys.executable, "-c", CHILD, *args.overrides, "progress=false", f"hydra.run.dir={folder}/run"],
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONWARNINGS": "ignore"},
            )
            elapsed = time.perf_counter() - start
        if "FIRST_STEP" not in output.stdout:
            sys.exit(f"the run never reached an environment step:\n{output.stderr[-2000:]}")
        times.append(elapsed)
        print(f"{elapsed:.2f} s")
    print(f"median {statistics.median(times):.2f} s to the first environment step: rlrun {' '.join(args.overrides)}")


if __name__ == "__main__":
    main()
