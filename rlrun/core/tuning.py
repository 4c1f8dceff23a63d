"""Optuna, on the side of one run: a run that is a trial of a study reports each evaluation to
it, and stops early (status "pruned") when the study's pruner says so.

rlrun's Optuna sweeper (hydra_plugins/rlrun_optuna_sweeper, `hydra/sweeper=rlrun_optuna`)
starts such runs with the override `trial={storage: ..., study_name: ..., number: N}`; the Run
(rlrun/core/run.py) builds a TrialReporter from them and calls `report` after every evaluation. The pruner's
settings travel in the study itself (a user attribute), so every job prunes alike.

Optuna is an optional extra; nothing here imports it until a trial or a study is opened.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from rlrun.config import ConfigError, TrialConfig

INSTALL_COMMAND = "python -m pip install -c constraints.txt -e '.[optuna]'"
PRUNER_ATTR = "rlrun.pruner"  # study user attribute: the pruner's settings (PRUNERS below)
# Pruners a study can use, with their settings (see the sweeper's `pruner` config).
PRUNERS = ("median", "successive_halving", "hyperband", "none")

log = logging.getLogger("rlrun")


def import_optuna() -> Any:
    """optuna, or a ConfigError that names the command installing it."""
    try:
        import optuna
    except ImportError:
        raise ConfigError(
            f"the Optuna sweeper needs optuna, which is not installed; install it with: {INSTALL_COMMAND}"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def open_storage(url: str) -> Any:
    """An Optuna RDB storage. SQLite waits up to a minute for a lock instead of failing at
    once: parallel trials write their evaluations to the same file."""
    optuna = import_optuna()
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


def make_pruner(settings: Mapping[str, Any] | None) -> Any:
    """An Optuna pruner from the sweeper's `pruner` settings; steps are environment steps.

    median: prune a trial whose evaluation is worse than the median of the completed trials'
      evaluations at the same step (once n_startup_trials have completed, from n_warmup_steps).
    successive_halving / hyperband: asynchronous successive halving (Li et al. 2020) and
      Hyperband over it; min_resource is the environment step of the first rung.
    none: never prune.
    """
    optuna = import_optuna()
    settings = dict(settings or {})
    name = settings.get("name", "median")
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=settings.get("n_startup_trials", 5),
            n_warmup_steps=settings.get("n_warmup_steps", 0),
            interval_steps=settings.get("interval_steps", 1),
        )
    min_resource = settings.get("min_resource", "auto")
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=min_resource,
            reduction_factor=settings.get("reduction_factor") or 4,
            min_early_stopping_rate=settings.get("min_early_stopping_rate", 0),
        )
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1 if min_resource == "auto" else min_resource,
            max_resource=settings.get("max_resource", "auto"),
            reduction_factor=settings.get("reduction_factor") or 3,
        )
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"hydra.sweeper.pruner.name={name!r} is not valid; choose one of: {', '.join(PRUNERS)}")


class TrialReporter:
    """Reports a run's evaluations to its Optuna trial and stops the run when it is pruned."""

    def __init__(self, trial: TrialConfig) -> None:
        optuna = import_optuna()
        self.number = trial.number
        storage = open_storage(trial.storage)
        try:
            study = optuna.load_study(study_name=trial.study_name, storage=storage, sampler=optuna.samplers.RandomSampler())
            study_id = storage.get_study_id_from_name(trial.study_name)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        except KeyError as error:
            raise ConfigError(
                f"trial.study_name={trial.study_name!r}, trial.number={trial.number}: no such trial in {trial.storage} "
                f"({error}); trial.* is set by hydra/sweeper=rlrun_optuna, not by hand"
            ) from None
        settings = study.user_attrs.get(PRUNER_ATTR, {"name": "none"})
        study.pruner = make_pruner(settings)
        self.pruner_name = settings.get("name", "median")
        state = storage.get_trial(trial_id).state
        if state != optuna.trial.TrialState.RUNNING:
            # e.g. a finished trial's folder run again by hand: train, but leave the study as it is
            log.warning("Optuna trial %d is already %s; this run reports nothing to its study", trial.number, state.name)
            self._trial = None
        else:
            self._trial = optuna.trial.Trial(study, trial_id)

    def report(self, step: int, value: float) -> str | None:
        """Record the evaluation at environment step `step`. Returns why the trial is pruned
        if the study's pruner stops it here (the run then stops), else None."""
        if self._trial is None:
            return None
        self._trial.report(value, step)  # a step already reported (a resumed run) is ignored
        if not self._trial.should_prune():
            return None
        shown = f"{value:.1f}" if math.isfinite(value) else str(value)
        return f"Optuna trial {self.number} pruned by the {self.pruner_name} pruner at step {step} (eval return {shown})"
