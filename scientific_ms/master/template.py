"""The fork server's own process: a warm template that forks the master's local slaves.

:func:`main` (``FD [MODULE ...]``) runs in a process started by
``forkserver.py`` from the master: a fresh interpreter (never a fork of the
master, so it holds none of the master's threads or sockets) that imports
scientific_ms and the ``preload`` modules once, then waits on the socket
``FD`` for requests. Each request carries the slave's command line (``python
-m scientific_ms ...``), environment and working directory, with file
descriptors (SCM_RIGHTS): a socket for the answer, stdin, stdout, stderr and
the descriptors the slave must hold at given numbers (the supervisor's
leaving pipe, ``wire/leaving.py``). The template forks; the child starts a
session of its own, takes those descriptors, environment and directory, and
runs the command's module as ``-m`` would. The answer socket gets the
child's PID, and its exit status once the template reaped it.

The template ends when the master closes its end of the socket, or dies:
it then ends the children still running (SIGTERM to each one's process
group, its keeper included, then SIGKILL), so that a killed master still
takes its slaves along. On Linux each child is also killed should the
template itself be killed (``PR_SET_PDEATHSIG``).

::

    master (forkserver.py)                     template                 slave
    socketpair -- request + fds ---------->    fork() ------------>     setsid, dup2, chdir,
    answer socket  <-- {"pid": P} ---------                             run "-m scientific_ms ..."
                   <-- {"exit": code} -----    waitpid (SIGCHLD)
    close / death  -- end of file -------->    SIGTERM, SIGKILL its children; exit
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import os
import runpy
import selectors
import signal
import socket
import struct
import sys
import time
import traceback
from typing import Dict, List, NoReturn, Optional, Tuple

#: How many descriptors one request may carry (answer, stdin, stdout, stderr, passed ones).
MAX_FDS = 32
#: Seconds the children of a vanished master get to end on SIGTERM before SIGKILL.
END_GRACE_SECONDS = 2.0
#: The length prefix of a request.
HEADER = struct.Struct("!I")
#: The modules a slave imports anyway: imported once, here (``encodings.idna``: the first
#: connection by host name or address string imports it).
SLAVE_MODULES = ("scientific_ms", "scientific_ms.cli.commands", "scientific_ms.executor.function_slave",
                 "scientific_ms.slave.slave", "cloudpickle", "encodings.idna")


def preload(modules: List[str]) -> None:
    """Import what every slave needs, then the ``preload`` modules (a failure is said, not fatal)."""
    import threading
    for name in SLAVE_MODULES + tuple(modules):
        try:
            importlib.import_module(name)
        except Exception as error:   # the slaves will import it themselves, and say why it fails
            print(f"scientific_ms fork server: could not preload {name!r}: "
                  f"{type(error).__name__}: {error}", file=sys.stderr, flush=True)
    others = [thread.name for thread in threading.enumerate() if thread is not threading.current_thread()]
    if others:   # a fork copies only the forking thread: a lock another one holds stays locked
        print(f"scientific_ms fork server: importing {', '.join(modules)} started threads ({', '.join(others)});\n"
              f"  forked slaves may hang on a lock those threads held: leave that module out of preload,\n"
              f"  or use start_method='spawn'", file=sys.stderr, flush=True)


class Template:
    """Serves fork requests on ``control`` until its end of file."""

    def __init__(self, control: socket.socket):
        self._control = control
        self._children: Dict[int, socket.socket] = {}   # pid -> its answer socket
        self._wake_read, self._wake_write = os.pipe()
        for fd in (self._wake_read, self._wake_write):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self._wake_write)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)   # only to wake select()
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is for the master, who closes us
        self._selector = selectors.DefaultSelector()
        self._selector.register(control, selectors.EVENT_READ)
        self._selector.register(self._wake_read, selectors.EVENT_READ)

    def serve(self) -> None:
        while True:
            for key, _ in self._selector.select():
                if key.fileobj is self._control:
                    if not self._take_request():
                        self._end_children()
                        return
                else:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_read, 4096)
            self._reap()

    def _take_request(self) -> bool:
        """Fork for one request; False at the master's end of file."""
        try:
            header, fds = _receive(self._control, HEADER.size)
        except OSError:
            return False
        if len(header) < HEADER.size:
            _close_all(fds)
            return False
        (length,) = HEADER.unpack(header)
        body = _receive_exactly(self._control, length)
        if body is None:
            _close_all(fds)
            return False
        request = json.loads(body)
        answer = socket.socket(fileno=fds[0])
        given = fds[1:]
        try:
            pid = os.fork()
        except OSError as error:
            _close_all(given)
            _say(answer, {"error": f"fork failed: {error}"})
            answer.close()
            return True
        if pid == 0:
            self._become_slave(request, answer, given)
        _close_all(given)
        self._children[pid] = answer
        _say(answer, {"pid": pid})
        return True

    def _become_slave(self, request: dict, answer: socket.socket, given: List[int]) -> NoReturn:
        """In the child: let go of the template, take the request's descriptors, run the slave."""
        status = 1
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)   # Python's own, as in a fresh one
            os.setsid()   # as spawned slaves: Ctrl-C in the master's terminal reaches the master alone
            die_with_parent()
            self._selector.close()
            for child in [answer, self._control, *self._children.values()]:
                child.close()
            os.close(self._wake_read)
            os.close(self._wake_write)
            place_descriptors(given, [0, 1, 2] + list(request["targets"]))
            os.environ.clear()
            os.environ.update(request["env"])
            os.chdir(request["cwd"])
            status = run_command(request["argv"])
        except BaseException:
            traceback.print_exc()
        os._exit(status)

    def _reap(self) -> None:
        while self._children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            answer = self._children.pop(pid, None)
            if answer is not None:
                _say(answer, {"exit": os.waitstatus_to_exitcode(status)})
                answer.close()

    def _end_children(self) -> None:
        """The master is gone or done: end the slaves still running, then reap them."""
        for signum, grace in ((signal.SIGTERM, END_GRACE_SECONDS), (signal.SIGKILL, 5.0)):
            for pid in list(self._children):
                with contextlib.suppress(OSError):
                    os.killpg(pid, signum)
            deadline = time.monotonic() + grace
            while self._children and time.monotonic() < deadline:
                self._reap()
                self._selector.select(0.05)   # woken early by SIGCHLD
        self._reap()


def place_descriptors(given: List[int], targets: List[int]) -> None:
    """Make ``given[i]`` the descriptor ``targets[i]``, as ``subprocess`` does for ``pass_fds``."""
    above = max(targets + given) + 1
    moved = [_fcntl_dup(fd, above) for fd in given]   # out of the way of every target
    _close_all(given)
    for fd, target in zip(moved, targets):
        os.dup2(fd, target)
    _close_all(moved)


def _fcntl_dup(fd: int, lowest: int) -> int:
    import fcntl
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, lowest)


def run_command(argv: List[str]) -> int:
    """Run ``python -m MODULE ARGS`` (``argv[1:]``) in this process, as the interpreter would;
    return the exit status."""
    if argv[1:2] != ["-m"] or len(argv) < 3:
        raise ValueError(f"the fork server runs 'python -m MODULE ...' only, not {argv!r}")
    module, args = argv[2], argv[3:]
    # no reseeding here: random and numpy.random reseed themselves in a forked child (os.register_at_fork)
    sys.path[0] = os.getcwd()   # as -m puts the working directory first
    sys.argv = [module] + args   # runpy puts the module's file in argv[0]
    status: object = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as end:
        status = end.code
    except KeyboardInterrupt:
        status = 130
    except BaseException:
        traceback.print_exc()
        status = 1
    finally:
        status = _finish(status)
    return status if isinstance(status, int) else 1


def _finish(status: object) -> object:
    """What the interpreter does on its way out: wait for threads, run atexit, flush."""
    import atexit
    import threading
    shutdown = getattr(threading, "_shutdown", None)
    with contextlib.suppress(Exception):
        if shutdown is not None:
            shutdown()
    run_exit = getattr(atexit, "_run_exitfuncs", None)
    with contextlib.suppress(Exception):
        if run_exit is not None:
            run_exit()
    if status is None:
        status = 0
    elif not isinstance(status, int):
        print(status, file=sys.stderr)
        status = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    return status


def die_with_parent() -> None:
    """Linux: be killed should the template be killed (it ends its children itself otherwise)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG


def _receive(control: socket.socket, size: int) -> Tuple[bytes, List[int]]:
    data, fds, _flags, _address = socket.recv_fds(control, size, MAX_FDS)
    return data, list(fds)


def _receive_exactly(control: socket.socket, length: int) -> Optional[bytes]:
    parts, left = [], length
    while left:
        part = control.recv(left)
        if not part:
            return None
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _say(answer: socket.socket, message: dict) -> None:
    with contextlib.suppress(OSError):
        answer.sendall(json.dumps(message).encode() + b"\n")


def _close_all(fds: List[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def main(argv: List[str]) -> int:
    control = socket.socket(fileno=int(argv[0]))
    preload(argv[1:])
    with contextlib.suppress(OSError):
        control.sendall(b"R")   # ready: for those who wait (forkserver.ForkServer.wait_ready)
    Template(control).serve()
    return 0
