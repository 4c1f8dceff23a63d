"""Offline datasets: a Minari dataset (`dataset=<id or path>`) read into host arrays of
transitions, with the environment it was collected on and its reference scores.

Minari stores each episode as T + 1 observations and T actions, rewards, terminations and
truncations; transition t is (o_t, a_t, r_t, o_{t+1}, terminated_t). Minari is the optional
`offline` extra, imported only when a run names a dataset.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np

from rlrun.config import ConfigError

MINARI_INSTALL = "python -m pip install -c constraints.txt -e '.[offline]'"


class Transitions(NamedTuple):
    """Every transition of a dataset, as host arrays with a leading dimension N."""

    obs: np.ndarray  # (N, obs_dim) float32
    actions: np.ndarray  # (N, action_dim) float32, in the environment's units
    rewards: np.ndarray  # (N,) float32
    next_obs: np.ndarray  # (N, obs_dim) float32
    terminated: np.ndarray  # (N,) float32: 1.0 where the episode truly ended; truncations stay 0.0
    first: np.ndarray  # (N,) bool: True at each episode's first transition (sequence models need the episodes)


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset's metadata, read without its data: enough to validate a run."""

    source: str  # as the user gave it (dataset=)
    data_path: Path  # the folder holding metadata.json and the episodes
    dataset_id: str
    env: dict[str, Any]  # the evaluation environment as env.* settings: id, kwargs, max_episode_steps
    observation_space: gym.Space
    action_space: gym.Space
    ref_min_score: float | None  # mean return of a random policy, if the dataset gives one
    ref_max_score: float | None  # mean return of an expert policy, if the dataset gives one
    episodes: int
    steps: int
    longest_episode: int  # the most steps in one episode

    def normalized_score(self, episode_return: float) -> float | None:
        """100 · (R − R_min) / (R_max − R_min), D4RL's normalised score; None without references."""
        if self.ref_min_score is None or self.ref_max_score is None or self.ref_max_score == self.ref_min_score:
            return None
        return 100.0 * (episode_return - self.ref_min_score) / (self.ref_max_score - self.ref_min_score)


def minari_root() -> Path:
    """Where Minari keeps datasets by id: $MINARI_DATASETS_PATH, else ~/.minari/datasets."""
    return Path(os.environ.get("MINARI_DATASETS_PATH") or Path.home() / ".minari" / "datasets")


def _minari():
    try:
        import minari
    except ImportError:
        raise ConfigError(f"dataset= needs Minari, the offline extra: {MINARI_INSTALL}") from None
    return minari


def data_folder(source: str) -> Path:
    """The folder with a dataset's metadata.json: `source` as a path on disk (the dataset's
    folder or its data/ folder), else as a Minari id under minari_root()."""
    for candidate in (Path(source).expanduser(), minari_root() / source):
        for folder in (candidate / "data", candidate):
            if (folder / "metadata.json").is_file():
                return folder
    raise ConfigError(
        f"dataset={source}: no Minari dataset there nor under {minari_root() / source} (MINARI_DATASETS_PATH or "
        f"~/.minari/datasets); get one with `minari download {source}` on a machine with network, "
        "or make one with `rlrun collect=<run folder> out=<path or id>`"
    )


def _load(source: str):
    """The MinariDataset for `source`: minari.load_dataset for an id under the Minari root,
    MinariDataset for a folder on disk."""
    minari = _minari()
    folder = data_folder(source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Minari warns about missing optional metadata (author, ...)
        try:
            if folder == (minari_root() / source / "data") and not Path(source).expanduser().exists():
                return minari.load_dataset(source), folder
            return minari.MinariDataset(folder), folder
        except (ValueError, KeyError, OSError) as error:
            raise ConfigError(f"dataset={source} cannot be read as a Minari dataset ({folder}): {error}") from None


def open_dataset(source: str) -> DatasetInfo:
    """The dataset's metadata; ConfigError (one line) if it is missing, unreadable, empty or
    without an environment to evaluate on."""
    dataset, folder = _load(source)
    if dataset.total_episodes == 0 or dataset.total_steps == 0:
        raise ConfigError(f"dataset={source} is empty: it holds no transitions ({folder})")
    # recover_environment(eval_env=True)'s choice, without making the environment here.
    spec = getattr(dataset, "_eval_env_spec", None) or dataset.env_spec
    if spec is None:
        raise ConfigError(
            f"dataset={source} names no environment to evaluate on (no env_spec in {folder / 'metadata.json'}); "
            "make it with env= or eval_env= set"
        )
    metadata = dataset.storage.metadata
    ref_min, ref_max = metadata.get("ref_min_score"), metadata.get("ref_max_score")
    env = {
        "id": spec.id,
        "kwargs": {key: value for key, value in (spec.kwargs or {}).items() if key != "render_mode"},
        "max_episode_steps": spec.max_episode_steps,
    }
    lengths = [int(episode["total_steps"]) for episode in dataset.storage.get_episode_metadata(dataset.episode_indices)]
    return DatasetInfo(
        source=source,
        data_path=folder,
        dataset_id=dataset.id,
        env=env,
        observation_space=dataset.observation_space,
        action_space=dataset.action_space,
        ref_min_score=None if ref_min is None else float(ref_min),
        ref_max_score=None if ref_max is None else float(ref_max),
        episodes=dataset.total_episodes,
        steps=dataset.total_steps,
        longest_episode=max(lengths),
    )


def load_transitions(info: DatasetInfo) -> Transitions:
    """Every transition of the dataset as host arrays; ConfigError naming the episode if one
    holds a NaN or an infinity, or does not fit the dataset's spaces."""
    dataset, _ = _load(info.source)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in Transitions._fields}
    for episode in dataset.iterate_episodes():
        obs = np.asarray(episode.observations, dtype=np.float32)
        actions = np.asarray(episode.actions, dtype=np.float32)
        rewards = np.asarray(episode.rewards, dtype=np.float32)
        terminated = np.asarray(episode.terminations, dtype=np.float32)
        steps = len(rewards)
        if obs.ndim != 2 or len(obs) != steps + 1 or len(actions) != steps:
            raise ConfigError(
                f"dataset={info.source}: episode {episode.id} has {len(obs)} observations of shape {obs.shape[1:]} for "
                f"{steps} steps; rlrun's offline algorithms take flat vector observations, one more than the steps"
            )
        for name, values in (("observations", obs), ("actions", actions), ("rewards", rewards)):
            if not np.isfinite(values).all():
                raise ConfigError(
                    f"dataset={info.source}: episode {episode.id} has a NaN or infinite value in its {name}; "
                    "remove or repair that episode"
                )
        parts["obs"].append(obs[:-1])
        parts["actions"].append(actions.reshape(steps, -1))
        parts["rewards"].append(rewards)
        parts["next_obs"].append(obs[1:])
        parts["terminated"].append(terminated)
        parts["first"].append(np.arange(steps) == 0)
    if sum(len(rewards) for rewards in parts["rewards"]) == 0:
        raise ConfigError(f"dataset={info.source} is empty: it holds no transitions ({info.data_path})")
    return Transitions(**{name: np.concatenate(values) for name, values in parts.items()})


def episode_returns(data: Transitions) -> np.ndarray:
    """Each episode's return: the rewards from one of its first transitions to the next's, summed."""
    return np.add.reduceat(data.rewards.astype(np.float64), np.flatnonzero(data.first))


class Episode(NamedTuple):
    """One episode as Minari stores it: T + 1 observations, T of everything else."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    seed: int | None = None


def is_path(out: str) -> bool:
    """Whether `out` names a folder on disk rather than a Minari id (which may hold slashes too)."""
    return out.startswith(("/", "./", "../", "~"))


def write_dataset(
    out: str,
    episodes: list[Episode],
    env: str | gym.envs.registration.EnvSpec,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
    algorithm_name: str = "rlrun",
    description: str = "",
) -> Path:
    """Write `episodes` as a Minari dataset (minari.create_dataset_from_buffers): under the
    Minari root as the id `out`, or at the path `out` (a folder whose name is an id such as
    pendulum-expert-v0). Returns the dataset's folder."""
    minari = _minari()
    from minari.data_collector.episode_buffer import EpisodeBuffer

    folder, dataset_id = _new_dataset_folder(out)
    buffers = [
        EpisodeBuffer(
            id=i,
            seed=episode.seed,
            observations=np.asarray(episode.observations),
            actions=np.asarray(episode.actions),
            rewards=np.asarray(episode.rewards),
            terminations=np.asarray(episode.terminations, dtype=bool),
            truncations=np.asarray(episode.truncations, dtype=bool),
            infos={},
        )
        for i, episode in enumerate(episodes)
    ]
    with _minari_root(folder.parent if is_path(out) else minari_root()):
        try:
            minari.create_dataset_from_buffers(
                dataset_id,
                buffers,
                env=env,
                algorithm_name=algorithm_name,
                description=description,
                ref_min_score=ref_min_score,
                ref_max_score=ref_max_score,
            )
        except ValueError as error:  # a malformed id
            raise ConfigError(f"out={out}: {error}") from None
    return folder


def combine_datasets(sources: list[str], out: str) -> tuple[Path, DatasetInfo]:
    """Every episode of the `sources` datasets in one new dataset at `out` (a path or an id, as
    for write_dataset), with Minari's combine_datasets; they must share an environment.
    Reference scores: the sources' mean ref_min_score (each a random policy's return on the same
    environment) and their largest ref_max_score (the best policy among them), as D4RL scores a
    medium-expert mixture against the expert; none if a source has none."""
    minari = _minari()
    infos = [open_dataset(source) for source in sources]
    environments = {(info.env["id"], repr(info.env["kwargs"]), info.env["max_episode_steps"]) for info in infos}
    if len(environments) > 1:
        named = ", ".join(f"{info.source}: {info.env['id']} {info.env['kwargs'] or ''}".strip() for info in infos)
        raise ConfigError(f"combine= needs datasets of one environment; these differ ({named})")
    folder, dataset_id = _new_dataset_folder(out)
    datasets = [_load(source)[0] for source in sources]
    with _minari_root(folder.parent if is_path(out) else minari_root()):
        try:
            combined = minari.combine_datasets(datasets, dataset_id)
        except ValueError as error:  # spaces or specs that Minari will not combine
            raise ConfigError(f"combine=: Minari refuses to combine {', '.join(sources)}: {error}") from None
    if all(info.ref_min_score is not None and info.ref_max_score is not None for info in infos):
        ref_min = float(np.mean([info.ref_min_score for info in infos]))
        ref_max = max(info.ref_max_score for info in infos)
        combined.storage.update_metadata({"ref_min_score": ref_min, "ref_max_score": ref_max})
    return folder, open_dataset(str(folder) if is_path(out) else out)


def _new_dataset_folder(out: str) -> tuple[Path, str]:
    """The folder a new dataset `out` goes to and its Minari id; ConfigError if the name is no
    id or the folder exists."""
    folder = Path(out).expanduser() if is_path(out) else minari_root() / out
    dataset_id = folder.name if is_path(out) else out
    if not re.fullmatch(r"([-\w]+/)*[-\w]+-v\d+", dataset_id):
        raise ConfigError(
            f"out={out}: a dataset's name is letters, digits, - and _, ending in -v<version>, e.g. pendulum-expert-v0"
        )
    if folder.exists():
        raise ConfigError(f"out={out}: {folder} already exists; choose another name, or delete it first")
    return folder, dataset_id


@contextlib.contextmanager
def _minari_root(root: Path) -> Iterator[None]:
    """Minari writes new datasets under $MINARI_DATASETS_PATH: pointed at `root` while inside."""
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Minari warns about optional metadata left out (author, ...)
            yield
    finally:
        if previous is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous
