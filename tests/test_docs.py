"""Every `rlrun` command shown in README.md and docs/*.md runs, so the docs cannot drift from
the code.

Commands are collected from fenced code blocks: lines starting with `rlrun ` or `$ rlrun `
(continued by a trailing backslash), without their trailing `# comment`. A `$ rlrun` line
followed by an `rlrun: error: ...` line shows a mistake on purpose: it must fail with exactly
that line. Every other command runs through the real command line (conftest.run_rlrun), made
cheap and safe:

- a command that trains gets `experiment=smoke`, with any `total_steps=` capped at the smoke
  budget; a grid keeps its first job; an Optuna search runs one trial a parallel job;
- commands that become the same run once made cheap (they differ only in their seed, budget
  or output folder, as `rlrun -m algo=sac,td3 ...` and `... total_steps=50000` do) run once,
  under the first one's name;
- a command for a cluster launcher (Slurm, Ray) prints its config instead (`--cfg hydra`, for
  the grid's first job), so nothing is submitted;
- every folder a command writes or reads goes under pytest's tmp_path, and a folder it needs
  (the run of `resume=<run>`, `evaluate=<run>` or `export=<run>`, the runs of `report=<folders>`,
  the Optuna sweep of `+optuna=best`, the run of `collect=<run>`, the offline run of
  `init=<run>`) is made by a smoke run or sweep first, and a `dataset=./<folder>` by
  conftest.pendulum_dataset.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import shlex
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import REPO, pendulum_dataset, run_rlrun
from hydra.core.override_parser.overrides_parser import OverridesParser

DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SMOKE_STEPS = yaml.safe_load((REPO / "configs" / "experiment" / "smoke.yaml").read_text())["total_steps"]
CLUSTER_LAUNCHERS = {"slurm", "ray"}
# Placeholders the docs use for values only a reader has, and what stands in for them here.
PLACEHOLDERS = {"<head>": "10.0.0.1"}  # a Ray head node's address
# Documented commands that cannot run here, and why; keep this tiny.
NOT_RUNNABLE: dict[str, str] = {}
# Documented commands that fail today, each with the issue that fixes it.
KNOWN_FAILURES: dict[str, str] = {}
# The step of the checkpoint in the stopped run made for a documented `resume=` (the smoke
# experiment's checkpoint.every).
STOPPED_AT = 300
OK_STATUSES = {"completed", "pruned"}  # a pruned Optuna trial ended as its study asked
READS_A_RUN = ("resume", "evaluate", "export", "report", "collect", "init")  # keys whose value is a run folder to read
# Commands that read runs (or datasets) and train nothing.
FOLDER_COMMANDS = ("evaluate", "export", "report", "collect", "combine")
# Keys whose value may be a folder the docs write as ./<path>: a dataset to read or to write.
DATASET_FOLDERS = ("dataset", "out")

_parser = OverridesParser.create()


@dataclass(frozen=True)
class Documented:
    command: str  # as shown: continuation lines joined, the trailing comment left out
    where: str  # file:line of its first line
    error: str | None  # the `rlrun: error: ...` line shown under it, if any


def _strip_comment(line: str) -> str:
    """`line` without a shell comment: a `#` that starts a word outside quotes."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def documented_commands() -> list[Documented]:
    """Every distinct rlrun command in the docs' fenced code blocks, in order of appearance."""
    found: dict[str, Documented] = {}
    for path in DOC_FILES:
        lines = path.read_text(encoding="utf-8").splitlines()
        in_block, i = False, 0
        while i < len(lines):
            start, text = i, lines[i].strip()
            i += 1
            if text.startswith("```"):
                in_block = not in_block
                continue
            if not in_block:
                continue
            while text.endswith("\\") and i < len(lines):
                text = text[:-1].rstrip() + " " + lines[i].strip()
                i += 1
            prompt = text.startswith("$ ")
            text = _strip_comment(text.removeprefix("$ "))
            if text != "rlrun" and not text.startswith("rlrun "):
                continue
            error = lines[i].strip() if prompt and i < len(lines) and lines[i].strip().startswith("rlrun: error:") else None
            command = re.sub(r"\s+", " ", text)
            found.setdefault(command, Documented(command, f"{path.relative_to(REPO)}:{start + 1}", error))
    return list(found.values())


DOCUMENTED = documented_commands()


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _value(override: str):
    return _parser.parse_overrides([override])[0].value()


def _launcher(args: list[str]) -> str | None:
    return next((a.split("=", 1)[1] for a in args if _key(a) == "hydra/launcher"), None)


def _under(tmp_path: Path, folder: str) -> Path:
    """A folder the docs name relative to where rlrun runs, moved under tmp_path."""
    return Path(folder) if Path(folder).is_absolute() else tmp_path / folder


def _relocate(override: str, tmp_path: Path) -> str:
    key, _, value = override.partition("=")
    if _key(override) == "report":  # a comma-separated list of folders
        return f"{key}={','.join(str(_under(tmp_path, folder)) for folder in value.split(','))}"
    if _key(override) in ("hydra.run.dir", "hydra.sweep.dir", "report.out", *READS_A_RUN):
        return f"{key}={_under(tmp_path, value)}"
    if _key(override) in DATASET_FOLDERS and value.startswith(("./", "../")):
        return f"{key}={_under(tmp_path, value)}"
    if _key(override) == "combine":  # a comma-separated list of datasets
        return f"{key}={','.join(str(_under(tmp_path, folder)) for folder in value.split(','))}"
    if _key(override) == "hydra.searchpath":
        return re.sub(r"file://([^,\]]+)", lambda m: f"file://{_under(tmp_path, m.group(1))}", override)
    return override


def _shrink_grid(args: list[str], keep_first: int) -> list[str]:
    """A basic-sweeper grid with its first swept key cut to `keep_first` values and the
    others to their first, so that it has at most `keep_first` jobs."""
    shrunk, kept = [], keep_first
    for arg in args:
        override = None if arg.startswith("-") else _parser.parse_overrides([arg])[0]
        if override is not None and override.is_sweep_override():
            values = list(override.sweep_string_iterator())[:kept]
            arg, kept = f"{override.get_key_element()}={','.join(values)}", 1
        shrunk.append(arg)
    return shrunk


def _set(args: list[str], override: str) -> list[str]:
    """`args` with `override` replacing any value of its key, or appended."""
    return [a for a in args if _key(a) != _key(override)] + [override]


# Folders that documented commands read (a finished run, a stopped one, a sweep), each made once
# per test process and copied into every test that needs one: the commands read copies of
# the same kind of folder that a user's would be, without each test training its own.
_MADE = Path(tempfile.mkdtemp(prefix="rlrun-docs-"))


def _copy_of(make, name: str, folder: Path) -> None:
    """`folder` as a copy of the folder `make(<cache>/<name>)` made once."""
    original = _MADE / name
    if not original.exists():
        make(original)
    shutil.copytree(original, folder)


def _stopped_run(folder: Path) -> None:
    """A run folder as a run stopped after its step-300 checkpoint leaves it: a smoke run to
    400 steps with its later checkpoint and summary removed."""
    result = run_rlrun("experiment=smoke", "algo=sac", "env=Pendulum", "total_steps=400", f"hydra.run.dir={folder}")
    assert result.returncode == 0, result.stderr
    for checkpoint in sorted((folder / "checkpoints").glob("step_*.pt"))[1:]:
        checkpoint.unlink()
    (folder / "summary.json").unlink()
    assert [p.name for p in (folder / "checkpoints").glob("step_*.pt")] == [f"step_{STOPPED_AT:09d}.pt"]


def _optuna_sweep(folder: Path) -> None:
    """A finished one-trial Optuna smoke sweep, with its optuna/best.yaml."""
    result = run_rlrun(
        "-m",
        "hydra/sweeper=rlrun_optuna",
        "algo=sac",
        "env=Pendulum",
        "experiment=smoke",
        "hydra.sweeper.n_trials=1",
        f"hydra.sweep.dir={folder}",
    )
    assert result.returncode == 0, result.stderr
    assert (folder / "optuna" / "best.yaml").is_file()


def _offline_run(algo: str):
    """A maker of a finished offline smoke run of `algo` on a small Pendulum dataset (init=)."""

    def make(folder: Path) -> None:
        dataset = pendulum_dataset(folder.parent / f"{folder.name}-data-v0")
        result = run_rlrun("experiment=smoke", f"algo={algo}", f"dataset={dataset}", f"hydra.run.dir={folder}")
        assert result.returncode == 0, result.stderr

    return make


# The offline algorithm an online one starts from in the docs' init= commands.
STARTS_FROM = {"td3": "td3_bc", "sac": "cql"}


def _finished(folder: Path) -> None:
    """A finished smoke run in `folder`, or a two-job smoke sweep if it is a multirun folder."""
    if "multirun" in folder.parts:
        result = run_rlrun("-m", "experiment=smoke", "algo=sac", "env=Pendulum", "seed=0,1", f"hydra.sweep.dir={folder}")
    else:
        result = run_rlrun("experiment=smoke", "algo=sac", "env=Pendulum", f"hydra.run.dir={folder}")
    assert result.returncode == 0, result.stderr


def _finished_copy(folder: Path) -> None:
    _copy_of(_finished, "multirun" if "multirun" in folder.parts else "run", folder)


def _check_folders(args: list[str]) -> None:
    """Make the folders a command reads (resume=, evaluate=, export=, report=, an Optuna best
    config) if it names any."""
    for arg in args:
        if _key(arg) == "resume" and not Path(arg.split("=", 1)[1]).exists():
            _copy_of(_stopped_run, "stopped", Path(arg.split("=", 1)[1]))
        if _key(arg) == "dataset" and Path(arg.split("=", 1)[1]).is_absolute() and not Path(arg.split("=", 1)[1]).exists():
            pendulum_dataset(Path(arg.split("=", 1)[1]))
        if _key(arg) in ("evaluate", "export", "collect") and not Path(arg.split("=", 1)[1]).exists():
            _finished_copy(Path(arg.split("=", 1)[1]))
        if _key(arg) == "combine":
            for folder in map(Path, arg.split("=", 1)[1].split(",")):
                if not folder.exists():
                    pendulum_dataset(folder)
        if _key(arg) == "init" and not Path(arg.split("=", 1)[1]).exists():
            algo = next(_value(a) for a in args if _key(a) == "algo")
            offline = "iql" if "iql" in arg else STARTS_FROM[algo]
            _copy_of(_offline_run(offline), f"offline-{offline}", Path(arg.split("=", 1)[1]))
        if _key(arg) == "report":
            for folder in arg.split("=", 1)[1].split(","):
                if not Path(folder).exists():
                    _finished_copy(Path(folder))
        if _key(arg) == "hydra.searchpath" and any(_key(a) == "optuna" for a in args):
            for folder in re.findall(r"file://([^,\]]+)", arg):
                if not (Path(folder) / "optuna" / "best.yaml").exists():
                    _copy_of(_optuna_sweep, "optuna-sweep", Path(folder))


def _check_cluster_config(args: list[str], output: str) -> None:
    """The printed Hydra config has the launcher and every hydra.launcher.<key> as given."""
    launcher = yaml.safe_load(output)["hydra"]["launcher"]
    for arg in args:
        if _key(arg).startswith("hydra.launcher."):
            assert launcher[_key(arg).removeprefix("hydra.launcher.")] == _value(arg), arg


def _check_outputs(args: list[str], output: str) -> None:
    """Every run the command made completed (or, in an Optuna search, was pruned), and a sweep
    wrote its report; an evaluation, an export or a report wrote its files."""
    reports = [a.split("=", 1)[1].split(",") for a in args if _key(a) == "report"]
    if reports:
        out = next((Path(a.split("=", 1)[1]) for a in args if _key(a) == "report.out"), Path(reports[0][0]) / "report")
        assert (out / "report.md").is_file() and list(out.glob("curves-*.png")), output
        return
    if any(_key(a) in ("collect", "combine") for a in args):
        out = next(Path(a.split("=", 1)[1]) for a in args if _key(a) == "out")
        assert (out / "data" / "metadata.json").is_file(), output
        return
    for key, written in (("evaluate", "evaluations/*.json"), ("export", "export/policy-*.json")):
        folders = [Path(a.split("=", 1)[1]) for a in args if _key(a) == key]
        if folders:
            assert list(folders[0].glob(written)) or list(folders[0].glob(f"*/{written}")), output
            return
    multirun = "-m" in args or "--multirun" in args
    folder_keys = ("hydra.sweep.dir",) if multirun else ("hydra.run.dir", "resume")
    folder = next(a.split("=", 1)[1] for a in args if _key(a) in folder_keys)
    if multirun:
        with open(Path(folder) / "sweep.csv", encoding="utf-8") as table:
            rows = list(csv.DictReader(table))
        assert rows and all(row["status"] in OK_STATUSES for row in rows), rows
        if importlib.util.find_spec("matplotlib") is not None:  # the report extra
            assert (Path(folder) / "report" / "report.md").is_file(), output
        return
    summary = json.loads((Path(folder) / "summary.json").read_text())
    assert summary["status"] == "completed", summary
    if any(_key(a) == "resume" for a in args):
        assert f"resumed from step {STOPPED_AT}" in output


def runnable(doc: Documented, tmp_path: Path) -> list[str]:
    """The command line to run for a documented command (see the module docstring)."""
    text = doc.command
    for placeholder, stand_in in PLACEHOLDERS.items():
        text = text.replace(placeholder, stand_in)
    args = [_relocate(a, tmp_path) for a in shlex.split(text)[1:]]
    if doc.error or any(a in ("--help", "-h", "--cfg", "-c", "--info") for a in args):
        return args
    if any(_key(a) in FOLDER_COMMANDS for a in args):
        return args  # reads finished runs (made by _check_folders); trains nothing
    if _launcher(args) in CLUSTER_LAUNCHERS:
        return [*_shrink_grid([a for a in args if a not in ("-m", "--multirun")], keep_first=1), "--cfg", "hydra"]
    multirun = "-m" in args or "--multirun" in args
    if not any(_key(a) == "experiment" for a in args):
        args.append("experiment=smoke")
    args = [f"total_steps={min(_value(a), SMOKE_STEPS)}" if _key(a) == "total_steps" else a for a in args]
    if multirun and any(_key(a) == "hydra/sweeper" for a in args):
        parallel = next((_value(a) for a in args if _key(a) == "hydra.sweeper.n_jobs"), 1)
        args = _set(args, f"hydra.sweeper.n_trials={parallel}")
    elif multirun:
        args = _shrink_grid(args, keep_first=1)
    output_key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    if not any(_key(a) in (output_key, "resume") for a in args):
        args.append(f"{output_key}={tmp_path / ('multirun' if multirun else 'outputs')}")
    return args


def _missing_extra(command: str) -> str | None:
    """The optional extra a command needs and this environment lacks, if any (the tests of
    each extra skip without it, and so do the commands that use it)."""
    needs = {
        "atari": ("ale_py", "ALE/" in command or re.search(r"\benv=(Pong|Breakout)\b", command)),
        "optuna": ("optuna", "hydra/sweeper=rlrun_optuna" in command or "+optuna=best" in command),
        "slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra/launcher=slurm" in command),
        "video": ("moviepy", "video=true" in command or "video.every=" in command),
        "export": ("onnxscript", "export=" in command and "format=torchscript" not in command),
        "report": ("matplotlib", "report=" in command),
        "wandb": ("wandb", "log.wandb.project=" in command),
        "offline": ("minari", any(f"{key}=" in command for key in ("dataset", "collect", "combine", "init"))),
    }
    for extra, (module, needed) in needs.items():
        if needed and importlib.util.find_spec(module) is None:
            return extra
    return None


def _param(doc: Documented):
    marks = []
    if doc.command in KNOWN_FAILURES:
        marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[doc.command]))
    if doc.command in NOT_RUNNABLE:
        marks.append(pytest.mark.skip(reason=NOT_RUNNABLE[doc.command]))
    if extra := _missing_extra(doc.command):
        marks.append(pytest.mark.skip(reason=f"needs the {extra} extra"))
    return pytest.param(doc, id=doc.command, marks=marks)


# Keys whose value does not change what a command made cheap exercises (a resume keeps its
# total_steps: it is the budget the resumed run extends to).
SAME_RUN_KEYS = ("seed", "total_steps", "hydra.run.dir", "hydra.sweep.dir")


def _cheap_form(doc: Documented) -> tuple[str, ...]:
    """What running `doc` made cheap exercises: its runnable arguments without the values of
    SAME_RUN_KEYS."""
    args = runnable(doc, Path("/tmp_path"))
    if doc.error or any(_key(a) == "resume" for a in args):
        return (doc.command,)
    return tuple(a for a in args if _key(a) not in SAME_RUN_KEYS)


def _first_of_each_form(docs: list[Documented]) -> list[Documented]:
    firsts: dict[tuple[str, ...], Documented] = {}
    for doc in docs:
        firsts.setdefault(_cheap_form(doc), doc)
    return list(firsts.values())


@pytest.mark.slow
@pytest.mark.parametrize("doc", [_param(doc) for doc in _first_of_each_form(DOCUMENTED)])
def test_documented_command_runs(doc, tmp_path):
    args = runnable(doc, tmp_path)
    _check_folders(args)
    result = run_rlrun(*args)
    output = result.stdout + result.stderr
    if doc.error:
        assert (result.returncode, result.stderr.strip()) == (2, doc.error), f"{doc.where}: {output[-3000:]}"
        return
    assert result.returncode == 0, f"{doc.where}: rlrun {shlex.join(args)}\n{output[-3000:]}"
    if "--help" in args or "--cfg" in args:
        assert result.stdout.strip(), doc.where
        if _launcher(args) in CLUSTER_LAUNCHERS:
            _check_cluster_config(args, result.stdout)
        return
    _check_outputs(args, output)


def test_the_docs_show_commands_of_every_kind():
    """The collector finds what the docs show: error examples, sweeps, searches, resumes,
    cluster launchers; and the exception lists name documented commands only."""
    commands = [doc.command for doc in DOCUMENTED]
    assert len(commands) >= 20
    assert sum(doc.error is not None for doc in DOCUMENTED) >= 3
    for needed in (
        "-m ",
        "hydra/sweeper=rlrun_optuna",
        "resume=",
        "+optuna=best",
        "hydra/launcher=slurm",
        "hydra/launcher=ray",
        "evaluate=",
        "export=",
        "video=true",
        "report=",
        "report.reference=",
        "log.wandb.project=",
        "dataset=",
        "collect=",
        "from=replay",
        "combine=",
    ):
        assert any(needed in command for command in commands), needed
    assert set(KNOWN_FAILURES) | set(NOT_RUNNABLE) <= set(commands)


def test_commands_that_differ_in_seed_budget_or_folder_run_once():
    grid = Documented("rlrun -m algo=sac,td3 env=HalfCheetah,Hopper seed=0,1,2", "a:1", None)
    longer = Documented("rlrun -m algo=sac,td3 env=HalfCheetah,Hopper seed=0,1,2 total_steps=50000", "b:1", None)
    other_env = Documented("rlrun -m algo=sac env=Hopper,HalfCheetah", "c:1", None)
    resume = Documented("rlrun resume=outputs/run", "d:1", None)
    extended = Documented("rlrun resume=outputs/run total_steps=2000000", "e:1", None)
    assert _first_of_each_form([grid, longer, other_env, resume, extended]) == [grid, other_env, resume, extended]


def test_comments_and_continuations_are_read_as_a_shell_would():
    assert _strip_comment("rlrun algo=sac   # train it") == "rlrun algo=sac"
    assert _strip_comment("rlrun 'a=#b' c=d#e") == "rlrun 'a=#b' c=d#e"
    assert _shrink_grid(["-m", "algo=sac,td3", "env=HalfCheetah,Hopper", "seed=range(4)"], keep_first=2) == [
        "-m",
        "algo=sac,td3",
        "env=HalfCheetah",
        "seed=0",
    ]


def test_ci_runs_the_readme_test_command():
    """.ci/run runs the README's test command verbatim: the set-up section's command line
    that runs pytest."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    setup = readme.split("\n## Set-up\n", 1)[1].split("\n## ", 1)[0]
    fenced = [line.strip() for line in re.findall(r"^```\n(.*?)^```", setup, flags=re.MULTILINE | re.DOTALL)]
    test_commands = [line for block in fenced for line in block.splitlines() if "pytest" in line]
    assert len(test_commands) == 1, test_commands
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert test_commands[0] in ci_lines


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_between_the_docs_resolve():
    """Every relative link in README.md and docs/ names an existing file, and its #anchor a
    heading there."""
    broken = []
    for path in DOC_FILES:
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                broken.append(f"{path.name}: {target}")
            elif anchor and linked.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", linked.read_text(encoding="utf-8"), flags=re.MULTILINE)
                if anchor not in {_slug(h) for h in headings}:
                    broken.append(f"{path.name}: {target}")
    assert not broken
