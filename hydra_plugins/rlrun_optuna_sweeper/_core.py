"""The Optuna study behind `hydra/sweeper=rlrun_optuna`, on Optuna's ask-and-tell API.

1. The search space: configs/search/<algo>.yaml (or hydra.sweeper.search), then
   hydra.sweeper.params, then sweeps on the command line (`'algo.lr=tag(log,interval(1e-5,1e-2))'`).
2. Every corner of it (each choice, each bound) is composed and validated as rlrun's preflight
   does, so a bad key or value stops the sweep before any trial starts.
3. The study lives in SQLite in the sweep folder; running the same command again loads it,
   reruns the trials an interruption left unfinished (in their own folders, from their latest
   checkpoint), and asks new ones until n_trials have finished.
4. Trials go out n_jobs at a time through the configured launcher; each job reports its
   evaluations to its trial (rlrun/core/tuning.py), where the pruner may stop it. Each job's
   summary tells the study: COMPLETE with the final eval_return_mean, PRUNED, or FAIL.
5. At the end: <sweep dir>/optuna/best.yaml, a config that `rlrun` runs as it stands.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from rlrun.config import ConfigError
from rlrun.core.tuning import PRUNER_ATTR, import_optuna, make_pruner, open_storage

log = logging.getLogger(__name__)

TRIAL_KEY = "trial"  # trial={storage: ..., study_name: ..., number: N}: one override (the key is null by default)
BEST_GROUP = "optuna"  # <sweep dir>/optuna/best.yaml is the config `+optuna=best`
_MAX_ERRORS = 20


def run_study(sweeper: Any, arguments: list[str]) -> list[Sequence[JobReturn]]:
    """The sweeper's `sweep`: a config mistake gets one line per problem and exit code 2."""
    try:
        return _Study(sweeper, arguments).run()
    except ConfigError as error:
        print(f"rlrun: error: {error}", file=sys.stderr)
        sys.exit(2)


# ----------------------------------------------------------------------------- search space


@dataclass
class SearchSpace:
    """Optuna distributions by config key, and the fixed overrides every trial gets."""

    distributions: dict[str, Any] = field(default_factory=dict)
    fixed: list[str] = field(default_factory=list)


def render(value: Any) -> str:
    """A value as the right-hand side of a Hydra override."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(render(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{render(v)}" for k, v in value.items()) + "}"
    return str(value)


def _choice(value: Any) -> Any:
    """A categorical choice as Optuna can store it: lists and mappings become override text."""
    return render(value) if isinstance(value, (list, tuple, Mapping)) else value


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'algo': {'lr': spec}} and {'algo.lr': spec} alike → {'algo.lr': spec}; a mapping with a
    `type` key is a distribution, not a level."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and "type" not in value and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def distribution(key: str, spec: Any, parser: OverridesParser) -> Any:
    """An Optuna distribution, or a str (a fixed override `key=value`) for a plain value.

    Forms: {type: float|int, low, high, log, step}, {type: categorical, choices: [...]},
    a list (categorical), or Hydra's sweep syntax as a string: interval(a, b),
    tag(log, interval(a, b)), int(interval(a, b)), range(a, b[, step]), choice(a, b, ...).
    """
    optuna = import_optuna()
    where = f"search space '{key}'"
    if isinstance(spec, Mapping):
        kind = spec.get("type")
        extra = set(spec) - {"type", "low", "high", "log", "step", "choices"}
        if extra:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(extra))}; use type, low, high, log, step, choices")
        try:
            if kind == "float":
                return optuna.distributions.FloatDistribution(
                    float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False)), step=spec.get("step")
                )
            if kind == "int":
                return optuna.distributions.IntDistribution(
                    int(spec["low"]), int(spec["high"]), log=bool(spec.get("log", False)), step=int(spec.get("step") or 1)
                )
            if kind == "categorical":
                return optuna.distributions.CategoricalDistribution([_choice(c) for c in spec["choices"]])
        except KeyError as missing:
            raise ConfigError(f"{where}: type {kind} needs {missing}") from None
        except ValueError as error:
            raise ConfigError(f"{where}: {error}") from None
        raise ConfigError(f"{where}: type={kind!r} is not valid; choose one of: float, int, categorical")
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise ConfigError(f"{where}: an empty list of choices")
        return optuna.distributions.CategoricalDistribution([_choice(c) for c in spec])
    if isinstance(spec, str):
        try:
            override = parser.parse_override(f"{key}={spec}")
        except HydraException as error:
            raise ConfigError(f"{where}: {spec!r} is not valid: {str(error).strip().splitlines()[0]}") from None
        if override.is_sweep_override():
            return from_sweep(override)
        return f"{key}={spec}"
    return f"{key}={render(spec)}"


def from_sweep(override: Override) -> Any:
    """The Optuna distribution of a Hydra sweep override (as hydra-optuna-sweeper reads them)."""
    optuna = import_optuna()
    value = override.value()
    key = override.get_key_element()
    if isinstance(value, ChoiceSweep):
        return optuna.distributions.CategoricalDistribution([_choice(c) for c in value.list])
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        if all(isinstance(v, int) for v in (start, stop, step)) and step > 0 and stop > start:
            return optuna.distributions.IntDistribution(start, start + (stop - 1 - start) // step * step, step=step)
        return optuna.distributions.CategoricalDistribution(list(override.sweep_iterator()))
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return optuna.distributions.IntDistribution(value.start, value.end, log=log_scale)
        return optuna.distributions.FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise ConfigError(f"search space '{key}': {override.input_line!r} is not a sweep Optuna can sample")


def corners(dist: Any) -> list[Any]:
    """The values the preflight composes for a distribution: each choice, or both bounds."""
    if hasattr(dist, "choices"):
        return list(dist.choices)
    return [dist.low, dist.high] if dist.low != dist.high else [dist.low]


# ----------------------------------------------------------------------------- the study


class _Study:
    def __init__(self, sweeper: Any, arguments: list[str]) -> None:
        self.sweeper = sweeper
        self.settings = {
            k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v for k, v in sweeper.settings.items()
        }
        self.config: DictConfig = sweeper.config
        self.loader = sweeper.hydra_context.config_loader
        self.parser = OverridesParser.create(config_loader=self.loader)
        self.sweep_dir = Path(str(self.config.hydra.sweep.dir))
        self.arguments = arguments
        self.optuna = import_optuna()
        for key in ("n_trials", "n_jobs"):
            if not isinstance(self.settings[key], int) or self.settings[key] < 1:
                raise ConfigError(f"hydra.sweeper.{key}={self.settings[key]!r} must be a positive integer")
        if self.settings["direction"] not in ("maximize", "minimize"):
            raise ConfigError(
                f"hydra.sweeper.direction={self.settings['direction']!r} is not valid; choose one of: maximize, minimize"
            )
        self.space = self.search_space()
        self.storage_url = self.settings["storage"] or f"sqlite:///{(self.sweep_dir / 'optuna' / 'study.db').absolute()}"
        self.study_name = self.settings["study_name"]

    # -- the search space and its preflight

    def search_space(self) -> SearchSpace:
        entries = self.search_file()
        for key, spec in flatten(self.settings["params"] or {}).items():
            if spec is None:
                entries.pop(key, None)
            else:
                entries[key] = spec
        space = SearchSpace()
        for override in self.parser.parse_overrides(self.arguments):
            if override.is_sweep_override():
                entries[override.get_key_element()] = override
            else:
                space.fixed.append(override.input_line)
        for key, spec in entries.items():
            dist = from_sweep(spec) if isinstance(spec, Override) else distribution(key, spec, self.parser)
            if isinstance(dist, str):
                space.fixed.append(dist)
            else:
                space.distributions[key] = dist
        if not space.distributions:
            raise ConfigError(
                "the search space is empty: add configs/search/<algo>.yaml or hydra.sweeper.search=<file>, "
                "hydra.sweeper.params, or sweeps on the command line such as 'algo.lr=tag(log,interval(1e-5,1e-2))'"
            )
        return space

    def search_file(self) -> dict[str, Any]:
        name = self.settings["search"]
        if name is None:
            return {}
        if name.endswith((".yaml", ".yml")) or os.sep in name:
            path = Path(name)
            if not path.is_file():
                raise ConfigError(f"hydra.sweeper.search={name}: no such file")
            return flatten(OmegaConf.to_container(OmegaConf.load(path), resolve=True))
        result = self.loader.repository.load_config(f"search/{name}")
        if result is None:
            algo = OmegaConf.select(self.config, "algo.name")
            if name == algo:  # the default, for an algorithm without a search file: params or the command line must say
                return {}
            options = ", ".join(self.loader.repository.get_group_options("search"))
            raise ConfigError(
                f"hydra.sweeper.search={name}: no configs/search/{name}.yaml; choose one of: {options}, or give a path to a yaml file"
            )
        return flatten(OmegaConf.to_container(result.config, resolve=True))

    def preflight(self) -> None:
        """Compose and validate the jobs at every corner of the space (each choice, each bound,
        one key at a time); exit 2 with a line per bad job before any trial starts."""
        from rlrun.core.plan import validate

        dists = self.space.distributions
        base = {key: corners(dist)[0] for key, dist in dists.items()}
        jobs = [base] + [{**base, key: value} for key, dist in dists.items() for value in corners(dist)[1:]]
        errors: list[str] = []
        for i, params in enumerate(jobs):
            overrides = [*self.space.fixed, *self.param_overrides(params)]
            try:
                cfg = self.loader.load_sweep_config(self.config, overrides)
                with open_dict(cfg):
                    cfg.pop("hydra")
                validate(cfg)
            except (ConfigError, HydraException, OmegaConfBaseException) as error:
                line = f"search space at {' '.join(self.param_overrides(params))}: {_describe(error, overrides)}"
                if line not in errors:
                    errors.append(line)
                if i == 0:  # the base job is bad (an unknown key, say): so is every other
                    break
        if errors:
            for line in errors[:_MAX_ERRORS]:
                print(f"rlrun: error: {line}", file=sys.stderr)
            if len(errors) > _MAX_ERRORS:
                print(f"rlrun: error: ... and {len(errors) - _MAX_ERRORS} more", file=sys.stderr)
            sys.exit(2)

    def param_overrides(self, params: Mapping[str, Any]) -> list[str]:
        return [f"{key}={render(params[key])}" for key in self.space.distributions if key in params]

    # -- the loop

    def run(self) -> list[Sequence[JobReturn]]:
        optuna = self.optuna
        self.preflight()
        (self.sweep_dir / "optuna").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")
        self.storage = open_storage(self.storage_url)
        pruner_settings = self.settings["pruner"]
        try:
            self.study = optuna.create_study(
                storage=self.storage,
                study_name=self.study_name,
                sampler=self.make_sampler(),
                pruner=make_pruner(pruner_settings),
                direction=self.settings["direction"],
                load_if_exists=True,
            )
        except ValueError as error:
            raise ConfigError(f"Optuna study {self.study_name!r} in {self.storage_url}: {error}") from None
        self.study_id = self.storage.get_study_id_from_name(self.study_name)
        self.study.set_user_attr(PRUNER_ATTR, pruner_settings)  # what each job's TrialReporter prunes with
        self.enqueue()

        states = optuna.trial.TrialState
        finished = len(self.study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED, states.FAIL)))
        # Trials an interrupted sweep left running: rerun, same number, same folder (so from its checkpoint).
        pending = [(t.number, dict(t.params)) for t in self.study.get_trials(deepcopy=False, states=(states.RUNNING,))]
        if pending:
            log.info("Optuna study %r: rerunning unfinished trial(s) %s", self.study_name, ", ".join(str(n) for n, _ in pending))
        log.info(
            "Optuna study %r (%s): %d of %d trials finished, %d per batch, %s pruner",
            self.study_name,
            self.storage_url,
            finished,
            self.settings["n_trials"],
            self.settings["n_jobs"],
            pruner_settings["name"],
        )
        returns: list[Sequence[JobReturn]] = []
        n_jobs = self.settings["n_jobs"]
        while True:
            batch, pending = pending[:n_jobs], pending[n_jobs:]
            room = self.settings["n_trials"] - finished - len(batch) - len(pending)
            for _ in range(min(n_jobs - len(batch), max(room, 0))):
                trial = self.ask()
                batch.append((trial.number, trial.params))
            if not batch:
                break
            results = self.launch(batch)
            for (number, _), result in zip(batch, results):
                self.tell(number, result)
            finished += len(batch)
            returns.append(results)
        self.report()
        return returns

    def make_sampler(self) -> Any:
        settings = self.settings["sampler"]
        samplers = self.optuna.samplers
        if settings["name"] == "tpe":
            return samplers.TPESampler(
                seed=settings["seed"], n_startup_trials=settings["n_startup_trials"], multivariate=settings["multivariate"]
            )
        if settings["name"] == "random":
            return samplers.RandomSampler(seed=settings["seed"])
        raise ConfigError(f"hydra.sweeper.sampler.name={settings['name']!r} is not valid; choose one of: tpe, random")

    def enqueue(self) -> None:
        """Trials from hydra.sweeper.enqueue, unless the study already has them."""
        for i, entry in enumerate(self.settings["enqueue"] or []):
            params = flatten(entry)
            unknown = [key for key in params if key not in self.space.distributions]
            if unknown:
                raise ConfigError(
                    f"hydra.sweeper.enqueue[{i}]: {', '.join(unknown)} not in the search space "
                    f"({', '.join(self.space.distributions)})"
                )
            self.study.enqueue_trial({key: _choice(value) for key, value in params.items()}, skip_if_exists=True)

    def ask(self) -> Any:
        try:
            trial = self.study.ask(fixed_distributions=self.space.distributions)
        except ValueError as error:  # e.g. a key's distribution changed since the study began
            raise ConfigError(
                f"Optuna study {self.study_name!r} in {self.storage_url}: {error}; a changed search space needs a new "
                "hydra.sweep.dir (or hydra.sweeper.study_name)"
            ) from None
        return trial

    def overrides(self, number: int, params: Mapping[str, Any]) -> list[str]:
        excluded = list(OmegaConf.select(self.config, "hydra.job.config.override_dirname.exclude_keys", default=[]) or [])
        return [
            *self.space.fixed,
            *self.param_overrides(params),
            f"{TRIAL_KEY}={{storage:{_quote(self.storage_url)},study_name:{_quote(self.study_name)},number:{number}}}",
            # job folders are named after the searched values, not the trial bookkeeping
            f"hydra.job.config.override_dirname.exclude_keys=[{','.join([*excluded, TRIAL_KEY])}]",
        ]

    def launch(self, batch: list[tuple[int, Mapping[str, Any]]]) -> list[JobReturn]:
        """Launch the batch with the configured launcher; job number = trial number, so that a
        trial's folder is the same when an interrupted sweep reruns it."""
        results: list[JobReturn] = []
        for run in _consecutive(sorted(batch, key=lambda item: item[0])):
            job_overrides = [self.overrides(number, params) for number, params in run]
            self.sweeper.validate_batch_is_legal(job_overrides)
            results.extend(self.sweeper.launcher.launch(job_overrides, initial_job_idx=run[0][0]))
        order = {number: i for i, (number, _) in enumerate(sorted(batch, key=lambda item: item[0]))}
        return [results[order[number]] for number, _ in batch]

    def tell(self, number: int, result: JobReturn) -> None:
        """COMPLETE with the run's final eval return, PRUNED, or FAIL, from the job's summary."""
        states = self.optuna.trial.TrialState
        summary = result._return_value if result.status == JobStatus.COMPLETED else None
        status = summary.get("status") if isinstance(summary, Mapping) else None
        value = summary.get("eval_return_mean") if isinstance(summary, Mapping) else None
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        run_dir = OmegaConf.select(result.hydra_cfg, "hydra.runtime.output_dir") if result.hydra_cfg is not None else None
        if run_dir:
            self.storage.set_trial_user_attr(trial_id, "run_dir", str(run_dir))
        if status == "completed" and isinstance(value, (int, float)) and math.isfinite(value):
            self.study.tell(number, float(value), skip_if_finished=True)
            log.info("trial %d completed: eval return %.2f", number, value)
        elif status == "pruned":
            self.study.tell(number, state=states.PRUNED, skip_if_finished=True)
            log.info("trial %d pruned at step %s", number, summary.get("total_steps"))
        else:
            error = result._return_value if result.status == JobStatus.FAILED else (summary or {}).get("error", status)
            self.study.tell(number, state=states.FAIL, skip_if_finished=True)
            log.warning("trial %d failed: %s", number, error or "the job returned no summary (see its rlrun.log)")

    # -- the result

    def report(self) -> None:
        states = self.optuna.trial.TrialState
        trials = self.study.get_trials(deepcopy=False)
        count = {state: sum(t.state == state for t in trials) for state in (states.COMPLETE, states.PRUNED, states.FAIL)}
        line = (
            f"Optuna study {self.study_name!r}: {len(trials)} trials, {count[states.COMPLETE]} completed, "
            f"{count[states.PRUNED]} pruned, {count[states.FAIL]} failed"
        )
        if count[states.COMPLETE] == 0:
            print(f"{line}; no completed trial, so no best config")
            return
        best = self.study.best_trial
        path = self.write_best(best, len(trials))
        params = " ".join(self.param_overrides(best.params))
        print(f"{line}; best: trial {best.number}, eval return {best.value:.2f} with {params}")
        print(f"best config: {path}; run it with:\n  {self.best_command()}")

    def best_command(self) -> str:
        return f"rlrun 'hydra.searchpath=[file://{self.sweep_dir}]' +{BEST_GROUP}=best"

    def write_best(self, best: Any, n_trials: int) -> Path:
        """<sweep dir>/optuna/best.yaml: the best trial's whole command line as a config.

        Config-group choices (algo=sac) become `override /algo: sac` in its defaults list and
        values its body, so `+optuna=best` applies them after every other config file (tuned,
        experiment) and before command-line overrides, as the trial had them."""
        defaults, body, skipped = [], OmegaConf.create({}), []
        for override in self.parser.parse_overrides([*self.space.fixed, *self.param_overrides(best.params)]):
            key = override.key_or_group
            if override.is_delete() or override.package is not None:
                skipped.append(override.input_line)
            elif self.loader.repository.group_exists(key):
                defaults.append(f"  - {'' if override.is_add() else 'override '}/{key}: {render(override.value())}")
            else:
                OmegaConf.update(body, key, override.value(), force_add=True)
        run_dir = best.user_attrs.get("run_dir")
        header = [
            "# @package _global_",
            f"# The best trial of Optuna study '{self.study_name}' ({self.storage_url}),",
            f"# written by hydra/sweeper=rlrun_optuna after {n_trials} trials: trial {best.number},",
            f"# eval_return_mean {best.value:.4g} ({self.settings['direction']}){f', run folder {run_dir}' if run_dir else ''}.",
            f"# Run it from {Path.cwd()} (more key=value overrides may follow, e.g. seed=1):",
            f"#   {self.best_command()}",
            "# To keep these values for an algorithm × environment pair, copy the body into",
            "# configs/tuned/<algo>-<env>.yaml.",
        ]
        header += [f"# (not carried over: {line})" for line in skipped]
        text = "\n".join(header) + "\n"
        if defaults:
            text += "defaults:\n" + "\n".join(defaults) + "\n  - _self_\n"
        if len(body):
            text += OmegaConf.to_yaml(body)
        path = self.sweep_dir / BEST_GROUP / "best.yaml"
        path.write_text(text)
        return path


def _consecutive(batch: list[tuple[int, Any]]) -> Iterable[list[tuple[int, Any]]]:
    """Runs of consecutive trial numbers (a launcher numbers a launch's jobs consecutively)."""
    run: list[tuple[int, Any]] = []
    for item in batch:
        if run and item[0] != run[-1][0] + 1:
            yield run
            run = []
        run.append(item)
    if run:
        yield run


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _describe(error: Exception, overrides: list[str]) -> str:
    """One line for a composition or validation error, as rlrun's own preflight words it."""
    try:
        from rlrun.commands.train import describe_error as describe

        return describe(error, overrides)
    except Exception:  # noqa: BLE001 - wording only; never hide the error itself
        return str(error).strip().splitlines()[0]
