"""One writer per run folder, and no sweep worker that outlives its sweep.

A run folder is locked (an exclusive flock on `<run>/.rlrun.lock`, holding the pid) for as
long as a process trains in it: a second `rlrun` on the same folder (the same
`hydra.run.dir`, a `resume=` of a running run, a rerun sweep racing a survivor) stops with one
line naming that pid. The OS releases the lock when the process ends, however it ends, so a
killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import threading
from pathlib import Path

from rlrun.config import ConfigError

LOCK_FILE = ".rlrun.lock"

_held: dict[Path, int] = {}  # run folder → the open lock file descriptor


class FolderInUse(ConfigError):
    """Another live process holds the run folder's lock."""


def lock_run_folder(run_dir: Path) -> None:
    """Take the run folder's lock for this process (creating the folder), or raise FolderInUse."""
    run_dir = run_dir.absolute()
    if run_dir in _held:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(descriptor)
        raise FolderInUse(
            f"{run_dir} is in use by another rlrun process (pid {holder}); wait for it to end, stop it, "
            "or choose another folder (hydra.run.dir=<folder>)"
        ) from None
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
    _held[run_dir] = descriptor


def release_run_folder(run_dir: Path) -> None:
    """Give the lock back (a sweep worker that goes on to its next job)."""
    descriptor = _held.pop(run_dir.absolute(), None)
    if descriptor is not None:
        os.close(descriptor)  # closing the descriptor releases the flock


class ParentWatch:
    """In a sweep worker process: send this process SIGTERM when the process that started it
    dies (the worker is then reparented), so that the job stops with a checkpoint as on a
    scheduler's SIGTERM instead of training on unseen. The worker itself must then exit
    (`exit_if_orphaned`): its pool would wait forever for work from the dead sweep."""

    def __init__(self, poll_seconds: float = 1.0) -> None:
        self.parent = os.getppid()
        self.orphaned = False
        self._done = threading.Event()
        threading.Thread(target=self._watch, args=(poll_seconds,), name="rlrun-parent-watch", daemon=True).start()

    def _watch(self, poll_seconds: float) -> None:
        while not self._done.wait(poll_seconds):
            if os.getppid() != self.parent:
                self.orphaned = True
                os.kill(os.getpid(), signal.SIGTERM)
                return

    def stop(self) -> None:
        self._done.set()

    def exit_if_orphaned(self) -> None:
        if self.orphaned:
            logging.shutdown()  # the job's log file gets its last lines
            os._exit(128 + signal.SIGTERM)
