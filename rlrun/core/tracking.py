"""Weights & Biases tracking (log.wandb.project=<name>): a mirror of what RunLogger writes to
TensorBoard. wandb is imported only when a run asks for it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rlrun.config import RunError, WandbConfig

ID_FILE = "wandb-run-id"  # in the run folder: the W&B run a resumed run continues
STEP_METRIC = "global_step"  # W&B's x-axis: environment steps (W&B's own step only counts calls)


def run_id(run_dir: Path) -> str:
    """The run folder's W&B id: made at its first start, read back by every later one."""
    path = run_dir / ID_FILE
    if path.is_file():
        return path.read_text().strip()
    identifier = uuid.uuid4().hex[:16]
    path.write_text(identifier + "\n")
    return identifier


class WandbMirror:
    """One W&B run per run folder. Scalars are logged against environment steps (global_step),
    so a resumed run that logs some steps again adds points instead of being refused for going
    back in W&B's own step count."""

    def __init__(self, settings: WandbConfig, run_dir: Path, config: Mapping[str, Any]) -> None:
        import wandb

        try:
            self.run = wandb.init(
                project=settings.project,
                entity=settings.entity,
                group=settings.group,
                mode=settings.mode,
                id=run_id(run_dir),
                resume="allow",
                name=run_dir.name,
                config=dict(config),
                dir=None if os.environ.get("WANDB_DIR") else str(run_dir),
            )
        except Exception as error:  # wandb raises its own types for a missing login, a bad entity, ...
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise RunError(
                f"cannot start the W&B run for log.wandb.project={settings.project}: {reason.rstrip('.')}; "
                "set log.wandb.mode=offline to keep it in the run folder for a later `wandb sync`"
            ) from None
        self.run.define_metric(STEP_METRIC)
        self.run.define_metric("*", step_metric=STEP_METRIC)

    def scalars(self, step: int, row: Mapping[str, float]) -> None:
        self.run.log({**row, STEP_METRIC: step})

    def video(self, step: int, tag: str, frames: np.ndarray, fps: float) -> None:
        import wandb

        # W&B wants (time, channel, height, width).
        self.run.log(
            {tag: wandb.Video(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)), fps=int(fps), format="mp4"), STEP_METRIC: step}
        )

    def close(self) -> None:
        self.run.finish()
