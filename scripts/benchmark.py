"""rlrun against Stable-Baselines3, side by side, in one invocation.

    python -m pip install -c constraints.txt -e '.[bench]'
    python scripts/benchmark.py --algos sac,td3,ppo,dqn --steps 20000 --threads 1,2 --seeds 0

For each algorithm, thread count and seed it runs rlrun, then SB3, one after the other
(interleaved, so a noisy machine slows both alike), each in a fresh process so its peak RSS
is its own. SB3 gets the hyperparameters of rlrun's composed config for the same algorithm
and environment (tuned files included), mapped onto SB3's arguments below. Both evaluate the
deterministic policy at the same step counts; evaluation time is left out of steps/s.

Budgets should be multiples of PPO's rollout (num_envs × num_steps): rlrun stops at the
budget, SB3 finishes its rollout; steps/s counts the steps each really ran ("steps_run").

Writes <out>/benchmark.json (every run) and <out>/benchmark.md (a table with rlrun ÷ SB3
ratios of training steps/s).

On a shared machine one pair of short runs is noisy: `--repeats N` runs each pair N times,
and the table's ratio is then the median of the pairs' ratios, with their range.

Long learning comparisons can use both cores by running each side in its own invocation
(`--runners rlrun --out a` and `--runners sb3 --out b` at once), then
`--merge a b --out both` writes the tables for the two together.

Learning comparisons of several methods name them with `--methods`, each `runner:algo`
with optional rlrun overrides after further colons; the peers are SB3 (`sb3:sac`, `sb3:td3`,
...) and sb3-contrib (`sb3:crossq`, `sb3:tqc`, with rlrun's SAC settings):

    python scripts/benchmark.py --env HalfCheetah,Hopper --steps 100000 --seeds 0,1,2 --threads 1 \
        --methods rlrun:sac,rlrun:crossq,rlrun:sac:algo.critic_loss=hl_gauss,sb3:sac,sb3:crossq \
        --threshold HalfCheetah=5000

The learning table gives each method's final-return IQM with its 95% bootstrap interval,
training steps/s, and, with `--threshold ENV=RETURN`, the time to that return: the
environment steps and training seconds (evaluation left out) until an evaluation first
reaches it, the median over seeds (a seed that never reaches it counts as never).

The offline mode, `--dataset`, trains rlrun's offline algorithms (`rlrun:td3_bc`, `rlrun:iql`,
`rlrun:cql`) beside d3rlpy's (`d3rlpy:td3_bc`, ...) on one Minari dataset (a folder or an id);
steps are gradient steps. d3rlpy pins gymnasium 1.0, so it runs in a Python of its own
(`--peer-python`, or $RLRUN_D3RLPY_PYTHON) through scripts/d3rlpy_peer.py, which maps rlrun's
composed config onto d3rlpy's settings and says which it cannot match:

    python scripts/benchmark.py --dataset ./datasets/pendulum-sac-replay-v0 --steps 20000 --seeds 0,1,2 \
        --threads 1 --methods rlrun:td3_bc,d3rlpy:td3_bc,rlrun:iql,d3rlpy:iql,rlrun:cql,d3rlpy:cql \
        --peer-python /work/d3venv/bin/python

Its tables: gradient steps/s, rlrun ÷ d3rlpy for each pair run back to back; and each method's
final normalised score (0 the dataset's ref_min_score, 100 its ref_max_score) as an IQM over
seeds with its 95% bootstrap interval.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ENVS = {
    "sac": "HalfCheetah",
    "td3": "HalfCheetah",
    "ddpg": "HalfCheetah",
    "crossq": "HalfCheetah",
    "ppo": "HalfCheetah",
    "dqn": "CartPole",
}
# Peers without an rlrun algorithm of their own take the settings of this rlrun algorithm.
SETTINGS_FROM = {"tqc": "sac"}
PEER_SCRIPT = REPO / "scripts" / "d3rlpy_peer.py"
PEER_INSTALL = "python3.11 -m venv /work/d3venv && /work/d3venv/bin/python -m pip install -c constraints.txt d3rlpy==2.8.1 'minari[hdf5]==0.5.4' pillow"


def split_methods(text: str) -> list[str]:
    """Splits --methods at the commas outside brackets, so overrides such as
    rlrun:crossq:algo.critic_hidden_sizes=[256,256] stay whole."""
    return re.split(r",(?![^\[]*\])", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algos", default="sac,td3,ppo,dqn")
    parser.add_argument(
        "--env", default=None, help="envs (comma-separated) for every algorithm (default: HalfCheetah, CartPole for dqn)"
    )
    parser.add_argument(
        "--methods",
        default=None,
        help="runner:algo[:override...] list (default: every --algos with every --runners), e.g. rlrun:crossq,sb3:crossq",
    )
    parser.add_argument(
        "--threshold",
        nargs="*",
        default=[],
        metavar="ENV=RETURN",
        help="report the steps and training seconds until an evaluation first reaches RETURN on ENV",
    )
    parser.add_argument(
        "--dataset", default=None, help="offline mode: a Minari dataset (folder or id) for rlrun:<algo> and d3rlpy:<algo>"
    )
    parser.add_argument(
        "--peer-python",
        default=os.environ.get("RLRUN_D3RLPY_PYTHON"),
        help="offline mode: the Python with d3rlpy and minari (default: $RLRUN_D3RLPY_PYTHON)",
    )
    parser.add_argument("--steps", type=int, default=20_000, help="environment steps per run (gradient steps offline)")
    parser.add_argument("--eval-every", type=int, default=None, help="steps between evaluations (default: steps / 4)")
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--threads", default="1,2", help="torch thread counts to measure")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where both sides train")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--repeats", type=int, default=1, help="rlrun/SB3 pairs per algorithm, thread count and seed")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="rlrun overrides for both sides, e.g. algo.learning_starts=1000 (a short run then measures mostly updates)",
    )
    parser.add_argument("--runners", default="rlrun,sb3", help="which sides to run (one side: merge later with --merge)")
    parser.add_argument(
        "--merge", nargs="+", type=Path, metavar="DIR", help="only write the tables for these earlier --out folders"
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks")
    parser.add_argument("--worker", choices=["sb3"], help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_sb3(json.loads(args.spec))))
        return

    if args.merge:
        args.out.mkdir(parents=True, exist_ok=True)
        merged = [run for folder in args.merge for run in json.loads((folder / "benchmark.json").read_text())]
        write_tables(merged, args.out, parse_thresholds(parser, args.threshold))
        return
    if args.dataset:
        if Path(args.dataset).expanduser().exists():
            args.dataset = str(Path(args.dataset).expanduser().resolve())  # both sides run from the repository root
        runners = {"rlrun": run_rlrun_process, "d3rlpy": run_d3rlpy_process}
        if not args.methods:
            parser.error("--dataset needs --methods, e.g. rlrun:td3_bc,d3rlpy:td3_bc")
        if any(method.startswith("d3rlpy:") for method in split_methods(args.methods)):
            check_peer_python(parser, args.peer_python)
    else:
        runners = {"rlrun": run_rlrun_process, "sb3": run_sb3_process}
    methods = (
        split_methods(args.methods)
        if args.methods
        else [f"{r}:{a}" for a in args.algos.split(",") for r in args.runners.split(",")]
    )
    for method in methods:
        runner, _, algo = method.partition(":")
        if runner not in runners or not algo:
            parser.error(f"--methods {method}: expected runner:algo[:override...] with runner {' or '.join(runners)}")
    thresholds = parse_thresholds(parser, args.threshold)
    args.out.mkdir(parents=True, exist_ok=True)
    eval_every = args.eval_every or max(1, args.steps // 4)
    results = []
    env_names = [dataset_label(args.dataset)] if args.dataset else args.env.split(",") if args.env else [None]
    for env_name in env_names:
        for threads in map(int, args.threads.split(",")):
            for seed in map(int, args.seeds.split(",")):
                for repeat in range(args.repeats):
                    for method in methods:
                        runner, algo, *overrides = method.split(":")
                        spec = {
                            "method": method,
                            "runner": runner,
                            "algo": algo,
                            "env": env_name or DEFAULT_ENVS.get(algo, "HalfCheetah"),
                            "dataset": args.dataset,
                            "peer_python": args.peer_python,
                            "steps": args.steps,
                            "threads": threads,
                            "seed": seed,
                            "repeat": repeat,
                            "device": args.device,
                            "eval_every": eval_every,
                            "eval_episodes": args.eval_episodes,
                            "overrides": [*args.set, *overrides],
                        }
                        result = {**spec, **runners[runner](spec)}
                        print(json.dumps(result), flush=True)
                        results.append(result)
                        # Written after every run, so a long comparison cut short keeps what it measured.
                        (args.out / "benchmark.json").write_text(json.dumps(results, indent=2) + "\n")
    write_tables(results, args.out, thresholds)


def parse_thresholds(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, float]:
    thresholds = {}
    for item in items:
        env, _, value = item.partition("=")
        try:
            thresholds[env] = float(value)
        except ValueError:
            parser.error(f"--threshold {item}: expected ENV=RETURN, e.g. HalfCheetah=5000")
    return thresholds


def check_peer_python(parser: argparse.ArgumentParser, python: str | None) -> None:
    """One line, before anything runs, when the peer's Python is missing or lacks d3rlpy."""
    if not python:
        parser.error(
            f"d3rlpy runs in an environment of its own: name its Python with --peer-python; make it with `{PEER_INSTALL}`"
        )
    try:
        found = subprocess.run([python, "-c", "import d3rlpy, minari"], capture_output=True, timeout=120).returncode == 0
    except OSError:
        found = False
    if not found:
        parser.error(f"--peer-python {python}: no Python with d3rlpy and minari there; make it with `{PEER_INSTALL}`")


def dataset_label(dataset: str) -> str:
    """A dataset's name for the tables: its folder's name, or its id."""
    return Path(dataset).name if Path(dataset).expanduser().exists() else dataset


def write_tables(results: list[dict], out: Path, thresholds: dict[str, float] | None = None) -> None:
    (out / "benchmark.json").write_text(json.dumps(results, indent=2) + "\n")
    if any(r.get("dataset") for r in results):
        table = offline_speed_markdown(results) + "\n\n" + offline_scores_markdown(results)
    else:
        table = markdown(results) + "\n\n" + learning_markdown(results, thresholds or {})
    (out / "benchmark.md").write_text(table + "\n")
    print(table)


# ----- running each side in its own process -------------------------------------------------
def _run(command: list[str], threads: int) -> tuple[str, float, int]:
    """Run `command`; return its stdout, wall seconds and its own peak RSS in MiB."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True, env=env, cwd=REPO)
        # wait4 gives this child's own resource usage (Linux: ru_maxrss in KiB).
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0), err.seek(0)
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(command[:5])} ... failed:\n{err.read()[-3000:]}")
        return out.read(), wall, usage.ru_maxrss // 1024


def run_rlrun_process(spec: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        command = [
            sys.executable,
            "-m",
            "rlrun.cli",
            f"algo={spec['algo']}",
            f"dataset={spec['dataset']}" if spec.get("dataset") else f"env={spec['env']}",
            f"seed={spec['seed']}",
            f"total_steps={spec['steps']}",
            f"threads={spec['threads']}",
            f"eval.every={spec['eval_every']}",
            f"eval.episodes={spec['eval_episodes']}",
            f"checkpoint.every={spec['steps']}",
            "progress=false",
            f"device={spec['device']}",
            f"hydra.run.dir={run_dir}",
            *spec["overrides"],
        ]
        _, wall, rss = _run(command, spec["threads"])
        summary = json.loads((run_dir / "summary.json").read_text())
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        evals = {row["step"]: row["eval/return_mean"] for row in rows if "eval/return_mean" in row}
        scores = {row["step"]: row["eval/normalized_score"] for row in rows if "eval/normalized_score" in row}
        eval_seconds = {row["step"]: row["perf/train_seconds"] for row in rows if "perf/train_seconds" in row}
    return {
        "runner": "rlrun",
        "train_sps": summary["sps"],
        "steps_run": summary["total_steps"],
        "wall_s": round(wall, 1),
        "peak_rss_mib": rss,
        "eval_returns": evals,
        "eval_normalized_scores": scores,
        "eval_train_seconds": eval_seconds,
    }


def run_d3rlpy_process(spec: dict) -> dict:
    """d3rlpy on the same dataset with rlrun's composed settings, in the peer's own Python
    (scripts/d3rlpy_peer.py); its peak RSS is that process's."""
    peer_spec = {
        "algo": spec["algo"],
        "dataset": spec["dataset"],
        "config": rlrun_config(spec["algo"], None, spec["overrides"])["algo"],
        **{key: spec[key] for key in ("steps", "eval_every", "eval_episodes", "seed", "threads")},
    }
    stdout, wall, rss = _run([spec["peer_python"], str(PEER_SCRIPT), json.dumps(peer_spec)], spec["threads"])
    return {**json.loads(stdout.strip().splitlines()[-1]), "runner": "d3rlpy", "wall_s": round(wall, 1), "peak_rss_mib": rss}


def run_sb3_process(spec: dict) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "sb3", "--spec", json.dumps(spec)]
    stdout, wall, rss = _run(command, spec["threads"])
    return {**json.loads(stdout.strip().splitlines()[-1]), "runner": "sb3", "wall_s": round(wall, 1), "peak_rss_mib": rss}


# ----- the SB3 side ---------------------------------------------------------------------------
def rlrun_config(algo: str, env: str | None, overrides: list[str]) -> dict:
    """rlrun's composed config for this pair, as plain values (tuned files and overrides
    applied); env None keeps the default env (an offline run's algo section does not depend on it)."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    with initialize_config_module("rlrun.configs", version_base="1.3"):
        config = compose("config", overrides=[f"algo={algo}", *([f"env={env}"] if env else []), *overrides])
        return OmegaConf.to_container(config, resolve=True)


def sb3_model(algo: str, config: dict, env, seed: int, device: str = "cpu"):
    """An SB3 model with the hyperparameters of rlrun's `config["algo"]`."""
    import numpy as np
    import stable_baselines3 as sb3
    from stable_baselines3.common.noise import NormalActionNoise
    from torch import nn

    a = config["algo"]
    common = dict(gamma=a["gamma"], seed=seed, device=device, verbose=0)
    if algo in ("sac", "tqc", "td3", "ddpg", "crossq"):
        replay = dict(
            learning_rate=a["lr"],
            buffer_size=a["buffer_size"],
            learning_starts=a["learning_starts"],
            batch_size=a["batch_size"],
            train_freq=1,
            gradient_steps=a["updates_per_step"],
            **common,
        )
    if algo in ("sac", "tqc", "td3", "ddpg"):
        off_policy = dict(tau=a["tau"], policy_kwargs=dict(net_arch=list(a["hidden_sizes"])), **replay)
        if algo == "sac":
            return sb3.SAC("MlpPolicy", env, ent_coef=f"auto_{a['init_temperature']}", **off_policy)
        if algo == "tqc":
            # sb3-contrib's TQC with its own defaults (5 critics of 25 quantiles, 2 dropped per net).
            from sb3_contrib import TQC

            return TQC("MlpPolicy", env, ent_coef=f"auto_{a['init_temperature']}", **off_policy)
        # rlrun's noise is relative to the half-range of the action bounds.
        half_range = (env.action_space.high - env.action_space.low) / 2
        noise = NormalActionNoise(np.zeros_like(half_range), a["exploration_noise"] * half_range)
        if algo == "td3":
            return sb3.TD3(
                "MlpPolicy",
                env,
                action_noise=noise,
                policy_delay=a["policy_delay"],
                target_policy_noise=a["policy_noise"],
                target_noise_clip=a["noise_clip"],
                **off_policy,
            )
        return sb3.DDPG("MlpPolicy", env, action_noise=noise, **off_policy)
    if algo == "crossq":  # sb3-contrib's CrossQ, the reference implementation in PyTorch
        from sb3_contrib import CrossQ

        return CrossQ(
            "MlpPolicy",
            env,
            policy_delay=a["policy_delay"],
            ent_coef=f"auto_{a['init_temperature']}",
            target_entropy=a["target_entropy"],
            policy_kwargs=dict(
                net_arch=dict(pi=list(a["actor_hidden_sizes"]), qf=list(a["critic_hidden_sizes"])),
                n_critics=a["num_critics"],
                batch_norm_momentum=a["batch_norm_momentum"],
                renorm_warmup_steps=a["renorm_warmup_steps"],
                optimizer_kwargs=dict(betas=(a["adam_beta1"], 0.999)),
            ),
            **replay,
        )
    if algo == "ppo":
        lr = a["lr"]
        return sb3.PPO(
            "MlpPolicy",
            env,
            learning_rate=(lambda progress: progress * lr) if a["anneal_lr"] else lr,
            n_steps=a["num_steps"],
            batch_size=a["num_envs"] * a["num_steps"] // a["num_minibatches"],
            n_epochs=a["update_epochs"],
            gae_lambda=a["gae_lambda"],
            clip_range=a["clip_coef"],
            clip_range_vf=a["clip_coef"] if a["clip_value_loss"] else None,
            ent_coef=a["ent_coef"],
            vf_coef=a["vf_coef"] / 2,  # rlrun's value loss is ½·MSE, SB3's the plain MSE
            max_grad_norm=a["max_grad_norm"],
            normalize_advantage=a["normalize_advantage"],
            policy_kwargs=dict(
                net_arch=dict(pi=list(a["hidden_sizes"]), vf=list(a["hidden_sizes"])),
                activation_fn={"tanh": nn.Tanh, "relu": nn.ReLU}[a["activation"]],
                ortho_init=a["ortho_init"],
                log_std_init=a["log_std_init"],
            ),
            **common,
        )
    if algo == "dqn":
        return sb3.DQN(
            "MlpPolicy",
            env,
            learning_rate=a["lr"],
            buffer_size=a["buffer_size"],
            learning_starts=a["learning_starts"],
            batch_size=a["batch_size"],
            tau=a["tau"],
            train_freq=a["train_every"],
            gradient_steps=a["gradient_steps"],
            target_update_interval=a["target_update_every"],
            exploration_fraction=a["exploration_fraction"],
            exploration_initial_eps=a["start_epsilon"],
            exploration_final_eps=a["end_epsilon"],
            max_grad_norm=a["max_grad_norm"] or float("inf"),
            policy_kwargs=dict(net_arch=list(a["hidden_sizes"])),
            **common,
        )
    raise ValueError(f"no SB3 mapping for {algo}")


def run_sb3(spec: dict) -> dict:
    """Train SB3 for spec["steps"], evaluating every spec["eval_every"] steps (timed apart)."""
    import gymnasium as gym
    import torch
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    torch.set_num_threads(spec["threads"])
    config = rlrun_config(SETTINGS_FROM.get(spec["algo"], spec["algo"]), spec["env"], spec["overrides"])
    env_id = config["env"]["id"]
    algo = config["algo"]
    if spec["algo"] == "ppo":
        env = DummyVecEnv([lambda: gym.make(env_id) for _ in range(algo["num_envs"])])
        if algo["normalize_obs"] or algo["normalize_reward"]:
            env = VecNormalize(env, norm_obs=algo["normalize_obs"], norm_reward=algo["normalize_reward"], gamma=algo["gamma"])
    else:
        env = gym.make(env_id)
    model = sb3_model(spec["algo"], config, env, spec["seed"], spec["device"])
    eval_env = gym.make(env_id)
    evals: dict[int, float] = {}
    eval_train_seconds: dict[int, float] = {}
    eval_seconds = [0.0]

    class Evaluate(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps // spec["eval_every"] > (self.num_timesteps - self.training_env.num_envs) // spec["eval_every"]:
                eval_train_seconds[self.num_timesteps] = time.perf_counter() - training_start - eval_seconds[0]
                start = time.perf_counter()
                if isinstance(self.training_env, VecNormalize):
                    self.training_env.training = False
                policy = model if not isinstance(self.training_env, VecNormalize) else _Normalized(model, self.training_env)
                mean, _ = evaluate_policy(policy, eval_env, n_eval_episodes=spec["eval_episodes"], deterministic=True)
                if isinstance(self.training_env, VecNormalize):
                    self.training_env.training = True
                evals[self.num_timesteps] = float(mean)
                eval_seconds[0] += time.perf_counter() - start
            return True

    training_start = time.perf_counter()
    model.learn(total_timesteps=spec["steps"], callback=Evaluate())
    train_seconds = time.perf_counter() - training_start - eval_seconds[0]
    # SB3's PPO finishes its last rollout, so it may run past spec["steps"]; count what it ran.
    return {
        "train_sps": round(model.num_timesteps / train_seconds, 2),
        "steps_run": model.num_timesteps,
        "eval_returns": evals,
        "eval_train_seconds": eval_train_seconds,
    }


class _Normalized:
    """Evaluates `model` on raw observations, normalised with the frozen training statistics."""

    def __init__(self, model, vec_normalize) -> None:
        self.model, self.vec_normalize = model, vec_normalize

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        return self.model.predict(self.vec_normalize.normalize_obs(obs), state, episode_start, deterministic)


# ----- the table ------------------------------------------------------------------------------
def markdown(results: list[dict]) -> str:
    """Speed, rlrun against SB3 for the same algorithm and settings (methods with overrides
    of their own have no SB3 partner and are left out)."""
    results = [r for r in results if method_label(r) == f"{r['runner']}:{r['algo']}"]
    lines = [
        "| algo | env | device | threads | rlrun steps/s | SB3 steps/s | ratio | pairs: ratio range | rlrun final return | SB3 final return | rlrun peak RSS MiB | SB3 peak RSS MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def key(r: dict) -> tuple:
        return r["algo"], r["env"], r.get("device", "cpu"), r["threads"]  # a result without a device is a CPU run

    for algo, env, device, threads in sorted({key(r) for r in results}, key=lambda k: (k[0], k[2], k[3])):
        runs = {
            runner: [r for r in results if key(r) == (algo, env, device, threads) and r["runner"] == runner]
            for runner in ("rlrun", "sb3")
        }
        if not runs["rlrun"] or not runs["sb3"]:
            continue  # one side only: nothing to compare

        def mean(runner: str, key: str, runs: dict = runs) -> float:
            return statistics.mean(float(r[key]) for r in runs[runner])

        def final(runner: str, runs: dict = runs) -> float:
            return statistics.mean(float(r["eval_returns"][max(r["eval_returns"], key=int)]) for r in runs[runner])

        ratios = pair_ratios(runs["rlrun"], runs["sb3"])
        if not ratios:
            continue  # no seed run by both sides
        spread = f"{len(ratios)}: {min(ratios):.2f}–{max(ratios):.2f}×" if len(ratios) > 1 else "1"
        lines.append(
            f"| {algo} | {env} | {device} | {threads} | {mean('rlrun', 'train_sps'):.0f} | {mean('sb3', 'train_sps'):.0f} | "
            f"{statistics.median(ratios):.2f}× | {spread} | {final('rlrun'):.1f} | {final('sb3'):.1f} | "
            f"{mean('rlrun', 'peak_rss_mib'):.0f} | {mean('sb3', 'peak_rss_mib'):.0f} |"
        )
    return "\n".join(lines)


def pair_ratios(rlrun_runs: list[dict], sb3_runs: list[dict]) -> list[float]:
    """rlrun ÷ SB3 training steps/s of each pair run back to back (same seed and repeat).
    Runs without a partner (one side of a merge cut short) are left out."""
    sb3 = {(r["seed"], r.get("repeat", 0)): r["train_sps"] for r in sb3_runs}
    return [r["train_sps"] / sb3[key] for r in rlrun_runs if (key := (r["seed"], r.get("repeat", 0))) in sb3]


def learning_markdown(results: list[dict], thresholds: dict[str, float]) -> str:
    """Per method and env: final eval returns across seeds, their IQM (the 25% trimmed mean)
    with its 95% bootstrap interval (the report's statistics, rlrun/report/stats.py), training
    steps/s and, where the env has a threshold, the median time to reach it."""
    from rlrun.report.stats import Bootstrap, iqm

    lines = [
        "| env | method | seeds | final eval returns | IQM | 95% bootstrap CI | steps/s | s per 100k steps "
        "| threshold | reached | median steps to it | median training s to it |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for env in sorted({r["env"] for r in results}):
        for method in dict.fromkeys(method_label(r) for r in results if r["env"] == env):
            # One result per seed: the first thread count's (returns do not depend on threads).
            runs = {}
            for r in results:
                if r["env"] == env and method_label(r) == method:
                    runs.setdefault(r["seed"], r)
            finals = [float(r["eval_returns"][max(r["eval_returns"], key=int)]) for r in runs.values()]
            estimate = Bootstrap(resamples=10_000).estimate(iqm, finals)
            sps = statistics.mean(float(r["train_sps"]) for r in runs.values())
            threshold = thresholds.get(env)
            reached = "", "", ""
            if threshold is not None:
                times = [time_to(r, threshold) for r in runs.values()]
                hits = sum(t is not None for t in times)
                reached = (
                    f"{hits}/{len(times)}",
                    median_time([t and t[0] for t in times], "{:.0f}"),
                    median_time([t and t[1] for t in times], "{:.0f}"),
                )
            lines.append(
                f"| {env} | {method} | {len(finals)} | {', '.join(f'{v:.1f}' for v in finals)} | {float(estimate.value):.1f} "
                f"| [{float(estimate.low):.1f}, {float(estimate.high):.1f}] | {sps:.1f} | {100_000 / sps:.0f} "
                f"| {'' if threshold is None else f'{threshold:g}'} | {' | '.join(reached)} |"
            )
    return "\n".join(lines)


def offline_speed_markdown(results: list[dict]) -> str:
    """Gradient steps/s, rlrun against d3rlpy for the same algorithm and dataset, each pair run
    back to back (methods with overrides of their own have no partner and are left out)."""
    results = [r for r in results if method_label(r) == f"{r['runner']}:{r['algo']}"]
    lines = [
        "| algo | dataset | threads | rlrun steps/s | d3rlpy steps/s | ratio | pairs: ratio range | rlrun peak RSS MiB | d3rlpy peak RSS MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for algo, env, threads in sorted({(r["algo"], r["env"], r["threads"]) for r in results}):
        runs = {
            runner: [r for r in results if (r["algo"], r["env"], r["threads"], r["runner"]) == (algo, env, threads, runner)]
            for runner in ("rlrun", "d3rlpy")
        }
        ratios = pair_ratios(runs["rlrun"], runs["d3rlpy"])
        if not ratios:
            continue  # one side only, or no seed run by both: nothing to compare

        def mean(runner: str, key: str, runs: dict = runs) -> float:
            return statistics.mean(float(r[key]) for r in runs[runner])

        spread = f"{len(ratios)}: {min(ratios):.2f}–{max(ratios):.2f}×" if len(ratios) > 1 else "1"
        lines.append(
            f"| {algo} | {env} | {threads} | {mean('rlrun', 'train_sps'):.0f} | {mean('d3rlpy', 'train_sps'):.0f} | "
            f"{statistics.median(ratios):.2f}× | {spread} | {mean('rlrun', 'peak_rss_mib'):.0f} | {mean('d3rlpy', 'peak_rss_mib'):.0f} |"
        )
    return "\n".join(lines)


def offline_scores_markdown(results: list[dict]) -> str:
    """Per method and dataset: the final normalised score of each seed (the return where the
    dataset has no reference scores), their IQM with its 95% bootstrap interval (the report's
    statistics, rlrun/report/stats.py), and gradient steps/s."""
    from rlrun.report.stats import Bootstrap, iqm

    lines = [
        "| dataset | method | seeds | final normalised scores | IQM | 95% bootstrap CI | gradient steps/s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for env in sorted({r["env"] for r in results}):
        for method in dict.fromkeys(method_label(r) for r in results if r["env"] == env):
            runs = {}  # one result per seed: its first repeat's
            for r in results:
                if r["env"] == env and method_label(r) == method:
                    runs.setdefault(r["seed"], r)
            finals = [final_score(r) for r in runs.values()]
            estimate = Bootstrap(resamples=10_000).estimate(iqm, finals)
            sps = statistics.mean(float(r["train_sps"]) for r in runs.values())
            lines.append(
                f"| {env} | {method} | {len(finals)} | {', '.join(f'{v:.1f}' for v in finals)} | {float(estimate.value):.1f} "
                f"| [{float(estimate.low):.1f}, {float(estimate.high):.1f}] | {sps:.1f} |"
            )
    return "\n".join(lines)


def final_score(result: dict) -> float:
    """The last evaluation's normalised score, or its return without reference scores."""
    values = result.get("eval_normalized_scores") or result["eval_returns"]
    return float(values[max(values, key=int)])


def method_label(result: dict) -> str:
    """Results written before --methods existed name only algo and runner."""
    return result.get("method", f"{result['runner']}:{result['algo']}")


def time_to(result: dict, threshold: float) -> tuple[int, float] | None:
    """(environment steps, training seconds) at the first evaluation reaching `threshold`;
    None if none did."""
    seconds = result.get("eval_train_seconds", {})
    for step, value in sorted(result["eval_returns"].items(), key=lambda item: int(item[0])):
        if value >= threshold:
            return int(step), float(seconds.get(step, float("nan")))
    return None


def median_time(times: list[float | None], form: str) -> str:
    """The median over seeds, counting a seed that never reached the threshold as infinitely
    late: "never" when at least half never did."""
    ordered = sorted(math.inf if t is None else t for t in times)
    middle = statistics.median(ordered)
    return "never" if math.isinf(middle) else form.format(middle)


if __name__ == "__main__":
    main()
