"""`rlrun evaluate=<run or sweep folder> [options]`: a saved agent's episodes, printed and
written to <run>/evaluations/."""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import torch

from rlrun.config import ConfigError
from rlrun.core.saved_run import choose_checkpoint, is_run_folder, job_folders, load_agent, new_file, parse_options, unused_path
from rlrun.envs.episodes import EVAL_SEED_OFFSET, evaluate
from rlrun.envs.make import make_env
from rlrun.envs.video import check_video_support, record_episodes

EVALUATE_OPTIONS = {
    "which": "last, best, a step number or a .pt path; default last",
    "eval.episodes": "episodes; default the run's eval.episodes",
    "eval.deterministic": "true for the mode of the policy, false to sample; default the run's",
    "seed": "the run seed whose evaluation seed (seed + 10000) starts the episodes; default the run's",
    "device": "auto, cpu or cuda; default auto",
    "video": "true to write videos/eval-<step>/episode-<i>.mp4",
    "eval.target_return": "the return a Decision Transformer (algo=dt) is asked for; default the run's",
}


def main(folder_text: str, args: list[str]) -> None:
    """Evaluate a run folder's checkpoint (or every run of a sweep folder): print the result
    and write it to <run>/evaluations/<checkpoint>.json, a new file each time."""
    options = parse_options("evaluate", args, EVALUATE_OPTIONS)
    target = options.get("eval.target_return")
    if "eval.target_return" in options and (
        not isinstance(target, (int, float)) or isinstance(target, bool) or not math.isfinite(target)
    ):
        raise ConfigError(
            f"eval.target_return={target} must be a finite number: the return asked for, in the environment's units"
        )
    folder = Path(folder_text)
    if not folder.is_dir():
        raise ConfigError(f"evaluate={folder_text}: no such folder; give a run folder such as outputs/<date>/<time>")
    if is_run_folder(folder):
        checkpoint = choose_checkpoint("evaluate", folder, options.get("which"))
        result = _evaluate_checkpoint(folder, checkpoint, options)
        print(_describe(result))
        return
    jobs = job_folders(folder)
    if not jobs:
        raise ConfigError(f"evaluate={folder_text} is neither a run folder nor a sweep folder (no checkpoints/, no */.hydra/)")
    checkpoints = [(job, choose_checkpoint("evaluate", job, options.get("which"))) for job in jobs]
    started = time.strftime("%Y-%m-%d_%H-%M-%S")
    rows = []
    for job, checkpoint in checkpoints:
        result = _evaluate_checkpoint(job, checkpoint, options)
        print(f"{job.name}: {_describe(result)}")
        rows.append({"job": job.name, **{k: v for k, v in result.items() if not isinstance(v, list)}})
    _write_table(folder, started, rows)


def _evaluate_checkpoint(run_dir, checkpoint, options: dict) -> dict:
    overrides = {key: value for key, value in options.items() if key in ("eval.episodes", "eval.deterministic", "seed")}
    saved = load_agent(checkpoint, overrides, str(options.get("device") or "auto"))
    if "eval.target_return" in options:
        if not hasattr(saved.agent, "target_return"):
            raise ConfigError(f"eval.target_return= is for algo=dt runs; {run_dir} is an algo={saved.plan.algo_name} run")
        saved.agent.target_return = torch.tensor(float(options["eval.target_return"]))
    settings = saved.plan.run_config
    deterministic, episodes, seed = settings.eval.deterministic, settings.eval.episodes, settings.seed + EVAL_SEED_OFFSET
    act = lambda obs: saved.agent.act(obs, deterministic=deterministic)
    step = saved.state["step"]
    start = time.perf_counter()
    videos: list[str] = []
    if options.get("video"):
        check_video_support(settings.env)
        folder = unused_path(run_dir / "videos", f"eval-{step}")
        files, result = record_episodes(settings.env, act, folder, episodes, seed, agent=saved.agent)
        videos = [str(path) for path in files]
    else:
        env = make_env(settings.env, seed, training=False)
        try:
            result = evaluate(act, env, episodes, seed, agent=saved.agent)
        finally:
            env.close()
    wall = time.perf_counter() - start
    summary = {
        "checkpoint": str(checkpoint),
        "step": step,
        "algo": saved.plan.algo_name,
        "env_id": settings.env.id,
        "seed": settings.seed,
        "eval_seed": seed,
        "episodes": episodes,
        "deterministic": deterministic,
        **({"target_return": float(saved.agent.target_return)} if hasattr(saved.agent, "target_return") else {}),
        "device": str(saved.agent.device),
        "return_mean": float(result.returns.mean()),
        "return_std": float(result.returns.std()),
        "length_mean": float(result.lengths.mean()),
        "wall_time_s": round(wall, 3),
        "returns": result.returns.tolist(),
        "lengths": result.lengths.tolist(),
        "videos": videos,
    }
    if saved.plan.dataset is not None:  # an offline run: its dataset's reference scores, if it has them
        summary["normalized_score"] = saved.plan.dataset.normalized_score(summary["return_mean"])
    path = new_file(run_dir / "evaluations", checkpoint.stem, ".json")
    path.write_text(json.dumps(summary, indent=2) + "\n")
    summary["written"] = str(path)
    return summary


def _describe(result: dict) -> str:
    return (
        f"{result['algo']} on {result['env_id']}, {result['checkpoint']} (step {result['step']}): "
        f"return {result['return_mean']:.1f} ± {result['return_std']:.1f} over {result['episodes']} episodes, "
        f"length {result['length_mean']:.0f}, {result['wall_time_s']:.1f} s → {result['written']}"
    )


def _write_table(sweep_dir, started: str, rows: list[dict]) -> None:
    path = new_file(sweep_dir / "evaluations", f"sweep-{started}", ".csv")
    columns = ["job", "step", "return_mean", "return_std", "length_mean", "episodes", "deterministic", "checkpoint", "written"]
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    print(f"evaluation table: {path}")
