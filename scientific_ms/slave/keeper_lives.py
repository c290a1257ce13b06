"""The lives of a keeper's workers (``keeper.py``): forking, timing, replacing, ending them.

:class:`WorkerLives` is the half of :class:`~scientific_ms.slave.keeper.Keeper`
that acts on the worker processes; the other half talks to the master.
Everything here runs on the keeper's main thread, which is the only
thread that forks: a worker is forked from it, never from the watch thread.
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
from typing import TYPE_CHECKING, List, Optional

from .. import settings
from ..errors import ScientificMSError, TaskTimeLimitError
from ..wire.client import MasterConnection
from ..wire.payload import dumps_exception
from ..wire.protocol import Answer
from .keeper_workers import Worker
from .worker_link import WorkerLink, die_with

if TYPE_CHECKING:
    from .keeper_watch import KeeperWatch

log = logging.getLogger(__name__)

#: Why a keeper stops without saying goodbye for its workers: the master is over or gone.
SILENT_STOPS = ("terminated", "lost")


class BecameWorker(Exception):
    """Raised in a process just forked from the keeper: it unwinds to ``Keeper.run``."""

    def __init__(self, link: WorkerLink):
        super().__init__("a worker")
        self.link = link


def disown(connection: Optional[MasterConnection]) -> None:
    """In a forked child: never shut the parent's connection down (a shutdown
    acts on the socket both processes share; a close only on our copy)."""
    proxy = getattr(connection, "_proxy", None)
    pyro_connection = getattr(proxy, "_pyroConnection", None)
    if pyro_connection is not None:
        pyro_connection.keep_open = True


def flush_output() -> None:
    """Before a fork: what is buffered is printed once, not once per process."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


class WorkerLives:
    """Forks, times, replaces and ends the workers in ``self.workers``.

    Expects of the class it is mixed into: ``label``, ``lone``,
    ``replace_killed``, ``workers``, ``connection``, ``keeper_id``,
    ``stopping``, ``exit_code``, ``_stop_deadline``, ``_watch``, ``_call``,
    ``_post`` and ``_close_wake``.
    """

    label: str
    lone: bool
    replace_killed: bool
    workers: List[Worker]
    connection: Optional[MasterConnection]
    keeper_id: Optional[int]
    stopping: Optional[str]
    exit_code: int
    _stop_deadline: float
    _watch: Optional[KeeperWatch]
    _signalled: Optional[int]

    def _call(self, method: str, *args) -> object:
        raise NotImplementedError

    def _post(self, event: tuple) -> None:
        raise NotImplementedError

    def wake(self) -> None:
        raise NotImplementedError

    def _close_wake(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ forking

    def _fork_worker(self, restarts_left: int) -> None:
        """Fork a worker; in the child this raises BecameWorker (it serves, never returns here)."""
        ours, theirs = socket.socketpair()
        keeper_pid = os.getpid()
        flush_output()
        pid = os.fork()
        if pid == 0:
            ours.close()
            self._become_worker(Connection(theirs.detach()), keeper_pid)
        theirs.close()
        self.workers.append(Worker(pid, Connection(ours.detach()), True, restarts_left))
        log.info("keeper of %r forked worker process %d", self.label, pid)

    def _become_worker(self, conn: Connection, keeper_pid: int) -> None:
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
        self._close_wake()
        disown(self.connection)
        if self._watch is not None:
            disown(self._watch.connection)
        raise BecameWorker(WorkerLink(conn, keeper_pid, keeper_id=None if self.lone else self.keeper_id))

    # ------------------------------------------------------------------ time limits

    def _enforce_time_limits(self, grace: float) -> None:
        """Answer each task overdue by ``grace`` with TaskTimeLimitError and kill its worker."""
        now = time.monotonic()
        for worker in self.workers:
            deadline = worker.deadline(grace)
            if deadline is None or now < deadline or worker.killed:
                continue
            task_id, assignment, tag, limit, started = worker.running   # type: ignore[misc]
            message = (f"task {task_id} (do_{tag}) ran longer than its time limit of {limit:g} s and did "
                       f"not stop; its slave process {worker.pid} was killed and replaced")
            log.warning("%s", message)
            worker.kill(signal.SIGSTOP)   # no late answer of its own from now on
            worker.killed = message
            worker.running = None
            if worker.process_id is not None and self.connection is not None:
                answer = Answer(task_id, assignment, False, dumps_exception(TaskTimeLimitError(message)),
                                f"TaskTimeLimitError: {message}\n", now - started)
                try:
                    self.connection.exchange(worker.process_id, [answer], 0, 0.0)
                    # Before the kill: its dropped connection then costs nothing (its queued
                    # tasks run elsewhere, unblamed).
                    self.connection.call("unregister", worker.process_id, timeout=30.0)
                except ScientificMSError as error:
                    self._post(("lost", str(error)))
            worker.kill(signal.SIGKILL)

    # ------------------------------------------------------------------ ends

    def _replace_ended(self, max_restarts: int) -> None:
        """Forget the workers that ended; report deaths; fork replacements."""
        for worker in list(self.workers):
            if not self._has_gone(worker):
                continue
            self.workers.remove(worker)
            worker.close()
            if worker.leaving:
                continue
            if self.stopping is not None:
                if worker.process_id is not None and self.stopping not in SILENT_STOPS and not worker.killed:
                    self._call("unregister", worker.process_id)
                continue
            if worker.killed:
                if not self.lone or self.replace_killed:
                    self._fork_worker(worker.restarts_left)
                continue
            running = worker.running
            if worker.process_id is not None:
                self._call("lost", worker.process_id, f"its process {worker.pid} ended ({worker.cause()})",
                           [running[1]] if running else [])
            if self.lone and not worker.child:
                # The process its user started: whoever started it sees its end, and may start another.
                log.info("the slave process %d of %r ended (%s)", worker.pid, self.label, worker.cause())
                continue
            # Ours (-n N, or the replacement a lone keeper forked): nobody else can replace it.
            if worker.restarts_left <= 0:
                log.error("worker process %d died (%s); restart limit of %d reached, not replacing it",
                          worker.pid, worker.cause(), max_restarts)
                if not self.workers:
                    self.exit_code = 1
                continue
            log.warning("worker process %d died (%s)%s; forking a replacement", worker.pid, worker.cause(),
                        f" while running task {running[0]}" if running else "")
            self._fork_worker(worker.restarts_left - 1)

    def _has_gone(self, worker: Worker) -> bool:
        if not worker.ended and not worker.conn.closed:
            return False
        if not worker.conn.closed:   # what it said before it ended (a "bye") counts
            self._read(worker)
        if worker.leaving and worker.conn.closed and not worker.child:
            return True   # a lone slave that said bye: it goes on with its script, without us
        return worker.ended or (worker.pidfd is None and worker.has_ended())

    def _read(self, worker: Worker) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ stopping

    def _stop(self, reason: str, grace: float, code: int) -> None:
        """Stop (the first reason counts): workers get ``grace`` seconds to end on their own."""
        if self.stopping is None:
            self.stopping = reason
            self._stop_deadline = time.monotonic() + grace
            self.exit_code = code

    def _wind_down(self) -> None:
        """Past the stop deadline: kill the workers still there."""
        if self.stopping is None or time.monotonic() < self._stop_deadline:
            return
        for worker in self.workers:
            if worker.killed or worker.ended or (worker.leaving and worker.conn.closed):
                continue   # (one that said bye and closed its link is about to end on its own)
            log.warning("%r of %r still runs (%s); ending it", worker, self.label, self.stopping)
            if worker.process_id is not None and self.stopping not in SILENT_STOPS:
                self._call("unregister", worker.process_id)
            worker.killed = self.stopping
            worker.kill(signal.SIGKILL)

    def install_signals(self) -> None:
        """SIGTERM and SIGINT go on to the workers (a lone keeper leaves Ctrl-C to its worker,
        which has it from the terminal)."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, signal.SIG_IGN if self.lone else self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        # The main loop may be anywhere: only note it, and wake the loop.
        self._signalled = signum
        self.wake()

    def _take_signal(self, signum: int) -> None:
        interrupted = signum == signal.SIGINT
        if self.stopping is None:
            log.warning("keeper of %r %s: its workers leave after their running tasks (within %.0f s)",
                        self.label, "interrupted" if interrupted else "got SIGTERM", settings.term_grace())
        for worker in self.workers:
            worker.send(signum)
        self._stop("interrupted" if interrupted else "sigterm", settings.term_grace() + 2.0,
                   130 if interrupted else 0)
