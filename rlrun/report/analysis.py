"""Runs grouped and summarised: per group and environment, the final and late-training
returns across seeds and the learning curve; across environments, normalised aggregates,
performance profiles and probabilities of improvement."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

from rlrun.config import ConfigError
from rlrun.report import stats
from rlrun.report.references import Reference, ReferenceScore
from rlrun.report.runs import RunRecord, is_setting

PROFILE_POINTS = 101


@dataclass(frozen=True)
class Options:
    group_by: tuple[str, ...] | None = None
    """Settings that tell groups apart; None: algo and every overridden key whose value differs."""
    last_fraction: float = 0.1
    """The late-training score: each run's mean evaluation return over its last fraction of steps."""
    resamples: int = 2000
    seed: int = 0
    reference: Reference | None = None


@dataclass(frozen=True)
class Curve:
    steps: np.ndarray  # the common grid: the group's evaluation steps up to its shortest run's last
    iqm: stats.Estimate  # over seeds at each step


@dataclass(frozen=True)
class Cell:
    """One group on one environment."""

    group: str
    env_id: str
    runs: list[RunRecord]
    finals: np.ndarray  # each run's last evaluation return
    lasts: np.ndarray  # each run's mean evaluation return over the last fraction of its steps
    final: stats.Estimate  # IQM of finals
    last: stats.Estimate  # IQM of lasts
    curve: Curve

    @property
    def algo(self) -> Any:
        return self.runs[0].settings.get("algo", self.runs[0].settings.get("algo.name"))


@dataclass(frozen=True)
class Improvement:
    x: str
    y: str
    envs: int
    probability: stats.Estimate  # P(X > Y)


@dataclass
class Report:
    options: Options
    group_keys: tuple[str, ...]
    groups: list[str]
    envs: list[str]
    cells: dict[tuple[str, str], Cell]  # (env_id, group) → cell
    runs: list[RunRecord]
    skipped: list[RunRecord] = field(default_factory=list)  # no evaluation yet
    duplicates: list[RunRecord] = field(default_factory=list)  # a seed already counted in their group
    aggregates: dict[str, dict[str, stats.Estimate]] = field(default_factory=dict)  # group → statistic → estimate
    aggregate_envs: dict[str, list[str]] = field(default_factory=dict)
    profile_thresholds: np.ndarray | None = None
    profiles: dict[str, stats.Estimate] = field(default_factory=dict)
    improvements: list[Improvement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def env_cells(self, env_id: str) -> list[Cell]:
        return [self.cells[(env_id, group)] for group in self.groups if (env_id, group) in self.cells]

    def references(self, env_id: str) -> list[ReferenceScore]:
        """The reference scores drawn for an environment: those of the algorithms in the report,
        or the normaliser when none of them has one."""
        reference = self.options.reference
        if reference is None:
            return []
        algos = {str(cell.algo) for cell in self.env_cells(env_id)}
        matching = [score for score in reference.for_task(env_id) if score.algo in algos]
        best = reference.normaliser(env_id)
        return matching or ([best] if best else [])


def setting(run: RunRecord, key: str) -> Any:
    if key in run.settings:
        return run.settings[key]
    return run.settings.get(f"{key}.name")  # a group chosen without hydra.yaml at hand: its name field


def _differing(runs: list[RunRecord], keys: list[str]) -> list[str]:
    return [key for key in keys if len({repr(setting(run, key)) for run in runs}) > 1]


def group_keys(runs: list[RunRecord], requested: tuple[str, ...] | None) -> tuple[str, ...]:
    """The settings whose values name a group. By default algo, the overridden settings whose
    values differ, and then any other setting that still differs between runs of one group on
    one environment, so that runs pooled as seeds differ in their seed alone. A requested
    group_by is taken as it is (analyse notes what it pools)."""
    if requested is None:
        overridden = sorted({key for run in runs for key in run.overridden} - {"algo"})
        keys = ["algo", *_differing(runs, [key for key in overridden if is_setting(key)])]
        return (*keys, *hidden_differences(runs, tuple(keys)))
    known = sorted({key for run in runs for key in run.settings} | {"algo"})
    for key in requested:
        if key == "seed":
            raise ConfigError("report.group_by cannot hold seed: a group's statistics are taken over its seeds")
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            examples = sorted({k for run in runs for k in run.overridden if is_setting(k)} | {"algo"})
            hint = f"did you mean {close[0]}? " if close else ""
            raise ConfigError(
                f"report.group_by: these runs have no setting {key!r}; {hint}use a config key or group, "
                f"e.g. {', '.join(examples[:8])}"
            )
    return requested


def hidden_differences(runs: list[RunRecord], keys: tuple[str, ...]) -> list[str]:
    """Settings (sorted) that differ between runs that `keys` put in one group on one environment."""
    cells: dict[tuple[str, str], list[RunRecord]] = {}
    for run in runs:
        cells.setdefault((run.env_id, _label(run, keys)), []).append(run)
    found: set[str] = set()
    for members in cells.values():
        candidates = sorted({key for run in members for key in run.settings if is_setting(key)} - set(keys))
        found.update(_differing(members, candidates))
    return sorted(found)


def _label(run: RunRecord, keys: tuple[str, ...]) -> str:
    def text(value: Any) -> str:
        return f"[{','.join(map(str, value))}]" if isinstance(value, tuple) else str(value)

    return " ".join(f"{key}={text(setting(run, key))}" for key in keys) or "all runs"


def late_score(run: RunRecord, fraction: float) -> float:
    """Mean evaluation return over the evaluations in the last `fraction` of the run's steps
    (its last evaluation always among them)."""
    end = run.steps[-1]
    late = run.steps > (1 - fraction) * end
    late[-1] = True
    return float(run.returns[late].mean())


def learning_curve(runs: list[RunRecord], bootstrap: stats.Bootstrap) -> Curve:
    """IQM across runs on a common grid: the union of the runs' evaluation steps from the latest
    first evaluation to the earliest last one, each run interpolated linearly between its own
    evaluations and never beyond them."""
    start = max(run.steps[0] for run in runs)
    end = min(run.steps[-1] for run in runs)
    grid = np.unique(np.concatenate([run.steps for run in runs]))
    grid = grid[(grid >= start) & (grid <= end)]
    values = np.stack([np.interp(grid, run.steps, run.returns) for run in runs], axis=-1)  # (steps, runs)
    return Curve(grid, bootstrap.estimate(stats.iqm, values))


def analyse(
    runs: list[RunRecord], options: Options, skipped: list[RunRecord] | None = None, unreadable: list[str] | None = None
) -> Report:
    """The report of `runs`; `skipped` (runs without an evaluation) and `unreadable` (a line
    for each run whose files are damaged) are named in its notes."""
    bootstrap = stats.Bootstrap(resamples=options.resamples, seed=options.seed)
    keys = group_keys(runs, options.group_by)
    labels = {run.folder: _label(run, keys) for run in runs}
    groups = list(dict.fromkeys(labels[run.folder] for run in sorted(runs, key=lambda r: _label(r, keys))))
    envs = list(dict.fromkeys(run.env_id for run in runs))
    report = Report(options, keys, groups, envs, {}, runs, list(skipped or []))
    if options.group_by is not None and (pooled := hidden_differences(runs, keys)):
        named = ", ".join(pooled[:8]) + (f" and {len(pooled) - 8} more settings" if len(pooled) > 8 else "")
        report.notes.append(
            f"runs grouped together differ in {named}, which report.group_by leaves out: they are "
            "pooled as seeds of one group; leave report.group_by out to tell them apart"
        )
    for env_id in envs:
        for group in groups:
            members = [run for run in runs if run.env_id == env_id and labels[run.folder] == group]
            if not members:
                continue
            members = _one_run_per_seed(members, f"{env_id}, {group}", report)
            finals = np.array([run.returns[-1] for run in members])
            lasts = np.array([late_score(run, options.last_fraction) for run in members])
            report.cells[(env_id, group)] = Cell(
                group,
                env_id,
                members,
                finals,
                lasts,
                bootstrap.estimate(stats.iqm, finals),
                bootstrap.estimate(stats.iqm, lasts),
                learning_curve(members, bootstrap),
            )
            ends = sorted({int(run.steps[-1]) for run in members})
            if len(ends) > 1:
                report.notes.append(
                    f"{env_id}, {group}: runs end at different steps ({', '.join(map(str, ends))}); final scores are each "
                    f"run's last evaluation, and the curve stops at step {ends[0]}, where its shortest run ends"
                )
    unfinished = [run for run in runs if run.status != "completed"]
    if unfinished:
        report.notes.append(
            f"{len(unfinished)} run(s) not completed, counted with their evaluations so far: "
            + ", ".join(f"{run.name} ({run.status})" for run in unfinished)
        )
    if report.skipped:
        report.notes.append(
            f"{len(report.skipped)} run(s) left out, with no evaluation yet: " + ", ".join(run.name for run in report.skipped)
        )
    if unreadable:
        report.notes.append(f"{len(unreadable)} run(s) left out, which cannot be read: " + "; ".join(unreadable))
    _across_environments(report, bootstrap)
    _improvements(report, bootstrap)
    return report


def _one_run_per_seed(members: list[RunRecord], where: str, report: Report) -> list[RunRecord]:
    """A group's runs with each seed once: of runs sharing a seed, the one that trained
    furthest (then a completed one, then the first found) counts; the others are left out
    with a note, since the same seed and settings repeat one sample rather than add one."""
    by_seed: dict[int, list[RunRecord]] = {}
    for run in members:
        by_seed.setdefault(run.seed, []).append(run)
    kept = []
    for seed, same in by_seed.items():
        best = max(same, key=lambda run: (int(run.steps[-1]), run.status == "completed"))  # max keeps the first of ties
        kept.append(best)
        if len(same) > 1:
            others = [run for run in same if run is not best]
            report.duplicates.extend(others)
            why = "trained furthest" if any(run.steps[-1] < best.steps[-1] for run in others) else "first found"
            report.notes.append(
                f"{where}: seed {seed} appears in {len(same)} runs; counted once, as {best.folder} ({why}), "
                f"left out: {', '.join(str(run.folder) for run in others)}"
            )
    return kept


def _across_environments(report: Report, bootstrap: stats.Bootstrap) -> None:
    """Normalised scores aggregated over environments, and performance profiles; needs a
    reference with a score for every environment."""
    reference = report.options.reference
    if len(report.envs) < 2 or reference is None:
        return
    lacking = [env_id for env_id in report.envs if reference.normaliser(env_id) is None]
    if lacking:
        raise ConfigError(
            f"the runs span {len(report.envs)} environments and report.reference={reference.name} has no score for "
            f"{', '.join(lacking)}, so their returns cannot be normalised and aggregated; choose another "
            "report.reference=<name or .csv>, or report.reference=none for per-environment results only"
        )
    normalised: dict[str, list[np.ndarray]] = {}
    for group in report.groups:
        cells = [report.cells[(env_id, group)] for env_id in report.envs if (env_id, group) in report.cells]
        normalised[group] = [reference.normalise(cell.env_id, cell.finals) for cell in cells]
        report.aggregate_envs[group] = [cell.env_id for cell in cells]
        report.aggregates[group] = {
            name: bootstrap.estimate(statistic, normalised[group]) for name, statistic in stats.AGGREGATES.items()
        }
        if len(cells) < len(report.envs):
            report.notes.append(
                f"{group} has runs on {len(cells)} of the {len(report.envs)} environments; its aggregates cover those"
            )
    everything = np.concatenate([score for scores in normalised.values() for score in scores])
    report.profile_thresholds = np.linspace(min(0.0, everything.min()), max(1.0, everything.max()), PROFILE_POINTS)
    report.profiles = {group: bootstrap.profile(scores, report.profile_thresholds) for group, scores in normalised.items()}


def _improvements(report: Report, bootstrap: stats.Bootstrap) -> None:
    """P(X > Y) of final returns for every pair of groups, over the environments both ran on.
    Per-environment comparisons need no normalisation."""
    for x, y in combinations(report.groups, 2):
        shared = [env_id for env_id in report.envs if (env_id, x) in report.cells and (env_id, y) in report.cells]
        if shared:
            xs = [report.cells[(env_id, x)].finals for env_id in shared]
            ys = [report.cells[(env_id, y)].finals for env_id in shared]
            report.improvements.append(Improvement(x, y, len(shared), bootstrap.improvement(xs, ys)))
