"""hydra/sweeper=rlrun_optuna: a tiny real study (PPO on CartPole, seconds per trial) that prunes
a trial that cannot learn, resumes after an interruption without repeating finished trials,
and writes a best config that `rlrun` runs as it stands. Needs the optuna extra."""

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import run_rlrun, run_rlrun_together
from omegaconf import OmegaConf

from rlrun.core.registry import ALGORITHMS

INSTALL = "python -m pip install -c constraints.txt -e '.[optuna]'"
needs_optuna = pytest.mark.skipif(
    importlib.util.find_spec("optuna") is None, reason=f"the optuna extra is not installed: {INSTALL}"
)

TOTAL_STEPS = 4096
# PPO's smoke sizes on CartPole with evaluations at 1024, 2048, 3072 and 4096 steps. With seed 1,
# lr 1e-2 and 5e-3 learn (eval returns about 200 and 100 at step 3072), lr 1e-9 cannot (its
# policy stays the initial one, about 68). The median pruner looks from step 2500 on, once two
# trials have completed, so the lr 1e-9 trial stops at 3072. Later trials are TPE's (seeded).
STUDY = [
    "-m",
    "hydra/sweeper=rlrun_optuna",
    "algo=ppo",
    "env=CartPole",
    "experiment=smoke",
    "seed=1",
    f"total_steps={TOTAL_STEPS}",
    "eval.every=1024",
    "eval.episodes=3",
    "hydra.sweeper.search=null",
    "algo.lr=tag(log,interval(1e-9,1e-2))",
    "hydra.sweeper.enqueue=[{algo.lr: 0.01},{algo.lr: 0.005},{algo.lr: 1.0e-9}]",
    "hydra.sweeper.sampler.seed=0",
    "hydra.sweeper.pruner.n_startup_trials=2",
    "hydra.sweeper.pruner.n_warmup_steps=2500",
]


def trial_folders(sweep_dir):
    """{trial number: its job folder} (job number = trial number)."""
    return {int(p.name.split("-", 1)[0]): p for p in sweep_dir.iterdir() if p.name[0].isdigit()}


def load_study(sweep_dir):
    import optuna

    return optuna.load_study(study_name="rlrun", storage=f"sqlite:///{sweep_dir / 'optuna' / 'study.db'}")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Three trials; then a trial left running, as a killed sweep leaves it; then the same
    command with n_trials=6. Returns what each step saw."""
    import optuna

    sweep_dir = tmp_path_factory.mktemp("optuna") / "sweep"
    first = run_rlrun(*STUDY, f"hydra.sweep.dir={sweep_dir}", "hydra.sweeper.n_trials=3")
    assert first.returncode == 0, first.stderr
    before = {
        n: (p.name, (p / "summary.json").read_text(), (p / "summary.json").stat().st_mtime_ns)
        for n, p in trial_folders(sweep_dir).items()
    }
    first_states = {t.number: t.state.name for t in load_study(sweep_dir).trials}

    # A sweep killed while trial 3 ran leaves it RUNNING in the study.
    interrupted = load_study(sweep_dir)
    interrupted.enqueue_trial({"algo.lr": 0.002})
    left_running = interrupted.ask({"algo.lr": optuna.distributions.FloatDistribution(1e-9, 1e-2, log=True)})

    second = run_rlrun(*STUDY, f"hydra.sweep.dir={sweep_dir}", "hydra.sweeper.n_trials=6")
    assert second.returncode == 0, second.stderr
    return {
        "dir": sweep_dir,
        "first": first,
        "second": second,
        "before": before,
        "first_states": first_states,
        "left_running": left_running.number,
    }


@pytest.mark.slow
@needs_optuna
def test_pruning_stops_a_trial_that_cannot_learn_early(study):
    assert study["first_states"] == {0: "COMPLETE", 1: "COMPLETE", 2: "PRUNED"}
    summary = json.loads((trial_folders(study["dir"])[2] / "summary.json").read_text())
    assert summary["status"] == "pruned" and summary["total_steps"] == 3072 < TOTAL_STEPS
    assert "Optuna trial 2 pruned by the median pruner at step 3072" in (trial_folders(study["dir"])[2] / "rlrun.log").read_text()
    trials = load_study(study["dir"]).trials
    assert trials[2].params == {"algo.lr": 1e-9} and trials[2].last_step == 3072
    assert list(trials[0].intermediate_values) == [1024, 2048, 3072, 4096]  # every evaluation reported
    assert "3 trials, 2 completed, 1 pruned, 0 failed" in study["first"].stdout
    # a pruned trial is no failure for the sweep summary
    assert "pruned" in study["first"].stdout and "rlrun: job" not in study["first"].stderr


@pytest.mark.slow
@needs_optuna
def test_rerunning_the_command_resumes_the_study_without_repeating_trials(study):
    trials = load_study(study["dir"]).trials
    assert [t.number for t in trials] == [0, 1, 2, 3, 4, 5]
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    folders = trial_folders(study["dir"])
    assert sorted(folders) == [0, 1, 2, 3, 4, 5]
    # the first three trials' folders are untouched...
    for number, (name, text, mtime) in study["before"].items():
        assert folders[number].name == name
        assert (folders[number] / "summary.json").read_text() == text
        assert (folders[number] / "summary.json").stat().st_mtime_ns == mtime
    # ...the trial the "killed" sweep left running ran under its own number, then two new ones
    assert study["left_running"] == 3 and trials[3].params == {"algo.lr": 0.002}
    assert folders[3].name.startswith("3-algo.lr=0.002,")
    assert "rerunning unfinished trial(s) 3" in study["second"].stderr + study["second"].stdout
    assert "trial={" not in folders[4].name  # folders are named after the searched values only
    assert all(1e-9 <= t.params["algo.lr"] <= 1e-2 for t in trials)
    assert "6 trials" in study["second"].stdout


@pytest.mark.slow
@needs_optuna
def test_the_best_config_runs_with_rlrun(study, tmp_path):
    best = load_study(study["dir"]).best_trial
    best_file = study["dir"] / "optuna" / "best.yaml"
    text = best_file.read_text()
    command = f"rlrun 'hydra.searchpath=[file://{study['dir']}]' +optuna=best"
    assert command in text and command in study["second"].stdout
    assert "override /algo: ppo" in text and "override /experiment: smoke" in text

    run_dir = tmp_path / "best"
    result = run_rlrun(f"hydra.searchpath=[file://{study['dir']}]", "+optuna=best", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    config = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert config.algo.lr == best.params["algo.lr"] and config.seed == 1 and config.total_steps == TOTAL_STEPS
    assert config.algo.num_steps == 32 and config.trial is None  # experiment=smoke's sizes, no trial
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["eval_return_mean"] == pytest.approx(best.value)  # the same run again


@needs_optuna
def test_a_bad_search_space_stops_the_sweep_before_any_trial(rlrun, tmp_path):
    sweep_dir = tmp_path / "sweep"
    base = [
        "-m",
        "hydra/sweeper=rlrun_optuna",
        "algo=ppo",
        "env=CartPole",
        "hydra.sweeper.search=null",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    # every corner of the space is composed and validated: each choice, each bound
    result = rlrun(*base, "algo.num_envs=choice(1,0)", "algo.gamma=interval(0.9,1.5)")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("rlrun: error:")]
    assert lines == [
        "rlrun: error: search space at algo.num_envs=0 algo.gamma=0.9: algo.num_envs=0 must be positive",
        "rlrun: error: search space at algo.num_envs=1 algo.gamma=1.5: algo.gamma=1.5 must lie in [0.0, 1.0]",
    ], result.stderr
    result = rlrun(*base, "algo.lrr=tag(log,interval(1e-5,1e-2))")
    assert result.returncode == 2 and "algo.lrr" in result.stderr and "did you mean 'algo.lr'" in result.stderr, result.stderr
    assert not (sweep_dir / "optuna").exists()  # no study, no trial


@needs_optuna
def test_search_space_forms():
    import optuna
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from hydra_plugins.rlrun_optuna_sweeper._core import distribution, flatten, render
    from rlrun.core.tuning import make_pruner

    parser = OverridesParser.create()
    dist = optuna.distributions
    assert distribution("a", {"type": "float", "low": 1e-5, "high": 1e-2, "log": True}, parser) == dist.FloatDistribution(
        1e-5, 1e-2, log=True
    )
    assert distribution("a", {"type": "int", "low": 1, "high": 9, "step": 2}, parser) == dist.IntDistribution(1, 9, step=2)
    assert distribution("a", [[64, 64], [256, 256]], parser) == dist.CategoricalDistribution(["[64,64]", "[256,256]"])
    assert distribution("a", "tag(log, interval(1e-5, 1e-2))", parser) == dist.FloatDistribution(1e-5, 1e-2, log=True)
    assert distribution("a", "int(interval(8, 64))", parser) == dist.IntDistribution(8, 64)
    assert distribution("a", "range(1, 10, 3)", parser) == dist.IntDistribution(1, 7, step=3)
    assert distribution("a", "choice(32, 64)", parser) == dist.CategoricalDistribution([32, 64])
    assert distribution("a", "0.5", parser) == "a=0.5"  # a plain value is a fixed override
    assert flatten({"algo": {"lr": {"type": "float", "low": 1, "high": 2}}, "seed": [0, 1]}) == {
        "algo.lr": {"type": "float", "low": 1, "high": 2},
        "seed": [0, 1],
    }
    assert [render(v) for v in (1e-9, True, None, [64, 64])] == ["1e-09", "true", "null", "[64,64]"]
    assert isinstance(
        make_pruner({"name": "successive_halving", "reduction_factor": None}), optuna.pruners.SuccessiveHalvingPruner
    )
    assert isinstance(make_pruner({"name": "hyperband", "min_resource": "auto"}), optuna.pruners.HyperbandPruner)


@needs_optuna
def test_every_algorithm_has_a_search_space_of_its_own_keys():
    import yaml

    from hydra_plugins.rlrun_optuna_sweeper._core import flatten

    configs = Path(__file__).resolve().parents[1] / "configs"
    for algo in ALGORITHMS:
        keys = set(yaml.safe_load((configs / "algo" / f"{algo}.yaml").read_text()))
        space = flatten(OmegaConf.to_container(OmegaConf.load(configs / "search" / f"{algo}.yaml")))
        assert space and all(key.startswith("algo.") and key.split(".", 1)[1] in keys for key in space), algo


DEFAULT_SPACES = {
    "sac": "Pendulum",
    "td3": "Pendulum",
    "ddpg": "Pendulum",
    "ppo": "CartPole",
    "dqn": "CartPole",
    "dsac_t": "Pendulum",
    "crossq": "Pendulum",
    "mrq": "Pendulum",
}

DEFAULT_SPACE_STEPS = 300  # the smoke experiment's first evaluation and checkpoint


@pytest.fixture(scope="module")
def default_space_trials(tmp_path_factory):
    """One trial of each algorithm's own search space (configs/search/<algo>.yaml) at half the
    smoke budget (one evaluation), all sweeps started together; {algo: (result, sweep dir)}."""
    root = tmp_path_factory.mktemp("default-spaces")
    commands = [
        (
            "-m",
            "hydra/sweeper=rlrun_optuna",
            f"algo={algo}",
            f"env={env}",
            "experiment=smoke",
            f"total_steps={DEFAULT_SPACE_STEPS}",
            "threads=1",
            "hydra.sweeper.n_trials=1",
            "hydra.sweeper.sampler.seed=0",
            f"hydra.sweep.dir={root / algo}",
        )
        for algo, env in DEFAULT_SPACES.items()
    ]
    results = run_rlrun_together(commands)
    return {algo: (result, root / algo) for algo, result in zip(DEFAULT_SPACES, results)}


@pytest.mark.slow
@needs_optuna
@pytest.mark.parametrize("algo", DEFAULT_SPACES)
def test_one_trial_of_each_default_search_space_runs(default_space_trials, algo):
    import yaml

    from rlrun.commands.sweep import job_dirname
    from rlrun.core.folders import NAME_MAX

    result, sweep_dir = default_space_trials[algo]
    assert result.returncode == 0, result.stderr
    assert "1 trials, 1 completed, 0 pruned, 0 failed" in result.stdout
    (folder,) = trial_folders(sweep_dir).values()
    override_dirname = OmegaConf.load(folder / ".hydra" / "hydra.yaml").hydra.job.override_dirname
    assert folder.name == job_dirname(0, override_dirname) and len(folder.name.encode()) <= NAME_MAX
    searched = OmegaConf.load(Path(__file__).resolve().parents[1] / "configs" / "search" / f"{algo}.yaml")
    overrides = yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text())
    assert {o.split("=", 1)[0] for o in overrides} >= set(searched)  # every searched value, kept in the folder
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert DEFAULT_SPACE_STEPS <= summary["total_steps"] < DEFAULT_SPACE_STEPS + 2048  # PPO ends on a whole rollout
    assert load_study(sweep_dir).trials[0].value == pytest.approx(summary["eval_return_mean"])


def test_without_optuna_the_sweep_names_the_install_command(rlrun, tmp_path):
    result = rlrun(
        "-m",
        "hydra/sweeper=rlrun_optuna",
        "algo=ppo",
        "env=CartPole",
        "experiment=smoke",
        f"hydra.sweep.dir={tmp_path / 's'}",
        patch="import sys; sys.modules['optuna'] = None  # as if the optuna extra were missing",
    )
    assert result.returncode == 2
    assert f"rlrun: error: the Optuna sweeper needs optuna, which is not installed; install it with: {INSTALL}" in result.stderr


@pytest.mark.slow
@needs_optuna
def test_the_sweeps_report_shows_the_trials_and_parameter_importances(study):
    text = (study["dir"] / "report" / "report.md").read_text()
    trials = load_study(study["dir"]).trials
    assert "## Optuna study rlrun" in text and f"{len(trials)} trials: " in text
    best = max((t for t in trials if t.value is not None), key=lambda t: t.value)
    assert f"Best: trial {best.number}, value {best.value:.1f}" in text
    assert "| algo.lr | 1.000 |" in text  # Optuna's fANOVA: the one parameter explains it all
    assert "pruned" in text
