"""The report's section on an Optuna search (hydra/sweeper=rlrun_optuna): its trials' values
and Optuna's own parameter importances. Each trial's run names its study in its config
(trial.storage, trial.study_name)."""

from __future__ import annotations

import importlib.util
import logging
from collections import Counter

from rlrun.report.runs import RunRecord

SHOWN_TRIALS = 20


def study_sections(runs: list[RunRecord]) -> list[str]:
    studies = sorted(
        {
            (str(run.settings["trial.storage"]), str(run.settings["trial.study_name"]))
            for run in runs
            if run.settings.get("trial.storage")
        }
    )
    if not studies or importlib.util.find_spec("optuna") is None:
        return []
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    lines: list[str] = []
    for storage, name in studies:
        lines += [f"## Optuna study {name}", ""]
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except Exception as error:  # noqa: BLE001 - a storage moved or gone: the rest of the report stands
            lines += [f"Not readable from {storage}: {error}", ""]
            continue
        lines += _trials(study) + _importances(study)
    return lines


def _trials(study) -> list[str]:
    import optuna

    trials = study.trials
    states = Counter(trial.state.name.lower() for trial in trials)
    lines = [f"{len(trials)} trials: " + ", ".join(f"{count} {state}" for state, count in sorted(states.items())) + "."]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        settings = ", ".join(
            f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}" for key, value in best.params.items()
        )
        lines.append(f"Best: trial {best.number}, value {best.value:.1f} ({settings}).")
    names = sorted({key for trial in trials for key in trial.params})
    ranked = sorted(trials, key=lambda t: (t.value is None, -(t.value or 0.0), t.number))[:SHOWN_TRIALS]
    lines += ["", "| trial | state | value | " + " | ".join(names) + " |", "| ---: | --- | ---: |" + " ---: |" * len(names)]
    for trial in ranked:
        value = "" if trial.value is None else f"{trial.value:.1f}"
        params = " | ".join(_cell(trial.params.get(name)) for name in names)
        lines.append(f"| {trial.number} | {trial.state.name.lower()} | {value} | {params} |")
    if len(trials) > SHOWN_TRIALS:
        lines.append(f"\nThe best {SHOWN_TRIALS} of {len(trials)} trials.")
    return lines + [""]


def _cell(value) -> str:
    return "" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def _importances(study) -> list[str]:
    """Optuna's default evaluator (fANOVA) over the completed trials."""
    import optuna

    try:
        importances = optuna.importance.get_param_importances(study)
    except Exception as error:  # noqa: BLE001 - too few completed trials, or a single value
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return [f"Parameter importances: none ({reason}).", ""]
    lines = [
        "Parameter importances (Optuna's fANOVA over the completed trials):",
        "",
        "| parameter | importance |",
        "| --- | ---: |",
    ]
    lines += [f"| {name} | {value:.3f} |" for name, value in importances.items()]
    return lines + [""]
