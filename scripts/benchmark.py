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
"""

from __future__ import annotations

import argparse
import json
import os
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algos", default="sac,td3,ppo,dqn")
    parser.add_argument("--env", default=None, help="one env for every algorithm (default: HalfCheetah, CartPole for dqn)")
    parser.add_argument("--steps", type=int, default=20_000, help="environment steps per run")
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

    args.out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        write_tables([run for folder in args.merge for run in json.loads((folder / "benchmark.json").read_text())], args.out)
        return
    runners = {"rlrun": run_rlrun_process, "sb3": run_sb3_process}
    unknown = set(args.runners.split(",")) - set(runners)
    if unknown:
        parser.error(f"--runners {args.runners}: unknown {sorted(unknown)}; valid: rlrun, sb3")
    eval_every = args.eval_every or max(1, args.steps // 4)
    results = []
    for algo in args.algos.split(","):
        env = args.env or DEFAULT_ENVS[algo]
        for threads in map(int, args.threads.split(",")):
            for seed in map(int, args.seeds.split(",")):
                for repeat in range(args.repeats):
                    spec = {
                        "algo": algo,
                        "env": env,
                        "steps": args.steps,
                        "threads": threads,
                        "seed": seed,
                        "repeat": repeat,
                        "device": args.device,
                        "eval_every": eval_every,
                        "eval_episodes": args.eval_episodes,
                        "overrides": args.set,
                    }
                    for name in args.runners.split(","):
                        result = {**spec, **runners[name](spec)}
                        print(json.dumps(result), flush=True)
                        results.append(result)
                        # Written after every run, so a long comparison cut short keeps what it measured.
                        (args.out / "benchmark.json").write_text(json.dumps(results, indent=2) + "\n")
    write_tables(results, args.out)


def write_tables(results: list[dict], out: Path) -> None:
    (out / "benchmark.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results) + "\n\n" + learning_markdown(results)
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
            f"env={spec['env']}",
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
    return {
        "runner": "rlrun",
        "train_sps": summary["sps"],
        "steps_run": summary["total_steps"],
        "wall_s": round(wall, 1),
        "peak_rss_mib": rss,
        "eval_returns": evals,
    }


def run_sb3_process(spec: dict) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "sb3", "--spec", json.dumps(spec)]
    stdout, wall, rss = _run(command, spec["threads"])
    return {**json.loads(stdout.strip().splitlines()[-1]), "runner": "sb3", "wall_s": round(wall, 1), "peak_rss_mib": rss}


# ----- the SB3 side ---------------------------------------------------------------------------
def rlrun_config(algo: str, env: str, overrides: list[str]) -> dict:
    """rlrun's composed config for this pair, as plain values (tuned files and overrides applied)."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    with initialize_config_module("rlrun.configs", version_base="1.3"):
        config = compose("config", overrides=[f"algo={algo}", f"env={env}", *overrides])
        return OmegaConf.to_container(config, resolve=True)


def sb3_model(algo: str, config: dict, env, seed: int, device: str = "cpu"):
    """An SB3 model with the hyperparameters of rlrun's `config["algo"]`."""
    import numpy as np
    import stable_baselines3 as sb3
    from stable_baselines3.common.noise import NormalActionNoise
    from torch import nn

    a = config["algo"]
    common = dict(gamma=a["gamma"], seed=seed, device=device, verbose=0)
    if algo in ("sac", "td3", "ddpg"):
        off_policy = dict(
            learning_rate=a["lr"],
            buffer_size=a["buffer_size"],
            learning_starts=a["learning_starts"],
            batch_size=a["batch_size"],
            tau=a["tau"],
            train_freq=1,
            gradient_steps=a["updates_per_step"],
            policy_kwargs=dict(net_arch=list(a["hidden_sizes"])),
            **common,
        )
        if algo == "sac":
            return sb3.SAC("MlpPolicy", env, ent_coef=f"auto_{a['init_temperature']}", **off_policy)
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
            learning_rate=a["lr"],
            buffer_size=a["buffer_size"],
            learning_starts=a["learning_starts"],
            batch_size=a["batch_size"],
            train_freq=1,
            gradient_steps=a["updates_per_step"],
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
            **common,
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
    config = rlrun_config(spec["algo"], spec["env"], spec["overrides"])
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
    eval_seconds = [0.0]

    class Evaluate(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps // spec["eval_every"] > (self.num_timesteps - self.training_env.num_envs) // spec["eval_every"]:
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

    start = time.perf_counter()
    model.learn(total_timesteps=spec["steps"], callback=Evaluate())
    train_seconds = time.perf_counter() - start - eval_seconds[0]
    # SB3's PPO finishes its last rollout, so it may run past spec["steps"]; count what it ran.
    return {"train_sps": round(model.num_timesteps / train_seconds, 2), "steps_run": model.num_timesteps, "eval_returns": evals}


class _Normalized:
    """Evaluates `model` on raw observations, normalised with the frozen training statistics."""

    def __init__(self, model, vec_normalize) -> None:
        self.model, self.vec_normalize = model, vec_normalize

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        return self.model.predict(self.vec_normalize.normalize_obs(obs), state, episode_start, deterministic)


# ----- the table ------------------------------------------------------------------------------
def markdown(results: list[dict]) -> str:
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


def learning_markdown(results: list[dict]) -> str:
    """Final eval returns across seeds: IQM (the 25% trimmed mean) and its 95% bootstrap
    interval per runner, with the report's statistics (rlrun/report/stats.py)."""
    from rlrun.report.stats import Bootstrap, iqm

    lines = [
        "| algo | env | runner | seeds | final eval returns | IQM | 95% bootstrap CI |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for algo, env in sorted({(r["algo"], r["env"]) for r in results}):
        for runner in ("rlrun", "sb3"):
            # One result per seed: the first thread count's (returns do not depend on threads).
            runs = {r["seed"]: r for r in results if (r["algo"], r["env"], r["runner"]) == (algo, env, runner)}
            finals = [float(r["eval_returns"][max(r["eval_returns"], key=int)]) for r in runs.values()]
            if not finals:
                continue
            estimate = Bootstrap(resamples=10_000).estimate(iqm, finals)
            lines.append(
                f"| {algo} | {env} | {runner} | {len(finals)} | {', '.join(f'{v:.1f}' for v in finals)} | "
                f"{float(estimate.value):.1f} | [{float(estimate.low):.1f}, {float(estimate.high):.1f}] |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
