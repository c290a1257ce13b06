"""The keeper: a process that runs no user code and keeps the slave processes that do.

Every slave process that runs handlers (a *worker*) talks to the master
itself, on connections of its own (``slave.py``, ``feed.py``): tasks and
answers never pass through the keeper. The keeper holds one registration
at the master (role ``"agent"``) and, for all its workers at once:

* sends their heartbeats, in one long-polled ``agent_watch``
  (``keeper_watch.py``): a handler holding the GIL or stuck in C keeps its
  heartbeats; a stopped worker gets none and is declared dead at the
  watchdog limit (when it runs again it registers again on its own);
* notices at once that a worker ended (a pidfd), reports it with ``lost``,
  and replaces it when it died (``task_manager slave -n``);
* ends a task that overruns its time limit by ``KILL_GRACE_SECONDS`` with
  the handler stuck where SIGALRM cannot reach it: answers it with
  TaskTimeLimitError, says goodbye for the worker (its queued tasks run
  elsewhere, unblamed), kills it and everything it started, and forks a
  fresh worker;
* ends the workers when the master ends (after ``ABANDON_GRACE_SECONDS``,
  for one stuck in C) or is lost (unless it keeps a journal: then the
  workers wait for it, ``rejoin.py``, and the keeper follows them to it);
* passes SIGTERM (a batch system's walltime) and SIGINT on to its workers.

What it does to the worker processes (forking, time limits, replacing,
stopping) is a :class:`~scientific_ms.slave.keeper_lives.WorkerLives` that
the keeper holds; each worker is a ``keeper_workers.Worker``, and what a
worker says arrives as the records of ``worker_link.py``.

Two shapes (``keeper_start.py``). ``task_manager slave LABEL -n N`` (``run_keeper``): the
started process is the keeper of N workers forked from it::

    master  <== register, agent_watch, lost, ==  keeper (task_manager slave -n N)
       ^        unregister, exchange (a            |  fork, pidfd, socket pair
       |        time-out's answer)                 +-- worker 1 (own process group)
       |                                           +-- worker N
       +==== register, exchange, get_data, unregister ==== each worker, directly

A lone slave (``SlaveProcess.start()`` in the main thread of a POSIX
process; ``become_lone_keeper``): the started process stays the worker,
so that its PID is the slave's, its signals (Ctrl-C in a terminal, SIGTERM
from a launcher) reach its handlers as before, and whoever started it waits
for it; the keeper is a child forked from it at ``start()``, before any
connection or thread exists::

    launcher, shell, supervisor or MPI rank
     `-- slave process (worker): serves tasks  <== exchange ==>  master
          `-- keeper (own process group)       <== agent_watch => master

A lone keeper ends when its worker does. When it kills its worker for a
time limit it forks a replacement from itself (a fresh copy of the slave as
it was at ``start()``), unless someone else replaces it: a master's
supervisor (spawned slaves) or nobody (an MPI rank: its waiter reports the
death). A worker dies with its keeper (``worker_link.py``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import socket
import time
from multiprocessing.connection import wait as wait_for_any
from typing import List, Optional, Tuple, Union

from .. import settings
from ..core.needs import declared
from ..errors import ConnectionLostError, ScientificMSError
from ..machine import process_info
from ..wire import tls
from ..wire.client import MasterConnection
from ..wire.protocol import OK
from .keeper_lives import SILENT_STOPS, BecameWorker, WorkerLives
from .keeper_watch import KeeperWatch
from .worker_link import Hello, WorkerLink

log = logging.getLogger(__name__)

#: A task past its time limit whose handler has not stopped this long after is killed.
KILL_GRACE_SECONDS = 0.5
#: When the master ends, a worker abandons its running handler itself after
#: ``ABANDON_GRACE_SECONDS``, with a message; the keeper kills it this much later.
STOP_MARGIN_SECONDS = 1.0


class Keeper:
    """Keeps workers of ``label``; see the module docstring.

    ``lone``: the keeper of the process it was forked from; else of
    ``count`` workers forked from it, with ``connection`` to the master.
    Their processes are ``self.lives`` (``keeper_lives.py``); the keeper
    talks to the master for them. :meth:`run` returns the exit code in the
    keeper, and a :class:`WorkerLink` in each worker it forks (which then serves).
    """

    def __init__(self, label: str, *, lone: bool, connection: Optional[MasterConnection] = None,
                 count: int = 1, max_restarts: int = 0, replace_killed: bool = True):
        self.label = label
        self.lone = lone
        self.count = count
        self.connection = connection
        #: A lone keeper's master (host, port, secret): its main connection is opened only
        #: when needed (``_main_connection``); the watch thread has its own.
        self._address: Optional[Tuple[str, int, bytes]] = None
        self.keeper_id: Optional[int] = None
        self.lives = WorkerLives(label, lone=lone, replace_killed=replace_killed, max_restarts=max_restarts,
                                 connection=self._main_connection, call=self._call, post=self._post,
                                 on_hello=self._on_hello)
        self._watch: Optional[KeeperWatch] = None
        self._events: List[tuple] = []
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_writer.setblocking(False)
        self._signalled: Optional[int] = None
        self._rejoin_grace = 0.0

    # ------------------------------------------------------------------ the main loop

    def run(self) -> Union[int, WorkerLink]:
        try:
            if not self.lone:
                # The watch starts once the workers exist: it sees them starting, and polls
                # briefly until each said hello, instead of one idle poll of POLL_SECONDS
                # during which a worker with a short watchdog period would get no beat.
                if not self._register(watch=False):
                    return 0
                threshold = settings.relay_workers()
                if threshold and self.count >= threshold:
                    from .relay import ExchangeRelay  # (only a keeper that relays needs it)
                    self.lives.relay = ExchangeRelay(self._relay_connection)
                    self.lives.relay.start()
                for _ in range(self.count):
                    self.lives.fork(self.lives.max_restarts)
                self._start_watch()
            self._loop()
        except BecameWorker as became:
            return self._as_worker(became)
        self._end()
        return self.lives.exit_code

    def _loop(self) -> None:
        lives = self.lives
        while lives.workers:
            ready = wait_for_any([self._wake_reader, *lives.waitables()], self._timeout())
            for item in ready:
                if item is self._wake_reader:
                    with contextlib.suppress(OSError):
                        self._wake_reader.recv(4096)
                else:
                    lives.on_ready(item)
            self._take_events()
            lives.enforce_time_limits(KILL_GRACE_SECONDS)
            lives.replace_ended()
            lives.wind_down()

    def _timeout(self) -> float:
        now = time.monotonic()
        return max(0.0, min([now + settings.POLL_SECONDS, *self.lives.due(KILL_GRACE_SECONDS)]) - now) + 0.001

    def _as_worker(self, became: BecameWorker) -> WorkerLink:
        """In a worker just forked: let go of the keeper's sockets and connections (never shut
        them down: the keeper still uses them) and make the link to the keeper."""
        self._close_wake()
        if self.connection is not None:
            self.connection.disown()
        watching = self._watch.connection if self._watch is not None else None
        if watching is not None:
            watching.disown()
        relay = None
        if became.relay is not None and self.connection is not None:
            connection = self.connection
            from .relayed import RelayLink
            relay = RelayLink(became.relay, (connection.host, connection.port, connection.secret),
                              connection.duplicate)   # the worker's own, for large payloads (relayed.py)
        elif became.relay is not None:
            became.relay.close()
        return WorkerLink(became.conn, became.keeper_pid, keeper_id=None if self.lone else self.keeper_id,
                          relay=relay)

    def _relay_connection(self) -> MasterConnection:
        """A new connection to the current master, for the relay (its threads)."""
        connection = self.connection
        if connection is None:
            raise ConnectionLostError(f"the keeper of {self.label!r} has no master now")
        return connection.duplicate()

    # ------------------------------------------------------------------ the master

    def _on_hello(self, hello: Hello) -> None:
        self._rejoin_grace = max(self._rejoin_grace, hello.rejoin_grace or 0.0)
        self._follow(hello.address)

    def _follow(self, address: Tuple[str, int, bytes]) -> None:
        """A worker registered at ``address``: watch it there (a lone keeper follows its
        worker to a restarted master; a keeper of -n N registered first)."""
        host, port, secret = address
        if not self.lone:
            if self.keeper_id is not None:
                return
        elif self._address is not None and self._address[:2] == (host, port) and self._watch is not None:
            return
        self._drop_registration()
        if self.lone:
            # Only the watch thread's connection now: one connection and handshake less for the
            # master at every slave's start. (If the master died since the worker registered,
            # the watch cannot connect and says "lost": a busy worker learns of it only from us.)
            self._address = address
            self._watch = KeeperWatch(functools.partial(self._connect, address), None, self.lives.targets,
                                      self._post)
            self._watch.start()
            return
        try:
            self.connection = self._connect(address)
        except ScientificMSError as error:
            # A worker reached that master a moment ago, so it died since (or cannot be reached from
            # here). A lost master, as if the watch had lost it: a worker inside a long handler
            # learns of its master's death only from us (its feed thread is not talking to it).
            self.connection = None
            self._post(("lost", f"cannot reach the master at {host}:{port} that a worker registered "
                                f"with\n  {error}"))
            return
        self._register()

    def _register(self, watch: bool = True) -> bool:
        """Register as the agent of the workers and (``watch``) start the watch thread; False if
        the job is over."""
        connection = self.connection
        assert connection is not None   # given to run_keeper, or just opened by _follow
        try:
            status, self.keeper_id = connection.call(
                "register", "agent", dict(process_info(), slaves=self.count, resources=declared()), None, None)
        except ConnectionLostError as error:
            self._post(("lost", str(error)))
            return True
        if status != OK:
            log.info("the master of %r has already finished", self.label)
            self.keeper_id = None
            return False
        log.info("keeper %s of %r at %s (%d worker(s))", self.keeper_id, self.label,
                 connection.address, self.count)
        if watch:
            self._start_watch()
        return True

    def _start_watch(self) -> None:
        if self.connection is not None and self.keeper_id is not None:
            self._watch = KeeperWatch(self.connection.duplicate, self.keeper_id, self.lives.targets, self._post)
            self._watch.start()

    def _drop_registration(self) -> None:
        if self._watch is not None:
            self._watch.stop()
            self._watch = None
        if self.connection is not None:
            self.connection.close()
            self.connection = None
        self._address = None
        self.keeper_id = None

    def _post(self, event: tuple) -> None:
        """Any thread: hand an event to the main loop (list appends are atomic)."""
        self._events.append(event)
        self.wake()

    def wake(self) -> None:
        """Interrupt the main loop's wait (safe in a signal handler: takes no lock)."""
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_writer.send(b"x")

    def _main_connection(self) -> Optional[MasterConnection]:
        """The main thread's connection to the master (None if there is none now); a lone
        keeper opens it the first time it needs it (most never do)."""
        if self.connection is None and self._address is not None:
            try:
                self.connection = self._connect(self._address)
            except ScientificMSError as error:
                host, port, _ = self._address
                self._address = None
                self._post(("lost", f"cannot reach the master at {host}:{port}\n  {error}"))
        return self.connection

    def _connect(self, address: Tuple[str, int, bytes]) -> MasterConnection:
        host, port, secret = address
        return MasterConnection(host, port, secret, self.label, tls_context=tls.client_context())

    def _call(self, method: str, *args) -> object:
        """A call on the main connection; a lost master stops the keeper."""
        connection = self._main_connection()
        if connection is None:
            return None
        try:
            return connection.call(method, *args, timeout=30.0)
        except ScientificMSError as error:
            self._post(("lost", str(error)))
            return None

    def _take_events(self) -> None:
        lives = self.lives
        if self._signalled is not None:
            signum, self._signalled = self._signalled, None
            lives.pass_signal(signum)
        while self._events:
            event = self._events.pop(0)
            kind = event[0]
            if kind == "terminated":
                lives.tell(("terminated",))
                lives.stop("terminated", settings.ABANDON_GRACE_SECONDS + STOP_MARGIN_SECONDS, 0)
            elif kind == "unknown":
                lives.end_declared_dead(event[1])
            elif kind == "revoked":
                lives.tell(("poke",))
            elif kind == "forgotten":
                self._drop_registration()
                address = lives.workers[0].address if lives.workers else None
                if address is not None:
                    self._follow(address)
            elif kind == "lost":
                self._master_lost(event[1])

    def _master_lost(self, message: str) -> None:
        lives = self.lives
        self._drop_registration()
        if self._rejoin_grace and lives.stopping is None:
            log.warning("keeper of %r lost its master (%s); its workers wait for it to come back",
                        self.label, message)
            lives.forget_registrations()
            return
        if lives.stopping is None:
            # A lone keeper's worker says so itself, to the user who started it: once is enough.
            log.log(logging.INFO if self.lone else logging.ERROR,
                    "keeper of %r lost its master; ending its workers\n  %s", self.label, message)
            lives.tell(("lost", message))
        lives.stop("lost", settings.ABANDON_GRACE_SECONDS + STOP_MARGIN_SECONDS, 1)

    # ------------------------------------------------------------------ signals and the end

    def install_signals(self) -> None:
        """SIGTERM and SIGINT go on to the workers (a lone keeper leaves Ctrl-C to its worker,
        which has it from the terminal)."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, signal.SIG_IGN if self.lone else self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        # The main loop may be anywhere: only note it, and wake the loop.
        self._signalled = signum
        self.wake()

    def _close_wake(self) -> None:
        for end in (self._wake_reader, self._wake_writer):
            end.close()

    def _end(self) -> None:
        """The last worker ended: say goodbye (unless the master is over or gone) and close."""
        if self.lives.relay is not None:
            self.lives.relay.stop()
        if self._watch is not None:
            self._watch.stop()
        if self.keeper_id is not None and self.connection is not None and self.lives.stopping not in SILENT_STOPS:
            with contextlib.suppress(ScientificMSError):
                self.connection.call("unregister", self.keeper_id, timeout=5.0)
        if self.connection is not None:
            self.connection.close()
        self._close_wake()
