"""Every algorithm really learns: with a fixed small budget, the mean return of seeds 0 and 1
(trained side by side) must pass a bar that an untrained policy never reaches.

Each bar lies below the worst mean of two seeds measured over at least six seeds, by the
spread of such a mean; docs/learning-tests.md has the measurements and how each bar follows
from them. Runs are pinned to the CPU, where the bars were measured: a GPU draws other random
numbers, so the same seed takes another path there.
"""

import json
import statistics
from dataclasses import dataclass

import pytest
from conftest import pendulum_expert_dataset, pendulum_mixed_dataset, run_rlrun, run_rlrun_together

SEEDS = (0, 1)


@dataclass(frozen=True)
class LearningTest:
    overrides: tuple[str, ...]
    evaluations: int  # expected in metrics.jsonl: total_steps / eval.every
    untrained_below: float | None  # every seed's first evaluation: the policy has not learnt yet (None: not checked)
    bar: float  # the seeds' mean score must reach this
    # The score of a run: the mean of its last `scored_evaluations` evaluations (1: the final one).
    scored_evaluations: int = 1
    requires: str | None = None  # a module of an optional extra the case needs; skipped without it
    expert_dataset: bool = False  # an offline case: trains on conftest.pendulum_expert_dataset (dataset=)
    # The seeds train as one batched group in one process (hydra/launcher=batched,
    # docs/batched-seeds.md) instead of side by side as separate runs.
    batched: bool = False


RAINBOW_AS_DQN = (
    "algo=rainbow",
    "env=CartPole",
    "total_steps=4000",
    "algo.hidden_sizes=[64,64]",
    "eval.every=2000",
    "algo.noisy=false",
    "algo.epsilon_decay_steps=1000",
    "algo.n_step=1",
    "algo.dueling=false",
    "algo.double=false",
    "algo.distributional=false",
    "algo.prioritized=false",
)

SAC_PENDULUM = ("algo=sac", "env=Pendulum", "total_steps=4000", "algo.hidden_sizes=[64,64]", "eval.every=1000")

CASES = {
    "sac-Pendulum": LearningTest(
        SAC_PENDULUM,
        evaluations=4,
        untrained_below=-1000,
        bar=-250,
    ),
    # SAC's case with seeds 0 and 1 as one batched group (its bar from six seeds in three groups,
    # which land where six separate runs do).
    "sac-Pendulum-batched": LearningTest(
        SAC_PENDULUM,
        evaluations=4,
        untrained_below=-1000,
        bar=-200,
        batched=True,
    ),
    # SAC's case with HL-Gauss critics (algo.critic_loss=hl_gauss); the value support is the
    # tuned one, configs/tuned/sac-Pendulum.yaml.
    "sac-hl_gauss-Pendulum": LearningTest(
        (
            "algo=sac",
            "env=Pendulum",
            "total_steps=5000",
            "algo.hidden_sizes=[64,64]",
            "eval.every=1000",
            "algo.critic_loss=hl_gauss",
        ),
        evaluations=5,
        untrained_below=-1000,
        bar=-200,
    ),
    "td3-Pendulum": LearningTest(
        (
            "algo=td3",
            "env=Pendulum",
            "total_steps=8000",
            "algo.learning_starts=1000",
            "algo.hidden_sizes=[64,64]",
            "eval.every=1000",
        ),
        evaluations=8,
        untrained_below=-1000,
        bar=-250,
    ),
    # The tuned Pendulum settings (configs/tuned/dsac_t-Pendulum.yaml) on a smaller network. A
    # learnt DSAC-T policy can still fail from some starts at one evaluation and not the next,
    # so a run scores the mean of its last three evaluations (steps 6,000-8,000).
    "dsac_t-Pendulum": LearningTest(
        ("algo=dsac_t", "env=Pendulum", "total_steps=8000", "algo.hidden_sizes=[64,64]", "eval.every=1000"),
        evaluations=8,
        untrained_below=-1000,
        bar=-350,
        scored_evaluations=3,
    ),
    # The tuned RL Zoo settings with CPU-sized networks; learning starts at the first evaluation.
    "crossq-Pendulum": LearningTest(
        (
            "algo=crossq",
            "env=Pendulum",
            "total_steps=4000",
            "algo.learning_starts=1000",
            "algo.actor_hidden_sizes=[64,64]",
            "algo.critic_hidden_sizes=[64,64]",
            "eval.every=1000",
        ),
        evaluations=4,
        untrained_below=-1000,
        bar=-200,
    ),
    # The tuned Pendulum file (configs/tuned/mrq-Pendulum.yaml: learning from step 1,000) with
    # 64-wide embeddings and networks instead of the paper's 512.
    "mrq-Pendulum": LearningTest(
        (
            "algo=mrq",
            "env=Pendulum",
            "total_steps=3000",
            "eval.every=1000",
            "algo.zs_dim=64",
            "algo.za_dim=32",
            "algo.zsa_dim=64",
            "algo.encoder_hidden_dim=64",
            "algo.value_hidden_dim=64",
            "algo.policy_hidden_dim=64",
        ),
        evaluations=3,
        untrained_below=-900,
        bar=-300,
    ),
    # The tuned RL Zoo settings; the learning rate anneals to zero over these 30,000 steps.
    "ppo-CartPole": LearningTest(
        ("algo=ppo", "env=CartPole", "total_steps=30000", "eval.every=1000", "eval.episodes=5"),
        evaluations=30,
        untrained_below=200,
        bar=190,
    ),
    # The tuned RL Zoo settings (ε decays over the first 3,200 steps). DQN on CartPole swings
    # between evaluations, so a run scores the mean of its second half (steps 11,000-20,000).
    "dqn-CartPole": LearningTest(
        ("algo=dqn", "env=CartPole", "total_steps=20000", "eval.every=1000"),
        evaluations=20,
        untrained_below=50,
        bar=80,
        scored_evaluations=10,
    ),
    # Full Rainbow (every component on) with the tuned CartPole settings, 64-unit layers and
    # 4,000 steps: some seeds have learnt by the first evaluation, so that is not checked.
    "rainbow-CartPole": LearningTest(
        ("algo=rainbow", "env=CartPole", "total_steps=4000", "algo.hidden_sizes=[64,64]", "eval.every=2000"),
        evaluations=2,
        untrained_below=None,
        bar=60,
    ),
    # Rainbow's distributional and prioritised parts one at a time, each on a plain DQN: ε-greedy
    # (1 → 0.01 over the first 1,000 steps), 1-step returns, no dueling, no double, no noisy
    # nets, uniform replay and a Huber loss on Q but for the part switched on.
    "rainbow-distributional-CartPole": LearningTest(
        (*RAINBOW_AS_DQN, "algo.distributional=true"),
        evaluations=2,
        untrained_below=None,
        bar=100,
    ),
    "rainbow-prioritized-CartPole": LearningTest(
        (*RAINBOW_AS_DQN, "algo.prioritized=true"),
        evaluations=2,
        untrained_below=None,
        bar=90,
    ),
    # DeepMind Control Suite cartpole-balance from states, each action held for 8 of the suite's
    # 1000 steps per episode (125 agent steps); a larger learning rate and smaller networks and
    # batches than tuned/sac-dmc.yaml, which are for 1M steps.
    "sac-dmc-cartpole-balance": LearningTest(
        (
            "algo=sac",
            "env=dmc-cartpole-balance",
            "env.action_repeat=8",
            "total_steps=6000",
            "algo.hidden_sizes=[64,64]",
            "algo.lr=1e-3",
            "algo.batch_size=128",
            "algo.learning_starts=1000",
            "eval.every=1000",
            "eval.episodes=5",
        ),
        evaluations=6,
        untrained_below=400,
        bar=650,
        requires="shimmy",
    ),
    # Offline (dataset=): 3,000 gradient steps on 20 noisy episodes of a scripted swing-up
    # controller (tests/conftest.py, pendulum_expert_dataset; their mean return is about −200).
    "td3_bc-Pendulum-expert": LearningTest(
        ("algo=td3_bc", "total_steps=3000", "algo.hidden_sizes=[64,64]", "eval.every=1000"),
        evaluations=3,
        untrained_below=-700,
        bar=-250,
        requires="minari",
        expert_dataset=True,
    ),
    # IQL has learnt by its first evaluation, so that is not checked; its cosine step size
    # leaves the last evaluations uneven, hence the mean of all three.
    "iql-Pendulum-expert": LearningTest(
        ("algo=iql", "total_steps=3000", "algo.hidden_sizes=[64,64]", "eval.every=1000"),
        evaluations=3,
        untrained_below=None,
        bar=-500,
        scored_evaluations=3,
        requires="minari",
        expert_dataset=True,
    ),
}


def eval_returns(run_dir) -> list[float]:
    rows = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    return [row["eval/return_mean"] for row in rows if "eval/return_mean" in row]


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_learns(tmp_path, name):
    case = CASES[name]
    if case.requires is not None:
        pytest.importorskip(case.requires)
    overrides = (*case.overrides, "threads=1", "device=cpu", "progress=false")
    if case.expert_dataset:
        overrides = (*overrides, f"dataset={pendulum_expert_dataset(tmp_path / 'pendulum-expert-v0')}")
    if case.batched:
        sweep = tmp_path / "group"
        seeds = f"seed={','.join(map(str, SEEDS))}"
        group = run_rlrun("-m", *overrides, seeds, "hydra/launcher=batched", f"hydra.sweep.dir={sweep}", timeout=900)
        assert f"seeds {', '.join(map(str, SEEDS))} of" in group.stdout + group.stderr, group.stderr
        by_seed = {json.loads((folder / "summary.json").read_text())["seed"]: folder for folder in sweep.glob("*seed=*")}
        run_dirs, results = [by_seed[seed] for seed in SEEDS], [group] * len(SEEDS)
    else:
        run_dirs = [tmp_path / f"seed{seed}" for seed in SEEDS]
        results = run_rlrun_together(
            [(*overrides, f"seed={seed}", f"hydra.run.dir={run_dir}") for seed, run_dir in zip(SEEDS, run_dirs)],
            timeout=900,
        )
    scores, curves = [], []
    for result, run_dir in zip(results, run_dirs):
        assert result.returncode == 0, result.stderr
        evals = eval_returns(run_dir)
        curves.append(evals)
        assert len(evals) == case.evaluations, evals
        assert case.untrained_below is None or evals[0] < case.untrained_below, evals
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["eval_return_mean"] == evals[-1]
        assert summary.get("seed_group") == (list(SEEDS) if case.batched else None), summary
        scores.append(statistics.mean(evals[-case.scored_evaluations :]))
    assert statistics.mean(scores) >= case.bar, (scores, curves)


# Decision Transformer: 1,000 gradient steps on conftest.pendulum_mixed_dataset (10 swing-up
# episodes, returns about −120 to −340, and 10 of a damping controller, about −1,700 to −1,950),
# then the same 10 evaluation episodes asked for a high return (the swing-up episodes') and a low
# one (the damping episodes'): asking for more must earn more, by the bar.
DT_OVERRIDES = (
    "algo=dt",
    "total_steps=1000",
    "algo.embed_dim=64",
    "algo.num_layers=1",
    "algo.context_length=10",
    "algo.warmup_steps=100",
    "algo.lr=1e-3",
    "eval.every=1000",
    "eval.episodes=2",
    "algo.target_return=-120",
)
DT_TARGETS = {"high": -120.0, "low": -1850.0}
DT_EPISODES = 10
DT_GAP_BAR = 250.0  # the seeds' mean of (return asked high − return asked low); docs/learning-tests.md, 2026-12-07


def target_return_gap(run_dir, seed: int) -> dict[str, float]:
    """The run's final agent evaluated asking for each of DT_TARGETS, on the same episodes."""
    import torch

    from rlrun.core.saved_run import load_agent
    from rlrun.envs.episodes import EVAL_SEED_OFFSET, evaluate
    from rlrun.envs.make import make_env

    saved = load_agent(sorted((run_dir / "checkpoints").glob("step_*.pt"))[-1], {}, "cpu")
    returns = {}
    for name, target in DT_TARGETS.items():
        saved.agent.target_return = torch.tensor(target)
        env = make_env(saved.plan.run_config.env, seed + EVAL_SEED_OFFSET, training=False)
        act = lambda obs: saved.agent.act(obs)  # noqa: E731
        returns[name] = float(evaluate(act, env, DT_EPISODES, seed + EVAL_SEED_OFFSET, agent=saved.agent).returns.mean())
        env.close()
    return returns


@pytest.mark.slow
def test_dt_earns_more_when_asked_for_more(tmp_path, one_torch_thread):
    pytest.importorskip("minari")
    dataset = pendulum_mixed_dataset(tmp_path / "pendulum-mixed-v0")
    run_dirs = [tmp_path / f"seed{seed}" for seed in SEEDS]
    results = run_rlrun_together(
        [
            (*DT_OVERRIDES, f"dataset={dataset}", f"seed={seed}", "threads=1", "device=cpu", "progress=false")
            + (f"hydra.run.dir={run_dir}",)
            for seed, run_dir in zip(SEEDS, run_dirs)
        ],
        timeout=900,
    )
    gaps = []
    for seed, result, run_dir in zip(SEEDS, results, run_dirs):
        assert result.returncode == 0, result.stderr
        returns = target_return_gap(run_dir, seed)
        gaps.append(returns["high"] - returns["low"])
    assert statistics.mean(gaps) >= DT_GAP_BAR, gaps
