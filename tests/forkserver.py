"""A fork server for the tests' `rlrun` commands.

Most of a short rlrun run's time is spent importing torch, Hydra and Gymnasium, and the suite
starts hundreds of them. This server imports `rlrun.cli` once, then forks a child for each
command: the child takes the caller's stdout, stderr, working folder and environment, and
runs `rlrun.cli.main()` as the installed `rlrun` script does, so it exits, flushes and runs its
atexit handlers like any process. The client is `ForkedRlrun` in tests/conftest.py;
`RLRUN_TEST_FRESH_PROCESS=1` turns the server off and starts a fresh Python for every command.

Protocol over a Unix socket, one connection per command: the client sends a pickled
(args, env, cwd) with three file descriptors (stdin, stdout, stderr) attached; the server
answers the child's pid, and its exit status (as subprocess reports it: -N for signal N) when
it ends. Only the tests talk to it; it trusts its caller like `subprocess` does.
"""

import array
import atexit
import contextlib
import gc
import importlib
import os
import pickle
import selectors
import signal
import socket
import struct
import sys
import threading
import traceback

import rlrun.cli  # noqa: F401  the expensive part, paid once per server

# Modules that many commands import after start-up, imported here once too: every run's
# TensorBoard writer, every sweep's report (SciPy, pandas, matplotlib), the Optuna sweeper,
# export=onnx's exporter and video's writer. An extra that is not installed is skipped, so its
# commands fail in the child as they would for a user.
PRELOADED = (
    "torch.utils.tensorboard",
    "rlrun.report.plots",
    "rlrun.report.studies",
    "pandas",
    "optuna",
    "onnxscript",
    "torch.onnx",
    "moviepy",
)
for name in PRELOADED:
    with contextlib.suppress(ImportError):
        importlib.import_module(name)

HEADER = struct.Struct("!I")


def receive_request(connection: socket.socket) -> tuple[tuple, list[int]]:
    fds = array.array("i")
    data, ancillary, _, _ = connection.recvmsg(1 << 20, socket.CMSG_SPACE(3 * fds.itemsize))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    (size,) = HEADER.unpack_from(data)
    while len(data) < HEADER.size + size:
        data += connection.recv(1 << 20)
    return pickle.loads(data[HEADER.size : HEADER.size + size]), list(fds)


def run_child(args: list[str], env: dict, cwd: str, fds: list[int]) -> None:
    """In the forked child: become `rlrun args` started from a shell in `cwd`."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = ["rlrun", *args]
    from rlrun.cli import main

    try:
        status = main()
    except SystemExit as stop:
        status = stop.code
    except KeyboardInterrupt:
        traceback.print_exc()
        status = -signal.SIGINT
    except BaseException:  # noqa: BLE001  reported as the interpreter reports an uncaught exception
        traceback.print_exc()
        status = 1
    os._exit(_exit_as_python(status))


def _exit_as_python(status: object) -> int:
    """The end of a Python process without its teardown: the server's inherited heap would be
    freed object by object, copying every page the fork shared. Non-daemon threads are joined
    and atexit handlers run, as at a normal exit; the status is mapped as sys.exit maps it, and
    an uncaught Ctrl-C ends the process by SIGINT."""
    threading._shutdown()  # noqa: SLF001  what the interpreter does first at exit
    atexit._run_exitfuncs()  # noqa: SLF001
    if status is None:
        code = 0
    elif isinstance(status, int):
        code = status
    else:
        print(status, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    if code == -signal.SIGINT:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return code


def serve(path: str) -> None:
    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    waiting: dict[int, socket.socket] = {}  # child pid -> the connection its status goes to
    gc.freeze()  # what was imported stays out of the children's garbage collections, and so unwritten
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while os.getppid() == parent:  # the test process that started this server has gone: stop
        for _ in selector.select(timeout=0.05):
            connection, _ = listener.accept()
            (args, env, cwd), fds = receive_request(connection)
            pid = os.fork()
            if pid == 0:
                selector.close()
                listener.close()
                connection.close()
                for other in waiting.values():
                    other.close()
                run_child(args, env, cwd, fds)  # exits through SystemExit, never returns here
            for fd in fds:
                os.close(fd)
            connection.sendall(HEADER.pack(pid))
            waiting[pid] = connection
        while waiting:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            connection = waiting.pop(pid, None)
            if connection is not None:
                with contextlib.suppress(OSError):  # the client may have stopped listening
                    connection.sendall(struct.pack("!i", os.waitstatus_to_exitcode(status)))
                connection.close()
    with contextlib.suppress(OSError):  # the socket's folder, made for this server alone
        os.unlink(path)
        os.rmdir(os.path.dirname(path))


if __name__ == "__main__":
    serve(sys.argv[1])
