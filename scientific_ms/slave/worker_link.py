"""A worker's end of the socket pair to its keeper (``keeper.py``).

A worker is a slave process that runs handlers; its keeper runs none and
keeps it alive, beats its heart and times its tasks. The worker talks to the
master itself (its own connections, ``feed.py``); to its keeper it says only
who it is and when a task with a time limit starts and ends. Messages are
pickled tuples in ``multiprocessing.connection`` framing, on one host (a
worker's are the records below, :func:`encode` and :func:`decode`)::

    worker -> keeper  ("hello", process_id, watchdog_period, (host, port, secret), rejoin_grace)
                                                 registered (again) with the master at that address
                      ("start", task_id, assignment, tag, limit)   only tasks with a time limit
                      ("end", assignment)
                      ("bye",)                   it leaves on purpose (said before it unregisters,
                                                 and again as the link closes): not a death
    keeper -> worker  ("poke",)                  the master revoked tasks it holds: exchange now
                      ("terminated",)            the master finished
                      ("lost", reason)           the master is gone (the keeper's heartbeats say so)

A thread of the worker reads its keeper's messages; the end of file there
means the keeper died, and the worker ends at once: a worker never outlives
its keeper (on Linux its keeper's death also kills it: ``die_with``).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import threading
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Callable, Dict, NamedTuple, Optional, Tuple, Type, Union

from . import output

if TYPE_CHECKING:
    from .relayed import RelayLink  # imported only by a worker whose keeper relays

log = logging.getLogger(__name__)

_link: Optional[WorkerLink] = None


class Hello(NamedTuple):
    """``"hello"``: the worker registered (again) with the master at ``address``."""
    process_id: int
    watchdog_period: Optional[float]
    address: Tuple[str, int, bytes]
    rejoin_grace: float


class Start(NamedTuple):
    """``"start"``: a task with a time limit started."""
    task_id: str
    assignment: int
    tag: str
    limit: float


class End(NamedTuple):
    """``"end"``: that task ended."""
    assignment: int


class Bye(NamedTuple):
    """``"bye"``: the worker leaves on purpose; its end is not a death."""


WorkerMessage = Union[Hello, Start, End, Bye]
_KINDS: Dict[str, Type[WorkerMessage]] = {"hello": Hello, "start": Start, "end": End, "bye": Bye}
_NAMES = {kind: name for name, kind in _KINDS.items()}


def encode(message: WorkerMessage) -> tuple:
    """A worker's message as it crosses the link: its kind's name, then its fields."""
    return (_NAMES[type(message)], *message)


def decode(message: tuple) -> Optional[WorkerMessage]:
    """A worker's message as its record; None for a kind this keeper does not know."""
    kind = _KINDS.get(message[0]) if message else None
    return None if kind is None else kind._make(message[1:])


class WorkerLink:
    """The worker's end; any thread may send (one lock), one thread reads."""

    def __init__(self, conn: Connection, keeper_pid: int, keeper_id: Optional[int] = None,
                 keeper_is_child: bool = False, relay: Optional[RelayLink] = None):
        self._conn = conn
        #: The link to the keeper's relay, which carries this worker's exchanges (``relay.py``),
        #: if its keeper relays them.
        self.relay = relay
        self.keeper_is_child = keeper_is_child   # a lone slave's keeper: this process reaps it
        self._lock = threading.Lock()
        self.keeper_pid = keeper_pid
        #: The keeper's id at the master, when it registered before this worker was forked
        #: (``task_manager slave -n``): the worker registers with ``info["agent"]`` set to it.
        self.keeper_id = keeper_id
        self._reader: Optional[threading.Thread] = None
        self.closed = False

    def _send(self, message: WorkerMessage) -> None:
        with self._lock:
            if self.closed:
                return
            try:
                self._conn.send(encode(message))
            except OSError:
                pass   # the keeper is gone: the reader thread ends this process

    def hello(self, process_id: int, watchdog_period: Optional[float], address: Tuple[str, int, bytes],
              rejoin_grace: float) -> None:
        self._send(Hello(process_id, watchdog_period, address, rejoin_grace))

    def started(self, task_id: str, assignment: int, tag: str, limit: float) -> None:
        self._send(Start(task_id, assignment, tag, limit))

    def ended(self, assignment: int) -> None:
        self._send(End(assignment))

    def leaving(self) -> None:
        """This worker leaves on purpose (said before it unregisters): its end is not a death."""
        self._send(Bye())

    def bye(self) -> None:
        """This worker leaves on purpose; then the link closes."""
        self._send(Bye())
        self.close()

    def finish(self) -> None:
        """This worker is done serving: say bye, and reap a keeper that is our child
        (on a thread: the keeper ends right after, and nobody need wait for it)."""
        self.bye()
        if self.keeper_is_child:
            threading.Thread(target=_reap, args=(self.keeper_pid,), name="scientific_ms-reap-keeper",
                             daemon=True).start()

    def close(self) -> None:
        """Close our end. While the reader thread waits on it, shut the socket down instead
        (it reads the end of file and closes it): closing a descriptor another thread reads
        is a race (and the number may be reused)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self._reader is None or self._reader is threading.current_thread():
                with contextlib.suppress(OSError):
                    self._conn.close()
                return
            with contextlib.suppress(OSError):
                end = socket.socket(fileno=os.dup(self._conn.fileno()))
                with end:
                    end.shutdown(socket.SHUT_RDWR)

    def listen(self, on_news: Callable[[tuple], None]) -> None:
        """Start the thread that reads the keeper's messages (once); it calls ``on_news(message)``."""
        if self._reader is None:
            self._reader = threading.Thread(target=self._read, args=(on_news,), name="scientific_ms-keeper-link",
                                            daemon=True)
            self._reader.start()

    def _read(self, on_news: Callable[[tuple], None]) -> None:
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                break
            on_news(message)
        if self.closed:
            with contextlib.suppress(OSError):
                self._conn.close()
            return   # we closed it: leaving
        message = f"the keeper (PID {self.keeper_pid}) of this slave process ended; it ends too"
        output.release()   # the lines the master never got, and these last words, where we run
        log.error("%s", message)
        with contextlib.suppress(Exception):
            sys.stderr.write(f"scientific_ms: {message}\n")
            sys.stderr.flush()
        os._exit(1)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def current() -> Optional[WorkerLink]:
    """This process's link to its keeper: None unless it is a worker."""
    return _link


def become_worker(link: WorkerLink) -> None:
    """Mark this process (just forked) as a worker of the keeper at the other end of ``link``."""
    global _link
    _link = link


def die_with(keeper_pid: int) -> None:
    """In a worker just forked from its keeper: be killed when the keeper dies (Linux).

    Elsewhere the link's end of file does it (``WorkerLink._read``).
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != keeper_pid:   # the keeper died before we could ask
        os._exit(1)
