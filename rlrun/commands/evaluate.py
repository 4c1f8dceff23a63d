"""`rlrun evaluate=<run or sweep folder> [options]`: a saved agent's episodes, printed and
written to <run>/evaluations/."""

from __future__ import annotations

import csv
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rlrun.config import ConfigError
from rlrun.core.checkpoint import latest, load
from rlrun.core.folders import strict_json
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
    if options.get("video") not in (None, True, False):
        raise ConfigError(f"video={options['video']!r} must be true or false")
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
        origin = other_run(folder, checkpoint)
        result = _evaluate_checkpoint(folder, checkpoint, options, origin)
        print(_describe(result))
        return
    jobs = job_folders(folder)
    if not jobs:
        raise ConfigError(f"evaluate={folder_text} is neither a run folder nor a sweep folder (no checkpoints/, no */.hydra/)")
    checkpoints = [(job, choose_checkpoint("evaluate", job, options.get("which"))) for job in jobs]
    origins = [other_run(job, checkpoint) for job, checkpoint in checkpoints]  # every refusal before any episode
    started = time.strftime("%Y-%m-%d_%H-%M-%S")
    rows = []
    for (job, checkpoint), origin in zip(checkpoints, origins):
        result = _evaluate_checkpoint(job, checkpoint, options, origin)
        print(f"{job.name}: {_describe(result)}")
        rows.append({"job": job.name, **{k: v for k, v in result.items() if not isinstance(v, list)}})
    _write_table(folder, started, rows)


@dataclass(frozen=True)
class OtherRun:
    """Where a checkpoint from outside the evaluated run's checkpoints/ comes from."""

    name: str  # its run folder's name, or the file's own stem when it lies in no run folder
    folder: Path | None  # its run folder, if it lies in one (<run>/checkpoints/<file>)


def other_run(run_dir: Path, checkpoint: Path) -> OtherRun | None:
    """None for a checkpoint of the run folder itself; for another one (which=<path>), where
    it comes from, after a warning if it was trained with another seed. ConfigError if it
    is of another algorithm or environment than the run: its result would say nothing about it."""
    if checkpoint.resolve().parent == (run_dir / "checkpoints").resolve():
        return None
    header = load(checkpoint, mmap=True)
    config = header["config"] if isinstance(header["config"], dict) else {}
    ours = _run_identity(run_dir)
    theirs = (header["algo"], header["env_id"], config.get("seed"))
    if ours is not None and ours[:2] != theirs[:2]:
        raise ConfigError(
            f"which={checkpoint} is a checkpoint of algo={theirs[0]} on {theirs[1]}, but {run_dir} is a run of "
            f"algo={ours[0]} on {ours[1]}; evaluate it with its own run folder, or a run of the same algorithm and environment"
        )
    in_run = checkpoint.parent.name == "checkpoints"
    folder = checkpoint.parent.parent if in_run else None
    origin = OtherRun(folder.name if folder else checkpoint.stem, folder)
    if ours is not None and ours[2] != theirs[2]:
        print(
            f"rlrun: warning: which={checkpoint} was trained with seed={theirs[2]}, {run_dir} with seed={ours[2]}: its "
            f"result is filed under {run_dir / 'evaluations'} as a result of that other run ({origin.name})",
            file=sys.stderr,
        )
    return origin


def _run_identity(run_dir: Path) -> tuple[str, str, int | None] | None:
    """(algo, env id, seed) of a run folder, from its newest checkpoint, else its composed
    config; None if neither says."""
    own = latest(run_dir)
    if own is not None:
        header = load(own, mmap=True)
        config = header["config"] if isinstance(header["config"], dict) else {}
        return header["algo"], header["env_id"], config.get("seed")
    config_file = run_dir / ".hydra" / "config.yaml"
    try:
        config = OmegaConf.to_container(OmegaConf.load(config_file), resolve=True)
        return str(config["algo"]["name"]), str(config["env"]["id"]), config.get("seed")
    except (OSError, KeyError, TypeError, OmegaConfBaseException):
        return None


def _evaluate_checkpoint(run_dir, checkpoint, options: dict, origin: OtherRun | None = None) -> dict:
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
    # The run the result belongs to: a checkpoint of another run is filed under a name of its own.
    summary["run"] = str(run_dir if origin is None else (origin.folder or checkpoint))
    # A sweep job's folder name can be most of the file system's 255 bytes: the file name keeps
    # its start (the job number), the result the whole path.
    stem = checkpoint.stem if origin is None else f"other-{origin.name[:100]}-{checkpoint.stem}"
    path = new_file(run_dir / "evaluations", stem, ".json")
    path.write_text(strict_json(summary))
    summary["written"] = str(path)
    return summary


def _describe(result: dict) -> str:
    return (
        f"{result['algo']} on {result['env_id']}, {result['checkpoint']} (step {result['step']}) of run {result['run']}: "
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
