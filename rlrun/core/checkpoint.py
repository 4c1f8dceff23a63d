"""Checkpoint files: one self-describing torch file per save, written atomically, holding
everything a run needs to continue exactly where it was."""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch

import rlrun
from rlrun.config import ConfigError, RunError
from rlrun.core.folders import write_files

FORMAT_VERSION = 2


class ClockState(TypedDict):
    elapsed: float  # wall seconds since the run first started, across resumes
    paused: float  # of which evaluating and checkpointing, left out of steps/s


class RunState(TypedDict):
    """What the run itself (rlrun/core/run.py) needs to continue exactly."""

    env: dict[str, Any] | None  # the training env's episode in progress (rlrun.envs.make.env_state); None offline
    rng: dict[str, Any]  # Python's, NumPy's and torch's global RNG states (rng_state below)
    metrics: dict[str, Any] | None  # the latest training metrics, logged again after a resume
    last_eval: torch.Tensor | None  # the latest evaluation's episode returns
    clock: ClockState


class Checkpoint(TypedDict):
    """The layout of a checkpoint file: every key written or read is declared here.

    Everything is tensors, numbers and strings, so a file loads with
    torch.load(weights_only=True), which executes no code from it.
    """

    format: int  # FORMAT_VERSION when written
    rlrun_version: str
    algo: str  # the algorithm's registered name
    env_id: str
    step: int  # environment steps taken
    config: dict[str, Any]  # the composed config, resolved, as plain values
    agent: dict[str, Any]  # the algorithm's state_dict: networks, targets, optimisers, statistics
    loop: dict[str, Any]  # the training loop's own parts (replay buffer, rollout), by name
    run: RunState


BEST = "best.pt"  # in checkpoints/: the agent of the best evaluation so far, never pruned


class Checkpointer:
    """Saves `checkpoints/step_<N>.pt` in the run folder and keeps the newest `keep`; saves
    `checkpoints/best.pt` (the same layout without the loop's parts) when an evaluation beats
    every earlier one."""

    def __init__(self, run_dir: Path, algo: str, env_id: str, config: dict, keep: int) -> None:
        self.directory = run_dir / "checkpoints"
        self.keep = keep
        self.algo, self.env_id, self.config = algo, env_id, config

    def save(self, step: int, agent: dict[str, Any], loop: dict[str, Any], run: RunState) -> Path:
        """Write step_<step>.pt through a temporary file, so that a crash or a full disk never
        leaves a truncated checkpoint and never touches the previous ones."""
        path = self._write(self.directory / f"step_{step:09d}.pt", step, agent, loop, run)
        for old in step_checkpoints(self.directory.parent)[: -self.keep]:
            old.unlink()
        return path

    def save_best(self, step: int, agent: dict[str, Any], run: RunState) -> Path:
        """Write best.pt (atomically, like save): the agent whose evaluation is the best so far."""
        return self._write(self.directory / BEST, step, agent, {}, run)

    def _write(self, path: Path, step: int, agent: dict[str, Any], loop: dict[str, Any], run: RunState) -> Path:
        state = Checkpoint(
            format=FORMAT_VERSION,
            rlrun_version=rlrun.__version__,
            algo=self.algo,
            env_id=self.env_id,
            step=step,
            config=self.config,
            agent=agent,
            loop=loop,
            run=run,
        )
        try:
            write_files({path: lambda temporary: torch.save(state, temporary)}, "checkpoint")
        except RunError as error:
            previous = latest(self.directory.parent)
            kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
            raise RunError(f"{error}; {kept}") from error.__cause__
        return path


def load(path: str | Path, map_location: str | torch.device = "cpu", algo: str | None = None, mmap: bool = False) -> Checkpoint:
    """Load a checkpoint without executing code from the file (weights_only=True).

    Raises ConfigError, naming the file, if it cannot be read (missing, truncated, not a
    torch file), is not an rlrun checkpoint, or was written by another algorithm than `algo`.
    `mmap` maps tensors instead of reading them: a cheap check of a large file.
    """
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        reason = str(error).splitlines()[0].split(". ")[0]  # torch's messages run on for lines
        raise ConfigError(f"cannot read checkpoint {path}: {reason}") from None
    if not isinstance(state, dict) or "format" not in state or "agent" not in state:
        raise ConfigError(f"{path} is not an rlrun checkpoint")
    missing = sorted(set(Checkpoint.__required_keys__) - set(state))
    run = state.get("run")
    if isinstance(run, dict):
        missing += [f"run.{key}" for key in sorted(set(RunState.__required_keys__) - set(run))]
    elif "run" not in missing:
        missing.append("run")
    if missing:
        raise ConfigError(f"{path} is a damaged rlrun checkpoint: it lacks {', '.join(missing)}")
    if algo is not None and state["algo"] != algo:
        raise ConfigError(f"checkpoint {path} is from algo={state['algo']}, not algo={algo}")
    return state


def check_resumable(
    path: Path,
    algo: str,
    env_id: str,
    *,
    backend: str = "gymnasium",
    total_steps: int | None = None,
    seed: int | None = None,
) -> Checkpoint:
    """Check that the checkpoint `path` can continue a run of `algo` on `env_id` stepped by
    `backend` with `seed` and a budget of `total_steps`; returns it memory-mapped (cheap to
    open, even with a large replay buffer inside).

    A run on EnvPool cannot continue (EnvPool cannot save its environments mid-episode); one
    whose checkpoint already reached `total_steps` passes, as there is nothing to continue. A
    budget below the checkpoint's step is refused, unless the run itself had that budget (a
    loop that steps several environments at once may pass its total_steps).
    """
    try:
        state = load(path, mmap=True)
    except ConfigError as error:
        older = step_checkpoints(path.parent.parent)[:-1]
        fallback = f"; delete it to continue from {older[-1].name}" if older else ""
        raise ConfigError(f"{error}{fallback}") from None
    same_run = "a run continues with the algorithm and environment it started with; start a new run folder otherwise"
    if state["algo"] != algo:
        raise ConfigError(f"checkpoint {path} is from algo={state['algo']}, not algo={algo}; {same_run}")
    if state["env_id"] != env_id:
        raise ConfigError(f"checkpoint {path} is from env.id={state['env_id']}, not env.id={env_id}; {same_run}")
    if state["format"] != FORMAT_VERSION:
        raise ConfigError(f"checkpoint {path} has format {state['format']}; this rlrun reads format {FORMAT_VERSION} only")
    saved_env = state["config"].get("env") if isinstance(state["config"], dict) else None
    saved_backend = saved_env.get("backend", "gymnasium") if isinstance(saved_env, dict) else "gymnasium"
    if saved_backend != backend:
        raise ConfigError(f"checkpoint {path} is from env.backend={saved_backend}, not env.backend={backend}; {same_run}")
    saved_seed = state["config"].get("seed") if isinstance(state["config"], dict) else None
    if seed is not None and saved_seed is not None and saved_seed != seed:
        raise ConfigError(
            f"checkpoint {path} is from seed={saved_seed}, not seed={seed}; a run continues with the seed it started "
            "with: drop the seed override, or start a new run folder"
        )
    saved_total = state["config"].get("total_steps") if isinstance(state["config"], dict) else None
    if total_steps is not None and state["step"] > total_steps and saved_total != total_steps:
        raise ConfigError(
            f"total_steps={total_steps} is below the step of checkpoint {path} ({state['step']}); a run cannot go back: "
            f"give total_steps={state['step']} or more, or leave it out"
        )
    if backend == "envpool" and (total_steps is None or state["step"] < total_steps):
        raise ConfigError(
            f"checkpoint {path} is from a run on env.backend=envpool, which cannot resume (EnvPool cannot save its "
            "environments mid-episode); start a new run folder, or train on env.backend=gymnasium to resume exactly"
        )
    return state


def latest(run_dir: Path) -> Path | None:
    """The run folder's checkpoint of the highest step, if any."""
    files = step_checkpoints(run_dir)
    return files[-1] if files else None


def step_checkpoints(run_dir: Path) -> list[Path]:
    """checkpoints/step_<N>.pt of the run folder in order of their step N. Ordered by number,
    not name: a step past 999,999,999 has more digits than the name's zero padding."""
    found = []
    for path in (run_dir / "checkpoints").glob("step_*.pt"):
        number = path.stem.removeprefix("step_")
        if number.isdigit():
            found.append((int(number), path))
    return [path for _, path in sorted(found)]


def rng_state() -> dict[str, Any]:
    """The global RNG states of Python, NumPy and torch (CPU and every CUDA device)."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(keys.copy()),
            "position": position,
            "has_gauss": has_gauss,
            "cached_gaussian": cached_gaussian,
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy(), numpy["position"], numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
