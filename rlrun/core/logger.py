"""Run outputs: TensorBoard scalars, metrics.jsonl and the console progress bar."""

from __future__ import annotations

import functools
import io
import json
import logging
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from rlrun.config import RunError
from rlrun.core.folders import describe_write_error

log = logging.getLogger("rlrun")


def library_warnings_to_log() -> None:
    """Python warnings (a library's UserWarnings and deprecations: torch, Optuna, matplotlib)
    go to the run's log file, rlrun.log, instead of the terminal, where they would read as
    lines of rlrun's own; a command without a log file drops them. Called again once a job's
    log file is open. Warnings the user asked for (PYTHONWARNINGS, python -W) show as Python
    shows them."""
    if sys.warnoptions:
        return
    logging.captureWarnings(True)
    warnings_log = logging.getLogger("py.warnings")
    warnings_log.propagate = False  # not the root logger's console handler
    files = [handler for handler in logging.getLogger().handlers if isinstance(handler, logging.FileHandler)]
    warnings_log.handlers = [logging.NullHandler(), *files]  # a logger with no handler would print to stderr


Scalar = float | int | torch.Tensor
VIDEO_FRAMES, VIDEO_SIDE = 200, 160  # TensorBoard's copy of a video: at most this many frames, this many pixels a side


def _reports_write_errors(method: Callable) -> Callable:
    """A failed write of the run's logs (a full disk, a file-size limit, a folder made
    read-only) ends the run with one line (RunError), not a traceback; checkpoints stay."""

    @functools.wraps(method)
    def wrapped(self: RunLogger, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except OSError as error:
            raise RunError(
                f"cannot write the run's logs in {self.run_dir}: {describe_write_error(error)}; the checkpoints written so far are kept"
            ) from error

    return wrapped


class RunLogger:
    """Writes every scalar to TensorBoard and to metrics.jsonl in the run folder.

    Tensor values are converted with a single host transfer per call, so algorithms can
    hand over their on-device loss tensors at logging steps only. The TensorBoard writer is
    created at the first write: its import is slow, and training need not wait for it.
    """

    def __init__(self, run_dir: Path, total_steps: int, progress: bool, start_step: int = 0, mirror=None) -> None:
        """`start_step` is where the run starts: 0, or the step of the checkpoint it continues
        from. Whatever an earlier attempt in this folder logged after it is dropped, since
        this run logs it again. `mirror` (rlrun.core.tracking.WandbMirror), if given, gets every
        scalar and video too."""
        self.run_dir = run_dir
        self.mirror = mirror
        self.reused_folder = any(run_dir.glob("events.out.tfevents.*"))  # a rerun or a resume
        # purge_step makes TensorBoard discard the old events after start_step.
        self.purge_step = start_step + 1 if self.reused_folder else None
        self._writer = None
        self._hyperparameters: tuple[dict, list[str]] | None = None  # for the writer's first events
        metrics_path = run_dir / "metrics.jsonl"
        if metrics_path.exists():
            _truncate_metrics(metrics_path, start_step)
        self.metrics_file = open(metrics_path, "a", encoding="utf-8")  # noqa: SIM115 - open for the run's life, closed by close()
        # disable=None hides the bar when the console is not a terminal (CI, Slurm logs).
        self.bar = tqdm(
            total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, disable=None if progress else True
        )
        self.latest_return: float | None = None

    @property
    def writer(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # Flushed often enough that TensorBoard shows curves while the run goes on.
            self._writer = SummaryWriter(log_dir=str(self.run_dir), flush_secs=10, purge_step=self.purge_step)
            if self._hyperparameters is not None:
                from torch.utils.tensorboard.summary import hparams

                values, metric_names = self._hyperparameters
                for summary in hparams(values, {name: float("nan") for name in metric_names}):
                    self._writer.file_writer.add_summary(summary)
        return self._writer

    @_reports_write_errors
    def scalars(self, step: int, values: Mapping[str, Scalar]) -> None:
        row = {name: float(v) for name, v in values.items() if not isinstance(v, torch.Tensor)}
        tensor_names = [name for name, v in values.items() if isinstance(v, torch.Tensor)]
        if tensor_names:
            stacked = torch.stack([values[name].detach().float().reshape(()) for name in tensor_names])
            row.update(zip(tensor_names, stacked.tolist()))
        for name, value in row.items():
            self.writer.add_scalar(name, value, step)
        self.metrics_file.write(json.dumps({"step": step, **row}) + "\n")
        self.metrics_file.flush()  # readable while the run goes on
        if self.mirror is not None:
            self.mirror.scalars(step, row)

    def episode(self, step: int, episode_return: float, episode_length: int) -> None:
        self.latest_return = episode_return
        self.scalars(step, {"train/episode_return": episode_return, "train/episode_length": episode_length})

    @_reports_write_errors
    def video(self, step: int, tag: str, frames: np.ndarray, fps: float) -> None:
        """An episode's frames (T, H, W, 3) uint8, as an animated GIF in TensorBoard's images
        tab (what SummaryWriter.add_video writes, which needs moviepy 1's API). Shrunk to at
        most VIDEO_FRAMES frames of VIDEO_SIDE pixels: the full MP4 is in the run folder."""
        from PIL import Image
        from tensorboard.compat.proto.summary_pb2 import Summary

        stride = max(1, -(-len(frames) // VIDEO_FRAMES))
        images = [Image.fromarray(frame) for frame in frames[::stride]]
        for image in images:
            image.thumbnail((VIDEO_SIDE, VIDEO_SIDE))
        encoded = io.BytesIO()
        duration_ms = int(1000 * stride / fps)
        images[0].save(encoded, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
        width, height = images[0].size
        image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=encoded.getvalue())
        self.writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
        if self.mirror is not None:
            self.mirror.video(step, tag, frames, fps)

    def hyperparameters(self, flat_config: Mapping[str, object], metric_names: list[str]) -> None:
        """Record the run's settings in TensorBoard's HPARAMS tab, next to the given metrics."""
        values = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flat_config.items()}
        self._hyperparameters = (values, metric_names)  # written with the writer's first events

    def progress(self, step: int, sps: float) -> None:
        self.bar.update(step - self.bar.n)
        postfix = {"sps": f"{sps:.0f}"}
        if self.latest_return is not None:
            postfix["return"] = f"{self.latest_return:.1f}"
        self.bar.set_postfix(postfix, refresh=False)

    @_reports_write_errors
    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()
        self.metrics_file.flush()

    @_reports_write_errors
    def close(self) -> None:
        self.bar.close()
        try:
            if self._writer is not None:  # a run that logged nothing leaves no TensorBoard file
                self._writer.close()
        finally:
            self.metrics_file.close()
            if self.mirror is not None:
                self.mirror.close()


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Keep the rows of metrics.jsonl up to `last_step`; drop later ones and a row cut short
    by a crash."""
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("step", 0) <= last_step:
            kept.append(line + "\n")
    temporary = path.with_suffix(".jsonl.tmp")
    temporary.write_text("".join(kept), encoding="utf-8")
    temporary.replace(path)
