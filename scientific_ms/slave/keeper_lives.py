"""The lives of a keeper's workers (``keeper.py``): forking, timing, replacing, ending them.

:class:`WorkerLives` owns the keeper's list of workers and everything it
does to their processes; the :class:`~scientific_ms.slave.keeper.Keeper`
holds one, talks to the master, and hands it what it needs of that (the
connection, a call, an event to post) in its constructor. Everything here
runs on the keeper's main thread, which is the only thread that forks: a
worker is forked from it, never from the watch thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import time
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Callable, Iterable, List, Optional, Tuple

from .. import settings
from ..errors import ScientificMSError, TaskTimeLimitError
from ..wire.client import MasterConnection
from ..wire.payload import dumps_exception
from ..wire.protocol import Answer
from .keeper_workers import Worker
from .relay_link import Link
from .worker_link import Hello, die_with

if TYPE_CHECKING:
    from .relay import ExchangeRelay  # imported only by a keeper that relays

log = logging.getLogger(__name__)

#: Why a keeper stops without saying goodbye for its workers: the master is over or gone.
SILENT_STOPS = ("terminated", "lost")
#: With no pidfd (not Linux), how often the keeper looks whether its workers still run.
NO_PIDFD_LOOK_SECONDS = 0.25


class BecameWorker(Exception):
    """Raised in a process just forked from the keeper: it unwinds to ``Keeper.run``, which
    makes it a worker with the link ``conn`` to its keeper ``keeper_pid``."""

    def __init__(self, conn: Connection, keeper_pid: int, relay: Optional[Link] = None):
        super().__init__("a worker")
        self.conn = conn
        self.keeper_pid = keeper_pid
        self.relay = relay   # the worker's end of its link to the keeper's relay, if any


def flush_output() -> None:
    """Before a fork: what is buffered is printed once, not once per process."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


class WorkerLives:
    """Forks, times, replaces and ends the workers of the keeper of ``label``.

    ``lone``: the keeper of the process it was forked from (``replace_killed``:
    whether it forks a replacement for a worker it killed); ``max_restarts``:
    how many deaths a worker's line may be replaced after. From the keeper:
    ``connection()`` its current connection to the master (or None),
    ``call(method, *args)`` a call on it that posts ``("lost", ...)`` on
    failure, ``post(event)`` an event for its main loop, and ``on_hello(hello)``
    when a worker registered (again) with the master.
    """

    def __init__(self, label: str, *, lone: bool, replace_killed: bool, max_restarts: int,
                 connection: Callable[[], Optional[MasterConnection]], call: Callable[..., object],
                 post: Callable[[tuple], None], on_hello: Callable[[Hello], None]):
        self.label = label
        self.lone = lone
        self.replace_killed = replace_killed
        self.max_restarts = max_restarts
        self._connection = connection
        self._call = call
        self._post = post
        self._on_hello = on_hello
        self.workers: List[Worker] = []
        self.stopping: Optional[str] = None   # why the keeper stops, once it does
        self.stop_deadline = 0.0               # when the workers still there are killed
        self.exit_code = 0
        #: The keeper's relay of its workers' exchanges (``relay.py``), if it relays them.
        self.relay: Optional[ExchangeRelay] = None

    # ------------------------------------------------------------------ what the main loop waits on

    def add(self, worker: Worker) -> None:
        """Keep ``worker`` (a lone keeper's: the process it was forked from)."""
        self.workers.append(worker)

    def waitables(self) -> list:
        """The workers' links and pidfds, for the main loop's wait."""
        items: list = []
        for worker in self.workers:
            if not worker.conn.closed:
                items.append(worker.conn)
            if worker.pidfd is not None:
                items.append(worker.pidfd)
        return items

    def due(self, grace: float) -> List[float]:
        """When the main loop must look again (monotonic): time limits past ``grace``, the stop."""
        due = [d for d in (worker.deadline(grace) for worker in self.workers) if d is not None]
        if self.stopping is not None:
            due.append(self.stop_deadline)
        if any(worker.pidfd is None for worker in self.workers):
            due.append(time.monotonic() + NO_PIDFD_LOOK_SECONDS)   # no pidfd here: look now and then
        return due

    def on_ready(self, item: object) -> None:
        """``item`` (a link or a pidfd) is ready: read the worker, or note that it ended."""
        for worker in self.workers:
            if item is worker.conn:
                self.read(worker)
            elif item == worker.pidfd and isinstance(item, int):
                worker.has_ended()
                worker.ended = True

    def read(self, worker: Worker) -> None:
        """Take what ``worker`` said; the keeper follows its hellos to the master."""
        for hello in worker.receive():
            self._on_hello(hello)

    def targets(self) -> Tuple[List[Worker], bool]:
        """For the watch thread: the workers to beat for, and whether one is still starting."""
        workers = list(self.workers)
        return [w for w in workers if w.process_id is not None and not w.killed], \
            any(w.process_id is None for w in workers)

    # ------------------------------------------------------------------ forking

    def fork(self, restarts_left: int) -> None:
        """Fork a worker; in the child this raises BecameWorker (it serves, never returns here)."""
        ours, theirs = socket.socketpair()
        relay = self.relay
        relay_ends = relay.pair() if relay is not None else None
        keeper_pid = os.getpid()
        flush_output()
        pid = os.fork()
        if pid == 0:
            ours.close()
            if relay_ends is not None:
                relay_ends[0].close()
            self._become_worker(Connection(theirs.detach()), keeper_pid,
                                relay_ends[1] if relay_ends is not None else None)
        theirs.close()
        if relay is not None and relay_ends is not None:
            relay_ends[1].close()
            relay.add(relay_ends[0], pid)
        self.workers.append(Worker(pid, Connection(ours.detach()), True, restarts_left))
        log.info("keeper of %r forked worker process %d", self.label, pid)

    def _become_worker(self, conn: Connection, keeper_pid: int, relay: Optional[Link] = None) -> None:
        # Its own process group: Ctrl-C in a terminal reaches the keeper alone, and ending
        # the worker ends everything its handler started.
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)
        die_with(keeper_pid)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL if signum == signal.SIGTERM else signal.default_int_handler)
        for worker in self.workers:
            worker.close()
        self.workers = []
        if self.relay is not None:
            self.relay.close_in_worker()
            self.relay = None
        raise BecameWorker(conn, keeper_pid, relay)

    # ------------------------------------------------------------------ time limits

    def enforce_time_limits(self, grace: float) -> None:
        """Answer each task overdue by ``grace`` with TaskTimeLimitError and kill its worker."""
        now = time.monotonic()
        for worker in self.workers:
            running = worker.running
            if running is None or now < running.deadline(grace) or worker.killed:
                continue
            message = (f"task {running.task_id} (do_{running.tag}) ran longer than its time limit of "
                       f"{running.limit:g} s and did not stop; its slave process {worker.pid} was killed "
                       f"and replaced")
            log.warning("%s", message)
            worker.kill(signal.SIGSTOP)   # no late answer of its own from now on
            worker.killed = message
            worker.running = None
            connection = self._connection()
            if worker.process_id is not None and connection is not None:
                answer = Answer(running.task_id, running.assignment, False,
                                dumps_exception(TaskTimeLimitError(message)),
                                f"TaskTimeLimitError: {message}\n", now - running.started)
                try:
                    connection.exchange(worker.process_id, [answer], 0, 0.0)
                    # Before the kill: its dropped connection then costs nothing (its queued
                    # tasks run elsewhere, unblamed).
                    connection.call("unregister", worker.process_id, timeout=30.0)
                except ScientificMSError as error:
                    self._post(("lost", str(error)))
            worker.kill(signal.SIGKILL)

    # ------------------------------------------------------------------ ends

    def end_declared_dead(self, process_ids: Iterable[int]) -> None:
        """The master declared these workers dead (no heartbeat in time). A stopped one is
        killed, with whatever its handler started, so that another starts in its place and
        no stopped worker holds a slot or comes back late (its tasks run elsewhere already).
        One still running (a cut link that healed, a late beat) finds out at its next call
        and joins again under a new id: no beats for it until it says so. One that said bye
        before it unregistered is leaving, not dead."""
        ids = set(process_ids)
        for worker in self.workers:
            if worker.process_id not in ids or worker.killed:
                continue
            if not worker.conn.closed:
                self.read(worker)   # a "bye" said before it unregistered
            if worker.leaving:
                continue
            if worker.has_ended():
                # It died (a zombie reads as not runnable), and its master saw the connection drop
                # before we saw the death: a death, not a stop. replace_ended() reports it and
                # replaces it, or not, as for any death (never a lone slave its user started).
                worker.process_id = None   # declared dead already: nothing to report as lost
                continue
            if worker.runnable():
                worker.process_id = None
                continue
            message = (f"the master of {self.label!r} declared slave process {worker.pid} dead (no "
                       f"heartbeat in time) while it was stopped; it was killed and replaced")
            log.warning("%s", message)
            worker.killed = message
            worker.running = None
            worker.process_id = None   # declared dead already: nothing to unregister
            worker.kill(signal.SIGKILL)

    def forget_registrations(self) -> None:
        """The master is gone: no worker is registered anywhere (until it says hello again)."""
        for worker in self.workers:
            worker.process_id = None

    def tell(self, message: tuple) -> None:
        """Send ``message`` to every worker (``worker_link.py`` lists what a keeper says)."""
        for worker in self.workers:
            with contextlib.suppress(OSError):
                worker.conn.send(message)

    def replace_ended(self) -> None:
        """Forget the workers that ended; report deaths; fork replacements."""
        for worker in list(self.workers):
            if not self._has_gone(worker):
                continue
            self.workers.remove(worker)
            worker.close()
            if self.relay is not None:
                self.relay.drop(worker.pid)
            if worker.leaving:
                continue
            if self.stopping is not None:
                if worker.process_id is not None and self.stopping not in SILENT_STOPS and not worker.killed:
                    self._call("unregister", worker.process_id)
                continue
            if worker.killed:
                if not self.lone or self.replace_killed:
                    self.fork(worker.restarts_left)
                continue
            if worker.child:
                # It died on its own: end what its handler started in its process group too (an
                # MPI program's launcher, whose ranks die with it), or that would run on, orphaned,
                # on cores its task no longer holds. (Its PID cannot be another group's while
                # that group has members.)
                worker.kill(signal.SIGKILL)
            running = worker.running
            if worker.process_id is not None:
                self._call("lost", worker.process_id, f"its process {worker.pid} ended ({worker.cause()})",
                           [running.assignment] if running else [])
            if self.lone and not worker.child:
                # The process its user started: whoever started it sees its end, and may start another.
                log.info("the slave process %d of %r ended (%s)", worker.pid, self.label, worker.cause())
                continue
            # Ours (-n N, or the replacement a lone keeper forked): nobody else can replace it.
            if worker.restarts_left <= 0:
                log.error("worker process %d died (%s); restart limit of %d reached, not replacing it",
                          worker.pid, worker.cause(), self.max_restarts)
                if not self.workers:
                    self.exit_code = 1
                continue
            log.warning("worker process %d died (%s)%s; forking a replacement", worker.pid, worker.cause(),
                        f" while running task {running.task_id}" if running else "")
            self.fork(worker.restarts_left - 1)

    def _has_gone(self, worker: Worker) -> bool:
        if not worker.ended and not worker.conn.closed:
            return False
        if not worker.conn.closed:   # what it said before it ended (a "bye") counts
            self.read(worker)
        if worker.leaving and worker.conn.closed and not worker.child:
            return True   # a lone slave that said bye: it goes on with its script, without us
        return worker.ended or (worker.pidfd is None and worker.has_ended())

    # ------------------------------------------------------------------ stopping

    def stop(self, reason: str, grace: float, code: int) -> None:
        """Stop (the first reason counts): workers get ``grace`` seconds to end on their own."""
        if self.stopping is None:
            self.stopping = reason
            self.stop_deadline = time.monotonic() + grace
            self.exit_code = code

    def wind_down(self) -> None:
        """Past the stop deadline: kill the workers still there."""
        if self.stopping is None or time.monotonic() < self.stop_deadline:
            return
        for worker in self.workers:
            if worker.killed or worker.ended or (worker.leaving and worker.conn.closed):
                continue   # (one that said bye and closed its link is about to end on its own)
            log.warning("%r of %r still runs (%s); ending it", worker, self.label, self.stopping)
            if worker.process_id is not None and self.stopping not in SILENT_STOPS:
                self._call("unregister", worker.process_id)
            worker.killed = self.stopping
            worker.kill(signal.SIGKILL)

    def pass_signal(self, signum: int) -> None:
        """The keeper got SIGTERM or SIGINT: pass it on, and give the workers the grace to leave."""
        interrupted = signum == signal.SIGINT
        if self.stopping is None:
            log.warning("keeper of %r %s: its workers leave after their running tasks (within %.0f s)",
                        self.label, "interrupted" if interrupted else "got SIGTERM", settings.term_grace())
        for worker in self.workers:
            worker.send(signum)
        self.stop("interrupted" if interrupted else "sigterm", settings.term_grace() + 2.0,
                  130 if interrupted else 0)
