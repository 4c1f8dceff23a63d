"""`rlrun evaluate=<run or sweep folder> [options]`: a saved agent's episodes, printed and
written to <run>/evaluations/."""

from __future__ import annotations

import csv
import io
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rlrun.config import ConfigError, RunError
from rlrun.core.checkpoint import latest, load
from rlrun.core.folders import WriteFailed, check_writable, describe_write_error, strict_json
from rlrun.core.saved_run import (
    choose_checkpoint,
    is_run_folder,
    job_folders,
    load_agent,
    parse_options,
    read_stored_yaml,
    unused_path,
    write_new_file,
)
from rlrun.envs.episodes import EVAL_SEED_OFFSET, evaluate
from rlrun.envs.make import make_env
from rlrun.envs.video import IncompleteVideo, check_video_support, record_episodes

EVALUATE_OPTIONS = {
    "which": "last, best, a step number or a .pt path; default last",
    "eval.episodes": "episodes; default the run's eval.episodes",
    "eval.deterministic": "true for the mode of the policy, false to sample; default the run's",
    "seed": "the run seed whose evaluation seed (seed + 10000) starts the episodes; default the run's",
    "device": "auto, cpu or cuda; default auto",
    "video": "true to write videos/eval-<step>/episode-<i>.mp4",
    "eval.target_return": "the return a Decision Transformer (algo=dt) is asked for; default the run's",
    "out": "a folder that takes the run folder's place for what this writes (evaluations/, videos/; a sweep: <out>/<job>/)",
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
    out = Path(str(options["out"])) if options.get("out") is not None else None
    if "out" in options and out is None:
        raise ConfigError("out= needs a folder, e.g. out=./evaluations")
    if is_run_folder(folder):
        into = out or folder
        check_writable("out", into / "evaluations", given=False)
        checkpoint = choose_checkpoint("evaluate", folder, options.get("which"))
        origin = other_run(folder, checkpoint)
        result = _evaluate_checkpoint(folder, checkpoint, options, origin, into)
        print(_describe(result))
        return
    jobs = job_folders(folder)
    if not jobs:
        raise ConfigError(f"evaluate={folder_text} is neither a run folder nor a sweep folder (no checkpoints/, no */.hydra/)")
    into = {job: out / job.name if out else job for job in jobs}
    for path in [out or folder, *into.values()]:  # every folder checked before any episode
        check_writable("out", path / "evaluations", given=False)
    # A job without the checkpoint asked for is one failed row; a checkpoint of another
    # algorithm (which=<path>) is refused for the whole sweep before any episode.
    chosen: dict[Path, tuple[Path, OtherRun | None] | ConfigError] = {}
    for job in jobs:
        try:
            checkpoint = choose_checkpoint("evaluate", job, options.get("which"))
        except ConfigError as error:
            chosen[job] = error
            continue
        chosen[job] = (checkpoint, other_run(job, checkpoint))
    if all(isinstance(choice, ConfigError) for choice in chosen.values()):
        raise next(iter(chosen.values()))
    started = time.strftime("%Y-%m-%d_%H-%M-%S")
    rows, failed = [], []
    for job, choice in chosen.items():
        try:
            if isinstance(choice, ConfigError):
                raise choice
            checkpoint, origin = choice
            result = _evaluate_checkpoint(job, checkpoint, options, origin, into[job])
        except WriteFailed:  # a full disk fails every job after it too
            raise
        except (ConfigError, RunError) as error:  # an environment that fails, a damaged checkpoint: the next job
            print(f"{job.name}: not evaluated: {error}")
            rows.append({"job": job.name, "error": str(error)})
            failed.append(f"{job.name}: {error}")
            continue
        print(f"{job.name}: {_describe(result)}")
        rows.append({"job": job.name, **{k: v for k, v in result.items() if not isinstance(v, list)}})
    table = _write_table((out or folder) / "evaluations", started, rows)
    if failed:
        more = f"; and {len(failed) - 1} more" if len(failed) > 1 else ""
        raise RunError(f"{len(failed)} of {len(jobs)} jobs not evaluated ({failed[0]}{more}); the table {table} lists each")


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
    if not config_file.is_file():
        return None
    try:
        config = OmegaConf.to_container(OmegaConf.create(read_stored_yaml(config_file)), resolve=True)
        return str(config["algo"]["name"]), str(config["env"]["id"]), config.get("seed")
    except (KeyError, TypeError, ValueError, OmegaConfBaseException):
        return None


def _evaluate_checkpoint(run_dir: Path, checkpoint: Path, options: dict, origin: OtherRun | None, into: Path) -> dict:
    """Evaluate `checkpoint` of `run_dir`; the result goes to `into`/evaluations/ and the videos
    to `into`/videos/ (`into`: the run folder, or the folder out= gave)."""
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
        folder = unused_path(into / "videos", f"eval-{step}")
        try:
            files, result = record_episodes(settings.env, act, folder, episodes, seed, agent=saved.agent)
        except IncompleteVideo as error:
            reason = describe_write_error(error, error.path)
            shutil.rmtree(folder, ignore_errors=True)  # a folder of its own, made for these episodes
            raise WriteFailed(f"cannot write the video {error.final}: {reason}") from error
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
    path = write_new_file(into / "evaluations", stem, ".json", strict_json(summary).encode(), "the evaluation's result")
    summary["written"] = str(path)
    return summary


def _describe(result: dict) -> str:
    return (
        f"{result['algo']} on {result['env_id']}, {result['checkpoint']} (step {result['step']}) of run {result['run']}: "
        f"return {result['return_mean']:.1f} ± {result['return_std']:.1f} over {result['episodes']} episodes, "
        f"length {result['length_mean']:.0f}, {result['wall_time_s']:.1f} s → {result['written']}"
    )


def _write_table(folder: Path, started: str, rows: list[dict]) -> Path:
    columns = [
        "job", "step", "return_mean", "return_std", "length_mean", "episodes", "deterministic", "checkpoint", "written", "error",
    ]  # fmt: skip
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    path = write_new_file(folder, f"sweep-{started}", ".csv", text.getvalue().encode(), "the evaluation table")
    print(f"evaluation table: {path}")
    return path
