"""Checkpoint files: one self-describing torch file per save, written atomically."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

import rlrun
from rlrun.config import ConfigError

FORMAT_VERSION = 1


class Checkpointer:
    """Saves `checkpoints/step_<N>.pt` in the run folder.

    A file holds {"format", "rlrun_version", "algo", "env_id", "step", "config", "agent"},
    where "agent" is the algorithm's state_dict (networks, targets, optimisers, temperature)
    and "config" the composed config as plain values. Everything is tensors, numbers and
    strings, so it loads with torch.load(weights_only=True).
    """

    def __init__(self, run_dir: Path, algo: str, env_id: str, config: dict, keep: int) -> None:
        self.directory = run_dir / "checkpoints"
        self.keep = keep
        self.header = {"format": FORMAT_VERSION, "rlrun_version": rlrun.__version__, "algo": algo, "env_id": env_id}
        self.config = config

    def save(self, step: int, agent_state: dict[str, Any]) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"step_{step:09d}.pt"
        temporary = path.with_suffix(".pt.tmp")
        torch.save({**self.header, "step": step, "config": self.config, "agent": agent_state}, temporary)
        os.replace(temporary, path)  # a crash mid-write never leaves a truncated step_*.pt
        for old in sorted(self.directory.glob("step_*.pt"))[: -self.keep]:
            old.unlink()
        return path


def load(path: str | Path, map_location: str | torch.device = "cpu", algo: str | None = None) -> dict[str, Any]:
    """Load a checkpoint without executing code from the file (weights_only=True).

    Raises ConfigError, naming the file, if it cannot be read (missing, truncated, not a
    torch file), is not an rlrun checkpoint, or was written by another algorithm than `algo`.
    """
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise ConfigError(f"cannot read checkpoint {path}: {str(error).splitlines()[0]}") from None
    if not isinstance(state, dict) or "format" not in state or "agent" not in state:
        raise ConfigError(f"{path} is not an rlrun checkpoint")
    if algo is not None and state["algo"] != algo:
        raise ConfigError(f"checkpoint {path} is from algo={state['algo']}, not algo={algo}")
    return state


def latest(run_dir: Path) -> Path | None:
    files = sorted((run_dir / "checkpoints").glob("step_*.pt"))
    return files[-1] if files else None
