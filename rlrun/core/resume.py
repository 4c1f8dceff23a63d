"""Whether a run folder continues an earlier run. Decided once, before anything is written
(Plan.in_folder), and carried in the Plan to the run that acts on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rlrun.config import EnvConfig
from rlrun.core.checkpoint import check_resumable, latest


@dataclass(frozen=True)
class Resume:
    """The checkpoint a run continues from: the newest step checkpoint of its folder."""

    checkpoint: Path
    step: int  # environment steps it holds
    finished: bool  # it already reached total_steps: there is nothing to train
    last_eval: tuple[float, float] | None  # mean and std of the latest evaluation's returns
    elapsed: float  # wall seconds the run took up to the checkpoint


def decide_resume(run_dir: Path, algo: str, env: EnvConfig, total_steps: int) -> Resume | None:
    """The run folder's newest checkpoint as a Resume, None if it has none; ConfigError (one
    line) if a run of `algo` on `env` cannot continue it."""
    path = latest(run_dir)
    if path is None:
        return None
    header = check_resumable(path, algo, env.id, backend=env.backend, total_steps=total_steps)
    returns = header["run"]["last_eval"]
    last_eval = None if returns is None else (float(returns.mean()), float(returns.std()))
    return Resume(path, header["step"], header["step"] >= total_steps, last_eval, header["run"]["clock"]["elapsed"])
