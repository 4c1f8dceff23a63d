"""Settings of `hydra/sweeper=rlrun_optuna`, each overridable as `hydra.sweeper.<key>=...`."""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class SamplerConf:
    # tpe (Optuna's default, as RL Zoo uses) or random.
    name: str = "tpe"
    # null: a different sequence each time; an integer makes the sampled values reproducible.
    seed: int | None = None
    # tpe: trials sampled at random before TPE starts modelling the good region.
    n_startup_trials: int = 10
    # tpe: model the parameters jointly (RL Zoo does; Optuna marks it experimental).
    multivariate: bool = False


@dataclass
class PrunerConf:
    # median, successive_halving, hyperband, or none. Steps are environment steps: a trial
    # reports each evaluation (every eval.every steps) and is pruned there.
    name: str = "median"
    # median: completed trials needed before any trial is pruned.
    n_startup_trials: int = 5
    # median: no pruning at evaluations before this environment step.
    n_warmup_steps: int = 0
    # median: consider pruning at every evaluation (1), or every interval_steps steps.
    interval_steps: int = 1
    # successive_halving, hyperband: environment step of the first rung ("auto": 1/100 of the
    # first finished trial's last step for successive_halving, 1 for hyperband).
    min_resource: Any = "auto"
    # successive_halving (Optuna's default 4) and hyperband (3): 1/reduction_factor of the trials
    # reaching a rung go on; null takes the pruner's default.
    reduction_factor: int | None = None
    # successive_halving: skip this many first rungs.
    min_early_stopping_rate: int = 0
    # hyperband: the last step of a trial ("auto": the first finished trial's).
    max_resource: Any = "auto"


@dataclass
class RlrunOptunaSweeperConf:
    _target_: str = "hydra_plugins.rlrun_optuna_sweeper.optuna_sweeper.RlrunOptunaSweeper"
    # Trials the study runs in all, counting those finished by earlier runs of the same command
    # (same hydra.sweep.dir): rerun with a larger n_trials to search on.
    n_trials: int = 20
    # Trials asked for and launched together, through whichever launcher is configured
    # (hydra/launcher=joblib, slurm, ray, ...); each batch is told before the next is asked.
    n_jobs: int = 1
    # maximize the final evaluation's mean return (summary.json's eval_return_mean).
    direction: str = "maximize"
    study_name: str = "rlrun"
    # An Optuna storage URL; null: sqlite:///<hydra.sweep.dir>/optuna/study.db, which makes the
    # same command resume the study. Jobs on other machines need a URL they reach as well
    # (a shared file system, or e.g. postgresql://...).
    storage: str | None = None
    # The search space file: configs/search/<search>.yaml (default: the algorithm's), or a path
    # to a yaml file; null: none (only params and command-line sweeps).
    search: str | None = "${algo.name}"
    # Search-space entries added to (or replacing, per key) the file's: key -> distribution,
    # in the same forms (see configs/search/sac.yaml); null removes a key from the space.
    params: dict[str, Any] = field(default_factory=dict)
    # Trials to run first, each a {key: value} mapping of search-space keys (e.g. the current
    # settings, or known good ones); enqueued once, when the study is created.
    enqueue: list[dict[str, Any]] = field(default_factory=list)
    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: PrunerConf = field(default_factory=PrunerConf)


ConfigStore.instance().store(group="hydra/sweeper", name="rlrun_optuna", node=RlrunOptunaSweeperConf, provider="rlrun")
