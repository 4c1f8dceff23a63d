"""Run folders kept safe: one writer per run folder, no sweep worker that outlives its sweep,
and folders checked writable (names within the file system's limit) before anything is written.

A run folder is locked (an exclusive flock on `<run>/.rlrun.lock`, holding the pid) for as
long as a process trains in it: a second `rlrun` on the same folder (the same
`hydra.run.dir`, a `resume=` of a running run, a rerun sweep racing a survivor) stops with one
line naming that pid. The OS releases the lock when the process ends, however it ends, so a
killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import math
import os
import resource
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rlrun.config import ConfigError, RunError

LOCK_FILE = ".rlrun.lock"
NAME_MAX = 255  # bytes in a file or folder name on most file systems

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


def folder_in_use(run_dir: Path) -> bool | None:
    """Whether a live process holds the run folder's lock (it is training there); None if the
    folder has no lock file (no rlrun process ever trained in it). The lock is probed with a
    shared flock taken and given back at once, which works across machines on a shared file
    system, where the pid in the file says nothing."""
    try:
        descriptor = os.open(run_dir / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(descriptor)  # also gives back a lock just taken
    return False


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


def check_writable(key: str, folder: Path, given: bool = True) -> None:
    """`folder` (named by the config key `key`, or its default when not `given`) can be
    created and written; ConfigError if not."""
    check_name_lengths(key, folder)
    named = f"{key}={folder}" if given else str(folder)
    existing = next(p for p in [folder, *folder.absolute().parents] if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{named} cannot be created: {existing} is a file; choose another folder with {key}=<folder>")
    try:  # a real probe: os.access says yes to root even on read-only file systems
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as error:
        raise ConfigError(
            f"{named} is not writable ({error.strerror} when creating a file in {existing}); "
            f"{'choose another folder' if given else 'write elsewhere'} with {key}=<folder>"
        ) from None


class WriteFailed(RunError):
    """A file could not be written (a full disk, the file-size limit, a read-only folder)."""


# What write_files writes: the bytes, or a function that writes the file at the path it is given.
Content = bytes | Callable[[Path], None]


def write_files(files: Mapping[Path, Content], what: str) -> None:
    """Write each file to a temporary one beside it (`<name>.tmp`), then move them all into
    place: a write that fails (a full disk, the file-size limit, a read-only folder) leaves no
    temporary, empty or partial file, and every file that was there before as it was. Raises
    WriteFailed, "cannot write <what> <file>: <the OS's reason>"."""
    temporaries: list[Path] = []
    path = next(iter(files), Path())
    try:
        for path, content in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            temporaries.append(path.with_name(path.name + ".tmp"))
            if callable(content):
                content(temporaries[-1])
            else:
                temporaries[-1].write_bytes(content)
        for path, temporary in zip(files, temporaries):
            os.replace(temporary, path)
    except (OSError, RuntimeError) as error:
        # torch.save reports a full disk or a file-size limit as a RuntimeError from its zip writer.
        reason = describe_write_error(error, temporaries[-1] if temporaries else None)
        for temporary in temporaries:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
        raise WriteFailed(f"cannot write {what} {path}: {reason}") from error


def check_name_lengths(key: str, folder: Path) -> None:
    """Every folder name in `folder` must be one the file system takes (names built from
    overrides, as hydra.run.dir=outputs/${hydra.job.override_dirname} builds them, can exceed it)."""
    limit = NAME_MAX  # where the nearest existing folder does not say
    for existing in [folder.absolute(), *folder.absolute().parents]:
        try:
            limit = os.pathconf(existing, "PC_NAME_MAX")
            break
        except OSError:  # not there yet, or its own name is too long
            continue
    for part in folder.parts:
        size = len(part.encode())
        if size > limit:
            raise ConfigError(
                f"{key} has a folder name of {size} bytes ('{part[:40]}...'), more than the {limit} this file system "
                f"allows; choose a shorter {key}=<folder>"
            )


def strict_json(value: Any) -> str:
    """`value` as strict JSON (indented, with a final newline): a non-finite number (NaN, an
    infinite return) becomes null, since JSON has no NaN and strict readers reject it."""

    def finite(item: Any) -> Any:
        if isinstance(item, float) and not math.isfinite(item):
            return None
        if isinstance(item, dict):
            return {key: finite(inner) for key, inner in item.items()}
        if isinstance(item, (list, tuple)):
            return [finite(inner) for inner in item]
        return item

    return json.dumps(finite(value), indent=2, allow_nan=False) + "\n"


def describe_write_error(error: BaseException, path: Path | None = None) -> str:
    """A short reason for a failed write of `path`: the OS's words (No space left on device,
    File too large, Read-only file system). torch.save wraps them in a RuntimeError whose
    text often has no errno ("unexpected pos ..."), so the likely causes are checked."""
    size_limit, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    size_hint = f" (the file-size limit, ulimit -f, is {size_limit} bytes)" if size_limit != resource.RLIM_INFINITY else ""
    if isinstance(error, OSError):
        reason = error.strerror or errno.errorcode.get(error.errno or 0, str(error))
        return reason + size_hint if error.errno == errno.EFBIG else reason
    text = str(error)
    for code in (errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.EIO):
        if os.strerror(code) in text:
            return os.strerror(code) + (size_hint if code == errno.EFBIG else "")
    if path is not None:
        written = path.stat().st_size if path.exists() else 0
        if size_hint and written >= size_limit - (1 << 16):
            return os.strerror(errno.EFBIG) + size_hint
        if shutil.disk_usage(path.parent).free < (1 << 20):
            return os.strerror(errno.ENOSPC)
    first_line = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return f"the write failed ({first_line})"
