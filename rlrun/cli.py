"""The `rlrun` command line: which command it is, handed to the module that owns it.

    rlrun [key=value ...] | -m ... | resume=<run>    train (rlrun/commands/train.py)
    rlrun evaluate=<run or sweep> [options]          rlrun/commands/evaluate.py
    rlrun export=<run> [options]                     rlrun/commands/export.py
    rlrun report=<folder> [report=<folder> ...]      rlrun/commands/report.py
    rlrun collect=<run> episodes=N [options]         rlrun/commands/collect.py (a Minari dataset)
    rlrun combine=<dataset>,<dataset> out=<new>      rlrun/commands/combine.py (a mixed dataset)

A bad command line gets one line and exit code 2 before anything is written; a failure
while a command runs gets one line and exit code 1, with what was written kept.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

from rlrun.commands import collect, combine, evaluate, export, report, train
from rlrun.config import ConfigError, RunError
from rlrun.core.logger import library_warnings_to_log

# Commands that read run folders (combine: datasets) instead of training, by their key.
FOLDER_COMMANDS = {
    "evaluate": evaluate.main,
    "export": export.main,
    "report": report.main,
    "collect": collect.main,
    "combine": combine.main,
}


def main() -> None:
    keep_freed_memory()
    library_warnings_to_log()
    # `env.id=my_module:MyEnv-v0` finds modules in the folder rlrun runs in, as `python -m` would.
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    args = sys.argv[1:]
    try:
        if any(train.override_key(a) in FOLDER_COMMANDS or train.override_key(a).startswith("report.") for a in args):
            _folder_command(args)
        else:
            train.main(args)
    except (ConfigError, RunError) as error:  # RunError: a failure while the command ran
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"rlrun: error: {error}", file=sys.stderr)
        sys.exit(2 if isinstance(error, ConfigError) else 1)
    except KeyboardInterrupt:
        # Training's handler turns the first Ctrl-C into a checkpoint; this is a second one, or
        # one before training started.
        print("rlrun: stopped at once by an interrupt; the checkpoints written so far are kept", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)


def _folder_command(args: list[str]) -> None:
    """`rlrun evaluate=<run> [options]`, `export=<run>`, `collect=<run>`, `combine=<datasets>` or
    `report=<folder> ...`: which one, and its folder(s), checked before the command's module takes
    its options."""
    commands = [a for a in args if train.override_key(a) in FOLDER_COMMANDS]
    rest = [a for a in args if a not in commands]
    if not commands:
        raise ConfigError("report.<option>= needs report=<folder>, e.g. rlrun report=multirun/<date>/<time> report.seed=1")
    names = {train.override_key(c) for c in commands}
    if names == {"report"}:
        clashing = [a for a in rest if a.startswith("-") or train.override_key(a) == "resume"]
        if clashing:
            raise ConfigError(f"report= reads saved runs and takes no {' '.join(clashing)}")
        folders = [c.partition("=")[2] for c in commands]
        if not all(folders):
            raise ConfigError("report= needs a run or sweep folder, e.g. report=multirun/<date>/<time>")
        report.main(folders, rest)
        return
    if len(commands) > 1:
        raise ConfigError(f"give one of {', '.join(c + '=' for c in FOLDER_COMMANDS)} at a time, not {' '.join(commands)}")
    name, _, folder = commands[0].partition("=")
    clashing = [a for a in rest if a in train.MULTIRUN_FLAGS or a.startswith("-") or train.override_key(a) == "resume"]
    reads = "datasets" if name == "combine" else "a saved run"
    if clashing:
        hint = "; evaluate a sweep with evaluate=<its folder>" if name == "evaluate" else ""
        raise ConfigError(f"{name}= reads {reads} and takes no {' '.join(clashing)}{hint}")
    if not folder:
        example = "./datasets/a-v0,./datasets/b-v0" if name == "combine" else "outputs/<date>/<time>"
        raise ConfigError(f"{name}= needs {reads}, e.g. {name}={example}")
    FOLDER_COMMANDS[name](folder, rest)


def keep_freed_memory() -> None:
    """Have glibc keep freed memory for reuse instead of handing it back to the OS.

    Every update allocates and frees the same few-hundred-KB activations; by default glibc
    serves such blocks with fresh pages (mmap, or a heap trimmed after each free), so every
    update pays their page faults again. Blocks over 32 MB (replay buffers) are still mapped
    lazily. Other C libraries: nothing to do."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # glibc's mallopt parameters
    libc.mallopt(m_mmap_threshold, 32 << 20)
    libc.mallopt(m_trim_threshold, 256 << 20)
    libc.mallopt(m_top_pad, 64 << 20)


if __name__ == "__main__":
    main()
