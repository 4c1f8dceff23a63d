"""Whether a run folder continues an earlier run. Decided once, before anything is written
(Plan.in_folder), and carried in the Plan to the run that acts on it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlrun.config import ConfigError, EnvConfig
from rlrun.core.checkpoint import check_resumable, latest

# Algorithm settings that size what the training loop saves beside the agent (the replay
# buffer, the rollout, the vector environments' states): a run continues with the values it
# started with. Changes of network sizes show in the agent's tensors (check_sizes).
LOOP_SIZES = ("buffer_size", "num_envs", "num_steps")


@dataclass(frozen=True)
class Resume:
    """The checkpoint a run continues from: the newest step checkpoint of its folder."""

    checkpoint: Path
    step: int  # environment steps it holds
    finished: bool  # it already reached total_steps: there is nothing to train
    last_eval: tuple[float, float] | None  # mean and std of the latest evaluation's returns
    elapsed: float  # wall seconds the run took up to the checkpoint


def decide_resume(
    run_dir: Path,
    algo: str,
    env: EnvConfig,
    total_steps: int,
    seed: int,
    algo_settings: Mapping[str, Any],
    new_agent_state: Callable[[], Mapping[str, Any]],
) -> Resume | None:
    """The run folder's newest checkpoint as a Resume, None if it has none; ConfigError (one
    line) if a run of `algo` on `env` with this seed, budget and these algorithm settings
    (`algo_settings`, the agent they build: `new_agent_state`) cannot continue it."""
    path = latest(run_dir)
    if path is None:
        return None
    header = check_resumable(path, algo, env.id, backend=env.backend, total_steps=total_steps, seed=seed)
    check_sizes(path, header, algo_settings, new_agent_state)
    returns = header["run"]["last_eval"]
    # The population std, as the run logs it (NumPy's): torch's default is the sample std, NaN for one episode.
    last_eval = None if returns is None else (float(returns.mean()), float(returns.std(unbiased=False)))
    return Resume(path, header["step"], header["step"] >= total_steps, last_eval, header["run"]["clock"]["elapsed"])


def check_sizes(
    path: Path, header: Mapping[str, Any], algo_settings: Mapping[str, Any], new_agent_state: Callable[[], Mapping[str, Any]]
) -> None:
    """ConfigError naming the setting if the checkpoint's agent or loop parts do not fit the
    algorithm as configured now: another network size or count, buffer, rollout or number of
    environments, or an agent that holds another algorithm's networks."""
    saved_config = header["config"] if isinstance(header["config"], Mapping) else {}
    saved_settings = saved_config.get("algo") if isinstance(saved_config.get("algo"), Mapping) else {}
    changed = {
        f"algo.{key}": (saved_settings[key], value)
        for key, value in algo_settings.items()
        if key in saved_settings and not _same(saved_settings[key], value)
    }
    then = "a run continues with the sizes it started with: drop the override, or start a new run folder"
    for key in LOOP_SIZES:
        if f"algo.{key}" in changed:
            before, now = changed[f"algo.{key}"]
            raise ConfigError(f"checkpoint {path} was trained with algo.{key}={before}, not {now}; {then}")
    misfit = _misfit(header["agent"], new_agent_state(), "agent")
    if misfit is not None:
        named = ", ".join(f"{key}={before} in the checkpoint, {now} now" for key, (before, now) in changed.items())
        cause = f" (changed: {named})" if named else ""
        raise ConfigError(f"checkpoint {path} does not fit algo={header['algo']} as configured: {misfit}{cause}; {then}")


def _same(saved: Any, now: Any) -> bool:
    """Equal as settings (a list and a tuple alike, 1000 and 1e3 alike); a value of a damaged
    file that cannot be compared counts as changed."""
    plain = lambda value: list(value) if isinstance(value, (list, tuple)) else value
    try:
        return bool(plain(saved) == plain(now))
    except Exception:  # noqa: BLE001 - anything a damaged file holds (a tensor compares elementwise)
        return False


def _misfit(saved: Any, built: Any, where: str) -> str | None:
    """The first place where the saved agent state lacks, or has another shape than, what the
    agent built now holds (optimiser moments a fresh agent lacks are not compared)."""
    if isinstance(built, torch.Tensor):
        if not isinstance(saved, torch.Tensor):
            return f"{where} is not a tensor in it"
        if saved.shape != built.shape:
            return f"{where} has shape {list(saved.shape)} in it, {list(built.shape)} now"
        return None
    if isinstance(built, (list, tuple)):  # an optimiser's moments, one tensor per parameter
        if not isinstance(saved, (list, tuple)):
            return f"{where} is not a list in it"
        if len(saved) != len(built):
            return f"{where} has {len(saved)} entries in it, {len(built)} now"
        for index, (saved_item, built_item) in enumerate(zip(saved, built, strict=True)):
            found = _misfit(saved_item, built_item, f"{where}.{index}")
            if found is not None:
                return found
        return None
    if isinstance(built, Mapping):
        if not isinstance(saved, Mapping):
            return f"{where} is not a group in it"
        for key, value in built.items():
            if key not in saved:
                return f"it lacks {where}.{key}"
            found = _misfit(saved[key], value, f"{where}.{key}")
            if found is not None:
                return found
    return None
