"""Published final scores to compare runs with (references/*.csv), each row citing its source
and the training budget it refers to.

A reference matches runs by task name, without the version suffix (HalfCheetah-v3 matches a
run on HalfCheetah-v5): versions of a MuJoCo task differ in details, so a reference line says
which version and budget it comes from. Rows with algo `random` hold a random policy's score,
used for normalisation:

    normalised score = (score - random) / (reference - random)

where reference is the task's `human` score when the table lists one (Atari's human-normalised
score, Mnih et al. 2015), else the highest score the table lists for the task, and random is 0
when the table has no random score for it. 1.0 means "as good as a human tester" or "as good
as the best published result in the table"; 0.0 "as good as a random policy" (or a zero score).
"""

from __future__ import annotations

import csv
import difflib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlrun.config import ConfigError

FOLDER = Path(__file__).resolve().parent / "references"
COLUMNS = ("env_id", "algo", "score", "steps", "source")
RANDOM = "random"
HUMAN = "human"  # a human tester's score: where a task has one, it is what 1.0 stands for


def task_name(env_id: str) -> str:
    """HalfCheetah-v5 → HalfCheetah; ALE/Pong-v5 and PongNoFrameskip-v4 → Pong."""
    name = env_id.rsplit(":", 1)[-1].rsplit("/", 1)[-1]
    name = re.sub(r"-v\d+$", "", name)
    return name.removesuffix("NoFrameskip")


@dataclass(frozen=True)
class ReferenceScore:
    env_id: str
    algo: str
    score: float
    steps: int | None  # the training budget the score was reached with
    source: str

    def label(self, reference: str) -> str:
        budget = f", {_steps(self.steps)} steps" if self.steps else ""
        return f"{self.algo} ({reference}, {self.env_id}{budget}): {self.score:.0f}"


def _steps(steps: int) -> str:
    return f"{steps / 1e6:g}M" if steps >= 1_000_000 else f"{steps / 1e3:g}k" if steps >= 1000 else str(steps)


@dataclass(frozen=True)
class Reference:
    name: str
    scores: tuple[ReferenceScore, ...]

    def for_task(self, env_id: str) -> list[ReferenceScore]:
        """The published (non-random) scores for the task of `env_id`."""
        return [s for s in self.scores if task_name(s.env_id) == task_name(env_id) and s.algo != RANDOM]

    def random(self, env_id: str) -> ReferenceScore | None:
        return next((s for s in self.scores if task_name(s.env_id) == task_name(env_id) and s.algo == RANDOM), None)

    def normaliser(self, env_id: str) -> ReferenceScore | None:
        """What normalised score 1.0 stands for: the task's human score if the table has one,
        else its highest published score."""
        scores = self.for_task(env_id)
        human = [s for s in scores if s.algo == HUMAN]
        return human[0] if human else max(scores, key=lambda s: s.score) if scores else None

    def normalise(self, env_id: str, values: np.ndarray) -> np.ndarray:
        best = self.normaliser(env_id)
        if best is None:
            raise ConfigError(f"report.reference={self.name} has no score for {env_id}")
        random = self.random(env_id)
        floor = random.score if random else 0.0
        if best.score <= floor:
            raise ConfigError(
                f"report.reference={self.name} cannot normalise {env_id}: its best score {best.score:g} is not above "
                f"{'the random score ' if random else ''}{floor:g} (a task with negative returns needs a random score)"
            )
        return (np.asarray(values, dtype=float) - floor) / (best.score - floor)


def available() -> list[str]:
    return sorted(path.stem for path in FOLDER.glob("*.csv"))


def load_reference(name: str | None) -> Reference | None:
    """A shipped table by name, a CSV file by path, or None for `none`."""
    if name is None or str(name).lower() in ("none", "null", "false"):
        return None
    text = str(name)
    path = FOLDER / f"{text}.csv" if text in available() else Path(text)
    if not (path.suffix == ".csv" and path.is_file()):
        close = difflib.get_close_matches(text, available(), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(
            f"report.reference={text} is not known; {hint}choose one of: {', '.join(available())}, none, "
            f"or a .csv file with columns {','.join(COLUMNS)}"
        )
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(f"report.reference={text} lacks the column(s) {', '.join(missing)}; it needs {','.join(COLUMNS)}")
        try:
            scores = tuple(
                ReferenceScore(
                    row["env_id"],
                    row["algo"].lower(),
                    float(row["score"]),
                    int(float(row["steps"])) if row["steps"] else None,
                    row["source"],
                )
                for row in reader
            )
        except ValueError as error:
            raise ConfigError(f"report.reference={text}: {error}") from None
    return Reference(path.stem, scores)
