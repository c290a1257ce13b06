"""How the master starts its local slaves: spawned (a fresh interpreter each) or forked
from a warm template (``template.py``).

A spawned slave imports scientific_ms, Pyro5, cloudpickle and the user's
libraries itself: 0.2 s and more of every start-up, seconds for a library
such as emcee. A :class:`ForkServer` starts one template process per master
that imports all that once (its ``preload`` modules too); each slave is then
a fork of it, ready in milliseconds. The template is a fresh interpreter,
not a fork of the master: a slave never inherits the master's threads or
sockets. The slave's command line, environment and working directory are
the spawned slave's (``launch.slave_command``); only how its process comes
to be differs. :class:`ForkedChild` is the master's handle on one such
slave, with the part of ``subprocess.Popen`` that the supervisor uses.

``start_method``: ``"forkserver"`` or ``"spawn"`` (:func:`settings.start_method`).
A fork server that cannot start or answer falls back to spawning, with a warning.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

log = logging.getLogger(__name__)

#: Seconds to wait for the template to fork (it may still be importing its ``preload`` modules).
FORK_ANSWER_SECONDS = 120.0
#: The template's command (not ``-m``: this module imports ``template.py`` already).
ENTRY = "import sys; from scientific_ms.master.template import main; sys.exit(main(sys.argv[1:]))"
#: Seconds the template gets to end once closed.
CLOSE_SECONDS = 10.0


def spawn(command: Sequence[str], env: Dict[str, str], cwd: str, pass_fds: Sequence[int]) -> subprocess.Popen:
    """A slave as a fresh interpreter, in a session of its own."""
    return subprocess.Popen(list(command), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            pass_fds=tuple(pass_fds), start_new_session=True)


class ForkedChild:
    """A slave forked by the template: its PID, and its exit status when the template reaped it.

    ``poll``, ``wait``, ``send_signal``, ``terminate``, ``kill`` and
    ``returncode`` behave as ``subprocess.Popen``'s.
    """

    def __init__(self, pid: int, answer: socket.socket):
        self.pid = pid
        self.returncode: Optional[int] = None
        self._answer = answer
        self._done = threading.Event()
        threading.Thread(target=self._await_exit, name=f"scientific_ms-forked-{pid}", daemon=True).start()

    def _await_exit(self) -> None:
        code = None
        try:
            with self._answer.makefile("rb") as lines:
                for line in lines:
                    code = json.loads(line).get("exit", code)
        except (OSError, ValueError):
            pass
        finally:
            self._answer.close()
        if code is None:   # the template died before it could reap us: so did we (PR_SET_PDEATHSIG)
            log.warning("the fork server of slave process %d ended before the slave did", self.pid)
            code = -9
        self.returncode = code
        self._done.set()

    def poll(self) -> Optional[int]:
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired(f"slave process {self.pid}", timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:   # once reaped, the PID may be another process's
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        import signal
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        import signal
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """One template process, started at once, importing ``preload``; :meth:`start` forks slaves
    from it, :meth:`close` ends it."""

    def __init__(self, preload: Sequence[str] = (), cwd: Optional[str] = None):
        self.preload = list(preload)
        self._lock = threading.Lock()
        ours, theirs = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", ENTRY, str(theirs.fileno()), *self.preload],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, cwd=cwd, start_new_session=True)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._control: Optional[socket.socket] = ours
        self._ready = False   # the template says b"R" once it imported its modules
        log.info("fork server %d started (preload: %s)", self.process.pid, ", ".join(self.preload) or "nothing")

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the template imported its modules (True), or ``timeout`` s (False)."""
        with self._lock:
            if self._ready or self._control is None:
                return self._ready
            self._control.settimeout(timeout)
            try:
                self._ready = self._control.recv(1) == b"R"
            except OSError:
                pass
            finally:
                self._control.settimeout(None)
            return self._ready

    def start(self, command: Sequence[str], env: Dict[str, str], cwd: str,
              pass_fds: Sequence[int]) -> ForkedChild:
        """Fork a slave running ``command`` (``python -m MODULE ...``) with ``env`` in ``cwd``,
        holding ``pass_fds`` at the same numbers; OSError if the template cannot."""
        from .template import HEADER  # (the template's own module: only a master that forks imports it)
        mine, theirs = socket.socketpair()
        try:
            body = json.dumps({"argv": list(command), "env": env, "cwd": cwd,
                               "targets": list(pass_fds)}).encode()
            with contextlib.ExitStack() as stack:
                stdio = [stack.enter_context(_stdio(fd)) for fd in (0, 1, 2)]
                with self._lock:
                    if self._control is None:
                        raise OSError("the fork server is closed")
                    socket.send_fds(self._control, [HEADER.pack(len(body)) + body],
                                    [theirs.fileno(), *stdio, *pass_fds])
            theirs.close()
            mine.settimeout(FORK_ANSWER_SECONDS)
            line = _first_line(mine)
            if not line:
                raise OSError(f"the fork server (PID {self.process.pid}) ended without answering")
            answer = json.loads(line)
            if "pid" not in answer:
                raise OSError(f"the fork server could not start a slave: {answer.get('error')}")
            mine.settimeout(None)
        except BaseException:
            theirs.close()
            mine.close()
            raise
        return ForkedChild(answer["pid"], mine)

    def close(self) -> None:
        """End the template (its children, if any are left, with it) and reap it."""
        with self._lock:
            control, self._control = self._control, None
        if control is None:
            return
        control.close()
        try:
            self.process.wait(CLOSE_SECONDS)
        except subprocess.TimeoutExpired:
            log.warning("fork server %d did not end; killing it", self.process.pid)
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def _stdio(fd: int) -> Iterator[int]:
    """What the slave gets as ``fd``: /dev/null for stdin (as the supervisor's ``spawn``), our
    stdout or stderr as a spawned slave inherits them, /dev/null if we have none."""
    if fd > 0 and _is_open(fd):
        yield fd
        return
    null = os.open(os.devnull, os.O_RDWR)
    try:
        yield null
    finally:
        os.close(null)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _first_line(answer: socket.socket) -> bytes:
    """The template's first answer, read byte by byte: what follows (the exit status of a slave
    that ended at once) stays in the socket for :class:`ForkedChild`."""
    line = bytearray()
    while not line.endswith(b"\n"):
        byte = answer.recv(1)
        if not byte:
            break
        line += byte
    return bytes(line)


class SlaveStarter:
    """Starts the master's local slaves by ``start_method``, forking them from a template: the
    program's shared one (:func:`warm_start`) if it has the ``preload`` modules, else one of
    this master's own, made at the first need with ``preload`` (None: :func:`main_modules`).
    A template that fails makes this and later slaves spawned, with a warning."""

    def __init__(self, start_method: str, preload: Optional[Sequence[str]]):
        self.start_method = start_method
        self.preload = None if preload is None else list(preload)
        self._server: Optional[ForkServer] = None
        self._lock = threading.Lock()
        self._failed = False

    def __call__(self, command: Sequence[str], env: Dict[str, str], cwd: str, pass_fds: Sequence[int]):
        forkable = len(command) > 2 and command[0] == sys.executable and command[1] == "-m"
        if self.start_method != "forkserver" or self._failed or not forkable:
            return spawn(command, env, cwd, pass_fds)
        try:
            with self._lock:
                server = self._server or shared_for(self.preload or ())
                if server is None:
                    modules = self.preload if self.preload is not None else main_modules()
                    server = self._server = ForkServer(modules, cwd)
            return server.start(command, env, cwd, pass_fds)
        except OSError as error:
            log.warning("could not fork a slave from the fork server (%s);\n  spawning this slave and the "
                        "next ones instead (start_method='spawn')", error)
            self._failed = True
            return spawn(command, env, cwd, pass_fds)

    def close(self) -> None:
        """End this master's own template (a shared one stays for the next master)."""
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.close()


# ------------------------------------------------------------------ a template shared by the program

_shared: Dict[Tuple[str, ...], ForkServer] = {}
_shared_lock = threading.Lock()


def warm_start(preload: Optional[Sequence[str]] = None, wait: bool = False) -> int:
    """Start a fork server now, kept until this program ends, for every master of the program
    that starts local slaves by fork server and wants no module it lacks; returns its PID.

    Called early (at the top of a script or notebook), it imports while the
    program does its own work, so that the first ``Executor(slaves=N)`` forks
    its slaves at once. ``preload``: module names (default
    SCIENTIFIC_MS_PRELOAD, else the installed packages ``__main__`` uses so far).
    ``wait``: return only once it imported them (at most a minute).
    """
    from .. import settings
    given = settings.preload(preload)
    modules = tuple(given if given is not None else main_modules())
    with _shared_lock:
        server = _shared.get(modules)
        if server is None or server.process.poll() is not None:
            if not _shared:
                atexit.register(close_shared)
            server = _shared[modules] = ForkServer(modules)
    if wait and not server.wait_ready(FORK_ANSWER_SECONDS):
        log.warning("the fork server %d is still importing %s", server.process.pid, ", ".join(modules))
    return server.process.pid


def shared_for(preload: Sequence[str]) -> Optional[ForkServer]:
    """A running shared template that imported every module of ``preload``, if any."""
    with _shared_lock:
        for modules, server in _shared.items():
            if set(preload) <= set(modules) and server.process.poll() is None:
                return server
    return None


def close_shared() -> None:
    """End the templates started by :func:`warm_start` (done at the program's exit anyway)."""
    with _shared_lock:
        servers = list(_shared.values())
        _shared.clear()
    for server in servers:
        with contextlib.suppress(Exception):
            server.close()


def main_modules() -> List[str]:
    """The installed packages that the program's ``__main__`` uses (imported, or whose functions
    or classes it holds): the default ``preload``. Modules of the user's own folders are left
    out: importing them may do anything, and they may change while the job runs."""
    main = sys.modules.get("__main__")
    if main is None:
        return []
    names = set()
    for value in list(vars(main).values()):
        name = value.__name__ if isinstance(value, type(sys)) else getattr(value, "__module__", None)
        if isinstance(name, str) and name:
            names.add(name.partition(".")[0])
    return sorted(name for name in names if _installed(name))


#: Packages that run the program rather than serve its work (a notebook's kernel, a test runner),
#: and scientific_ms's own dependencies, which every slave imports anyway.
NOT_PRELOADED = frozenset({"__main__", "builtins", "scientific_ms", "IPython", "ipykernel", "pytest", "_pytest",
                           "pip", "setuptools", "Pyro5", "serpent", "psutil", "cloudpickle"})


def _installed(name: str) -> bool:
    if name in NOT_PRELOADED or name not in sys.modules:
        return False
    path = getattr(sys.modules[name], "__file__", None)
    if not path:
        return False
    path = os.path.realpath(path)
    return any(path.startswith(root + os.sep) for root in _site_packages())


@functools.lru_cache(maxsize=1)
def _site_packages() -> Tuple[str, ...]:
    """Where installed packages live, as ``site`` set them up (a system's dist-packages too).
    Asked once, of ``site`` rather than ``sysconfig``, which takes milliseconds on the way to
    an Executor's first slave; ``sysconfig`` only where ``site`` cannot say."""
    import site
    try:
        paths = [*site.getsitepackages(), site.getusersitepackages()]
    except AttributeError:   # an old virtualenv's own site module
        import sysconfig
        paths = [sysconfig.get_paths()[key] for key in ("purelib", "platlib")]
    return tuple({os.path.realpath(path) for path in paths})


def close_quietly(starter: Optional[SlaveStarter]) -> None:
    if starter is not None:
        with contextlib.suppress(Exception):
            starter.close()
