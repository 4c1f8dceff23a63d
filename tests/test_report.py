"""`rlrun report=`: a synthetic sweep (3 algorithms × 2 environments × 5 seeds, fake run folders
with known evaluation curves) end to end, curve alignment, and bad input."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import run_rlrun, start_rlrun, wait_for
from scipy.stats import trim_mean

pytest.importorskip("matplotlib")

from rlrun.report.analysis import Options, analyse  # noqa: E402
from rlrun.report.plots import REFERENCE_GID, curves_figure, profile_figure  # noqa: E402
from rlrun.report.references import load_reference  # noqa: E402
from rlrun.report.runs import load_runs  # noqa: E402

# Final returns: base + offset; the offsets' middle three (floor(5/4) = 1 cut at each end) are
# -10, 0, 10, so every IQM over seeds is its base, and every mean base + 36.
OFFSETS = [-20.0, -10.0, 0.0, 10.0, 200.0]
BASES = {
    ("sac", "HalfCheetah"): 3000.0,
    ("td3", "HalfCheetah"): 2000.0,
    ("ppo", "HalfCheetah"): 1000.0,
    ("sac", "Hopper"): 1500.0,
    ("td3", "Hopper"): 2500.0,
    ("ppo", "Hopper"): 500.0,
}
TOTAL = 50_000
# rl-zoo.csv: the best score for the task, and D4RL's random-policy score.
NORMALISERS = {"HalfCheetah": (9655.666, -280.178953), "Hopper": (3606.390, -20.272305)}


def fake_run(
    folder: Path,
    algo: str,
    env: str,
    seed: int,
    steps: list[int],
    returns: list[float],
    status: str | None = "completed",
    overrides: list[str] | None = None,
) -> Path:
    """A run folder as rlrun writes it, with the given evaluations in metrics.jsonl."""
    hydra = folder / ".hydra"
    hydra.mkdir(parents=True)
    config = {
        "seed": seed,
        "total_steps": TOTAL,
        "eval": {"every": 5000},
        "env": {"id": f"{env}-v5", "total_steps": 1_000_000},
        "algo": {"name": algo, "lr": 0.0003},
    }
    (hydra / "config.yaml").write_text(yaml.safe_dump(config))
    (hydra / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": {"algo": algo, "env": env}}}}))
    given = overrides if overrides is not None else [f"algo={algo}", f"env={env}", f"seed={seed}"]
    (hydra / "overrides.yaml").write_text(yaml.safe_dump(given))
    with open(folder / "metrics.jsonl", "w") as file:
        for step, value in zip(steps, returns):
            file.write(json.dumps({"step": step, "train/episode_return": -1.0}) + "\n")
            file.write(json.dumps({"step": step, "eval/return_mean": value, "eval/return_std": 1.0}) + "\n")
    if status:
        (folder / "summary.json").write_text(json.dumps({"status": status}))
    return folder


def synthetic_sweep(root: Path) -> Path:
    """Each run's evaluation curve is linear, base · step / TOTAL + its seed's offset; TD3
    evaluates every 2500 steps, the others every 5000."""
    job = 0
    for (algo, env), base in BASES.items():
        every = 2500 if algo == "td3" else 5000
        steps = list(range(every, TOTAL + 1, every))
        for seed, offset in enumerate(OFFSETS):
            returns = [base * step / TOTAL + offset for step in steps]
            fake_run(root / f"{job}-algo={algo},env={env},seed={seed}", algo, env, seed, steps, returns)
            job += 1
    return root


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_a_synthetic_sweep_end_to_end(tmp_path):
    sweep = synthetic_sweep(tmp_path / "sweep")
    result = run_rlrun(f"report={sweep}", "report.last_fraction=0.25", "report.format=html")
    assert result.returncode == 0, result.stderr
    out = sweep / "report"
    assert f"report: {out / 'report.md'}" in result.stdout
    rows = _rows(out / "report.csv")
    per_env = {(row["env_id"], row["group"]): row for row in rows if row["env_id"] != "normalised"}
    assert set(per_env) == {(f"{env}-v5", f"algo={algo}") for algo, env in BASES}
    for (algo, env), base in BASES.items():
        row = per_env[(f"{env}-v5", f"algo={algo}")]
        assert row["algo"] == algo and int(row["seeds"]) == 5 and int(row["last_step_max"]) == TOTAL
        assert float(row["final_iqm"]) == pytest.approx(base)
        assert float(row["final_mean"]) == pytest.approx(base + 36)
        assert float(row["final_median"]) == pytest.approx(base)
        assert float(row["final_iqm_low"]) <= base <= float(row["final_iqm_high"]) <= base + 200
        # The last 25% of 50k steps: the evaluations after step 37500 (TD3: 40000 to 50000 by
        # 2500; the others: 40000, 45000, 50000), whose steps average 0.9 of the way.
        assert float(row["last_iqm"]) == pytest.approx(0.9 * base)

    normalised = {row["group"]: row for row in rows if row["env_id"] == "normalised"}
    assert set(normalised) == {"algo=sac", "algo=td3", "algo=ppo"}
    for algo in ("sac", "td3", "ppo"):
        scores = []
        for env, (best, random) in NORMALISERS.items():
            scores += [(BASES[(algo, env)] + offset - random) / (best - random) for offset in OFFSETS]
        assert float(normalised[f"algo={algo}"]["iqm"]) == pytest.approx(trim_mean(scores, 0.25), rel=1e-6)
        assert float(normalised[f"algo={algo}"]["mean"]) == pytest.approx(np.mean(scores), rel=1e-6)
        assert float(normalised[f"algo={algo}"]["optimality_gap"]) == pytest.approx(1 - np.mean(np.minimum(scores, 1)), rel=1e-6)

    text = (out / "report.md").read_text()
    # SAC beats TD3 on HalfCheetah in every pair of runs and loses on Hopper in every pair: 0.5;
    # both beat PPO everywhere: 1.0, with nothing for a resample to change.
    assert "| algo=sac | algo=td3 | 2 | 0.50 |" in text
    assert "| algo=ppo | algo=sac | 2 | 0.00 | [0.00, 0.00] |" in text
    assert "| algo=ppo | algo=td3 | 2 | 0.00 | [0.00, 0.00] |" in text
    assert "RL Zoo benchmark.md" in text and "D4RL" in text  # sources cited
    for name in ("curves-HalfCheetah-v5.png", "curves-Hopper-v5.png", "profile.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "<table>" in page


def test_figures_have_a_line_per_group_and_reference(tmp_path):
    runs, skipped, _ = load_runs([str(synthetic_sweep(tmp_path / "sweep"))])
    report = analyse(runs, Options(reference=load_reference("rl-zoo"), resamples=200), skipped)
    assert report.groups == ["algo=ppo", "algo=sac", "algo=td3"]
    for env_id in ("HalfCheetah-v5", "Hopper-v5"):
        axes = curves_figure(report, env_id).axes[0]
        curves = [line for line in axes.get_lines() if line.get_gid() != REFERENCE_GID]
        references = [line for line in axes.get_lines() if line.get_gid() == REFERENCE_GID]
        assert len(curves) == 3 and len(references) == 3  # rl-zoo has SAC, TD3 and PPO on both tasks
        assert all(line.get_xdata()[-1] == TOTAL for line in curves)
        td3 = next(line for line in curves if "td3" in line.get_label())
        assert len(td3.get_xdata()) == TOTAL // 2500  # its own grid, every 2500 steps
    assert len(profile_figure(report).axes[0].get_lines()) == 3


def test_curves_interpolate_between_evaluations_and_stop_at_the_shortest_run(tmp_path):
    """Runs evaluated at different steps share a grid; a run is never extended past its last
    evaluation, so the curve ends where the shortest run ends, and a note says so."""
    fake_run(tmp_path / "a", "sac", "Hopper", 0, [1000, 3000, 5000], [0.0, 300.0, 500.0])
    fake_run(tmp_path / "b", "sac", "Hopper", 1, [2000, 4000], [100.0, 200.0], status=None)
    runs, _, _ = load_runs([str(tmp_path / "a"), str(tmp_path / "b")])
    report = analyse(runs, Options(resamples=100))
    cell = report.cells[("Hopper-v5", "algo=sac")]
    np.testing.assert_array_equal(cell.curve.steps, [2000, 3000, 4000])
    # a at 2000 and 4000 interpolated (150, 400); b at 3000 interpolated (150); 2 runs: IQM = mean.
    np.testing.assert_allclose(cell.curve.iqm.value, [(150 + 100) / 2, (300 + 150) / 2, (400 + 200) / 2])
    assert list(cell.finals) == [500.0, 200.0]
    assert any("stops at step 4000" in note for note in report.notes)
    assert any("not completed" in note and "b (unknown)" in note for note in report.notes)  # no summary, no lock file


def test_groups_are_what_differs_other_than_the_seed(tmp_path):
    for seed in range(2):
        for lr in ("0.001", "0.0003"):
            fake_run(
                tmp_path / f"lr{lr}-{seed}",
                "sac",
                "Hopper",
                seed,
                [100],
                [float(seed)],
                overrides=["algo=sac", f"algo.lr={lr}", f"seed={seed}"],
            )
    runs, _, _ = load_runs([str(tmp_path)])
    for run in runs:  # the config holds what the override set
        run.settings["algo.lr"] = float(run.folder.name[2:].split("-")[0])
    assert analyse(runs, Options(resamples=10)).groups == ["algo=sac algo.lr=0.0003", "algo=sac algo.lr=0.001"]
    assert analyse(runs, Options(resamples=10, group_by=("algo",))).groups == ["algo=sac"]


def test_a_seed_run_twice_counts_once_as_its_furthest_trained_run(tmp_path):
    fake_run(tmp_path / "short", "sac", "Hopper", 0, [100], [5.0], status="interrupted")
    fake_run(tmp_path / "long", "sac", "Hopper", 0, [100, 200], [1.0, 2.0])
    fake_run(tmp_path / "other", "sac", "Hopper", 1, [100, 200], [3.0, 4.0])
    runs, _, _ = load_runs([str(tmp_path)])
    report = analyse(runs, Options(resamples=10))
    cell = report.cells[("Hopper-v5", "algo=sac")]
    assert sorted(run.name for run in cell.runs) == ["long", "other"] and list(cell.finals) == [2.0, 4.0]
    assert [run.name for run in report.duplicates] == ["short"]
    assert any(f"seed 0 appears in 2 runs; counted once, as {tmp_path / 'long'} (trained furthest)" in n for n in report.notes)


def _fails(*args: str) -> str:
    result = run_rlrun(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("rlrun: error: ")
    return result.stderr.strip().removeprefix("rlrun: error: ")


@pytest.mark.slow
def test_bad_input_gets_one_line_and_writes_nothing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _fails(f"report={empty}") == f"report={empty} holds no runs (no .hydra/config.yaml in it or below it)"
    assert _fails(f"report={tmp_path / 'nowhere'}").startswith(f"report={tmp_path / 'nowhere'}: no such folder")

    fresh = tmp_path / "fresh"
    for seed in range(2):
        fake_run(fresh / f"{seed}-seed={seed}", "sac", "Hopper", seed, [], [], status=None)
    assert _fails(f"report={fresh}").startswith(f"report={fresh}: none of its 2 run(s) has evaluated yet")

    mixed = tmp_path / "mixed"
    fake_run(mixed / "0", "sac", "Hopper", 0, [100], [1.0])
    fake_run(mixed / "1", "sac", "Pusher", 0, [100], [1.0])
    assert "has no score for Pusher-v5" in _fails(f"report={mixed}")
    assert "no score for" in _fails(f"report={mixed}", "report.reference=td3-paper")

    sweep = synthetic_sweep(tmp_path / "sweep")
    assert _fails(f"report={sweep}", "report.group_by=[algoo]").startswith(
        "report.group_by: these runs have no setting 'algoo'; did you mean algo?"
    )
    unknown = _fails(f"report={sweep}", "report.reference=rlzoo")
    assert unknown.startswith("report.reference=rlzoo is not known; did you mean rl-zoo?")
    assert _fails(f"report={sweep}", "report.format=pdf") == "report.format='pdf' is not valid; choose one of: md, html"
    assert _fails(f"report={sweep}", "report.last_fraction=0").startswith("report.last_fraction=0 must be a number in (0, 1]")
    assert _fails(f"report={sweep}", "report.resamples=1000000000000") == (
        "report.resamples=1000000000000 is more than the limit of 50,000 (bootstrap resamples; more only narrow the "
        "intervals' noise)"
    )
    assert _fails(f"report={sweep}", "report.colour=red").startswith("report= does not take 'report.colour=red'")
    assert _fails("report.seed=3").startswith("report.<option>= needs report=<folder>")
    assert not any(path.name == "report" for path in tmp_path.rglob("*"))  # nothing written


def test_without_the_report_extra(tmp_path):
    hide = (
        "import importlib.util\n_find = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a: None if name == 'matplotlib' else _find(name, *a)"
    )
    sweep = synthetic_sweep(tmp_path / "sweep")
    result = run_rlrun(f"report={sweep}", patch=hide)
    assert (result.returncode, result.stderr.strip()) == (
        2,
        (
            "rlrun: error: report= needs the report extra (matplotlib missing): "
            "python -m pip install -c constraints.txt -e '.[report]'"
        ),
    )
    assert not (sweep / "report").exists()


def test_several_folders_and_a_comma_list(tmp_path):
    fake_run(tmp_path / "a" / "0-algo=sac,seed=0", "sac", "Hopper", 0, [100, 200], [1.0, 2.0])
    fake_run(tmp_path / "b" / "0-algo=td3,seed=0", "td3", "Hopper", 0, [100, 200], [3.0, 4.0])
    out = tmp_path / "both"
    result = run_rlrun(f"report={tmp_path / 'a'},{tmp_path / 'b'}", f"report.out={out}")
    assert result.returncode == 0, result.stderr
    assert {row["group"] for row in _rows(out / "report.csv")} == {"algo=sac", "algo=td3"}
    # A job folder's own name holds commas: taken whole since it exists.
    result = run_rlrun(f"report={tmp_path / 'a' / '0-algo=sac,seed=0'}", f"report={tmp_path / 'b'}", f"report.out={out}")
    assert result.returncode == 0, result.stderr
    assert len(_rows(out / "report.csv")) == 2


def test_atari_scores_are_human_normalised_with_atari100k(tmp_path):
    # Road Runner at the human tester's 7845 scores 1.0, although DER's published 9600 is
    # higher; Pong halfway between random (−20.7) and human (14.6) scores 0.5.
    finals = {"RoadRunner": 7845.0, "Pong": -20.7 + 0.5 * (14.6 + 20.7)}
    sweep = tmp_path / "sweep"
    job = 0
    for env, final in finals.items():
        for seed in range(3):
            fake_run(sweep / f"{job}-env={env},seed={seed}", "rainbow", env, seed, [25_000, TOTAL], [0.0, final])
            job += 1
    result = run_rlrun(f"report={sweep}", "report.reference=atari100k")
    assert result.returncode == 0, result.stderr
    normalised = [row for row in _rows(sweep / "report" / "report.csv") if row["env_id"] == "normalised"]
    assert len(normalised) == 1 and float(normalised[0]["iqm"]) == pytest.approx(0.75)  # IQM of 1, 1, 1, ½, ½, ½
    assert float(normalised[0]["mean"]) == pytest.approx(0.75)
    text = (sweep / "report" / "report.md").read_text()
    assert "DQN Zoo atari_data.py" in text and "Data-Efficient Rainbow (van Hasselt et al. 2019" in text


def test_atari100k_reference_has_random_human_and_der_scores_for_the_26_games():
    reference = load_reference("atari100k")
    tasks = {score.env_id for score in reference.scores}
    assert len(tasks) == 26 and len(reference.scores) == 78
    for env_id in tasks:
        assert {s.algo for s in reference.scores if s.env_id == env_id} == {"random", "human", "rainbow"}
        assert reference.normaliser(env_id).algo == "human"
        random, human = reference.random(env_id).score, reference.normaliser(env_id).score
        np.testing.assert_allclose(reference.normalise(env_id, np.array([random, human])), [0.0, 1.0])


# ----- real runs: what tells groups apart, repeated seeds, killed runs ------------------------
SMOKE = ["experiment=smoke", "algo=sac", "env=Pendulum", "threads=1", "device=cpu", "total_steps=300", "eval.every=150"]


def _report(*args: str) -> tuple[list[dict], str]:
    out = Path(next(a for a in args if a.startswith("report.out=")).split("=", 1)[1])
    result = run_rlrun(*args)
    assert result.returncode == 0, result.stderr
    return _rows(out / "report.csv"), (out / "report.md").read_text()


@pytest.mark.slow
def test_environment_settings_and_named_keys_tell_groups_apart_and_a_seed_counts_once(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_rlrun("-m", *SMOKE, "+env.kwargs.g=2.0,20.0", "seed=0,1", f"hydra.sweep.dir={sweep}", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    by_default = {row["group"]: int(row["seeds"]) for row in _report(f"report={sweep}", f"report.out={tmp_path / 'a'}")[0]}
    assert by_default == {"algo=sac env.kwargs.g=2.0": 2, "algo=sac env.kwargs.g=20.0": 2}
    named = _report(f"report={sweep}", "report.group_by=[algo,env.kwargs.g]", f"report.out={tmp_path / 'b'}")[0]
    assert {row["group"]: int(row["seeds"]) for row in named} == by_default
    pooled, text = _report(f"report={sweep}", "report.group_by=[algo]", f"report.out={tmp_path / 'c'}")
    assert [(row["group"], int(row["seeds"])) for row in pooled] == [("algo=sac", 2)]  # seeds 0 and 1, once each
    assert "runs grouped together differ in env.kwargs.g, which report.group_by leaves out" in text
    assert "seed 0 appears in 2 runs; counted once" in text and "seed 1 appears in 2 runs; counted once" in text

    # A copy of a run (the same seed and settings) next to the sweep is one sample, not two.
    job = next(sweep.glob("0-*"))
    shutil.copytree(job, tmp_path / "copy" / job.name)
    rows, text = _report(f"report={sweep}", f"report={tmp_path / 'copy'}", f"report.out={tmp_path / 'd'}")
    assert {row["group"]: int(row["seeds"]) for row in rows} == by_default
    copy = tmp_path / "copy" / job.name
    assert f"seed 0 appears in 2 runs; counted once, as {job} (first found), left out: {copy}" in text


@pytest.mark.slow
def test_a_killed_run_is_not_shown_as_running(tmp_path):
    run_dir = tmp_path / "runs" / "long"
    process = start_rlrun(*SMOKE, "total_steps=100000", f"hydra.run.dir={run_dir}")
    try:
        wait_for(run_dir / "checkpoints" / "step_000000300.pt", process)
        text = _report(f"report={tmp_path / 'runs'}", f"report.out={tmp_path / 'live'}")[1]
        assert "long (running)" in text
    finally:
        process.kill()  # SIGKILL: no summary.json, and the lock is gone with the process
        process.communicate(timeout=60)
    assert not (run_dir / "summary.json").exists()
    text = _report(f"report={tmp_path / 'runs'}", f"report.out={tmp_path / 'dead'}")[1]
    assert "long (killed)" in text and "running" not in text
