"""`rlrun combine=<dataset>,<dataset>[,...] out=<path or id>`: one Minari dataset holding every
episode of the given ones, such as D4RL's medium-expert mixture made of a medium and an expert
dataset of one environment (rlrun/envs/datasets.py: combine_datasets, by Minari's own
minari.combine_datasets)."""

from __future__ import annotations

from rlrun.config import ConfigError
from rlrun.core.saved_run import parse_options
from rlrun.envs.datasets import combine_datasets

COMBINE_OPTIONS = {"out": "a folder (starting with /, ./ or ~) or a Minari id such as rlrun/pendulum-medium-expert-v0 (required)"}


def main(sources_text: str, args: list[str]) -> None:
    options = parse_options("combine", args, COMBINE_OPTIONS)
    sources = [source for source in sources_text.split(",") if source]
    if len(sources) < 2:
        raise ConfigError(
            "combine= needs two or more datasets separated by commas, "
            "e.g. combine=./datasets/pendulum-medium-v0,./datasets/pendulum-expert-v0 out=./datasets/pendulum-medium-expert-v0"
        )
    if not options.get("out"):
        raise ConfigError(
            "combine= needs out=<folder or Minari id> for the new dataset, e.g. out=./datasets/pendulum-medium-expert-v0"
        )
    out = str(options["out"])
    folder, info = combine_datasets(sources, out)
    scores = (
        "no reference scores (a source has none)"
        if info.ref_min_score is None
        else f"ref_min_score {info.ref_min_score:.1f}, ref_max_score {info.ref_max_score:.1f}"
    )
    print(
        f"{len(sources)} datasets → {folder}: {info.episodes} episodes, {info.steps} steps, {scores} (train on it with dataset={out})"
    )
