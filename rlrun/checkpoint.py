"""Checkpoint files: one self-describing torch file per save, written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

import rlrun

FORMAT_VERSION = 1


class Checkpointer:
    """Saves `checkpoints/step_<N>.pt` in the run folder.

    A file holds {"format", "rlrun_version", "algo", "env_id", "step", "config", "agent"},
    where "agent" is the algorithm's state_dict (networks, targets, optimisers, temperature)
    and "config" the composed config as plain values. Everything is tensors, numbers and
    strings, so it loads with torch.load(weights_only=True).
    """

    def __init__(self, run_dir: Path, algo: str, env_id: str, config: dict) -> None:
        self.directory = run_dir / "checkpoints"
        self.header = {"format": FORMAT_VERSION, "rlrun_version": rlrun.__version__, "algo": algo, "env_id": env_id}
        self.config = config

    def save(self, step: int, agent_state: dict[str, Any]) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"step_{step:09d}.pt"
        temporary = path.with_suffix(".pt.tmp")
        torch.save({**self.header, "step": step, "config": self.config, "agent": agent_state}, temporary)
        os.replace(temporary, path)  # a crash mid-write never leaves a truncated step_*.pt
        return path


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint without executing code from the file."""
    return torch.load(path, map_location=map_location, weights_only=True)


def latest(run_dir: Path) -> Path | None:
    files = sorted((run_dir / "checkpoints").glob("step_*.pt"))
    return files[-1] if files else None
