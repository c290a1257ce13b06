"""One worker as its keeper sees it (``keeper.py``): its process, its link, its task.

The keeper learns that a worker ended from a pidfd (``os.pidfd_open``,
Linux), readable the moment the process exits, whatever its children still
hold open; elsewhere from the link's end of file. It ends a worker with
everything its handler started: the worker's process group when the worker
has one of its own (the keeper forked it), else the worker and its
descendants (a lone slave, which keeps the group its shell or launcher gave
it, so that killing it never hits a pipeline partner).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from multiprocessing.connection import Connection
from typing import List, NamedTuple, Optional, Tuple

import psutil

from ..machine import ResourceSampler
from .worker_link import Bye, End, Hello, Start, decode

#: Process states in which a worker cannot be vouched for (it would not answer).
NOT_RUNNING = frozenset({psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP,
                         psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD})


class Running(NamedTuple):
    """The task with a time limit that a worker runs, as its keeper times it."""
    task_id: str
    assignment: int
    tag: str
    limit: float      # seconds
    started: float    # time.monotonic() when the keeper heard of it

    def deadline(self, grace: float) -> float:
        """When it is overdue by ``grace`` (monotonic)."""
        return self.started + self.limit + grace


class Worker:
    """A worker process: ``child`` if the keeper forked it (and must reap it)."""

    def __init__(self, pid: int, conn: Connection, child: bool, restarts_left: int):
        self.pid = pid
        self.conn = conn
        self.child = child
        self.restarts_left = restarts_left
        self.pidfd: Optional[int] = None
        if hasattr(os, "pidfd_open"):
            with contextlib.suppress(OSError):
                self.pidfd = os.pidfd_open(pid)
        self.process_id: Optional[int] = None    # its id at the master, once it said hello
        self.period: Optional[float] = None      # its watchdog period
        self.address: Optional[Tuple[str, int, bytes]] = None
        self.running: Optional[Running] = None   # its task, if that has a time limit
        self.leaving = False                     # it said bye: its end is not a death
        self.killed: Optional[str] = None        # why the keeper killed it
        self.ended = False
        self.exit_code: Optional[int] = None
        self._sampler: Optional[ResourceSampler] = None

    def __repr__(self) -> str:
        return f"worker {self.process_id} (PID {self.pid})"

    # ------------------------------------------------------------------ state

    def deadline(self, grace: float) -> Optional[float]:
        """When its running task is overdue (monotonic), or None."""
        return None if self.running is None else self.running.deadline(grace)

    def receive(self) -> List[Hello]:
        """Note what the worker said (all of it, without waiting); returns its hellos, which
        the keeper follows to the master. At the end of file the link closes."""
        hellos: List[Hello] = []
        try:
            while self.conn.poll():
                message = decode(self.conn.recv())
                if isinstance(message, Start):
                    self.running = Running(*message, time.monotonic())
                elif isinstance(message, End):
                    self.running = None
                elif isinstance(message, Hello):
                    self.process_id, self.period, self.address = \
                        message.process_id, message.watchdog_period, message.address
                    hellos.append(message)
                elif isinstance(message, Bye):
                    self.leaving = True
        except (EOFError, OSError):
            self.conn.close()   # it ended, or is ending: its pidfd (or the next look) says so
        return hellos

    def runnable(self) -> bool:
        """Alive and not stopped: running, sleeping, or busy in C code."""
        try:
            return psutil.Process(self.pid).status() not in NOT_RUNNING
        except psutil.Error:
            return False

    def stats(self) -> dict:
        if self._sampler is None:
            self._sampler = ResourceSampler(self.pid)
        return self._sampler.sample()

    def has_ended(self) -> bool:
        """Whether the process is gone (a child is reaped here)."""
        if self.ended:
            return True
        if self.child:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = self.pid, 0
            if pid == 0:
                return False
            self.exit_code = os.waitstatus_to_exitcode(status)
        elif psutil.pid_exists(self.pid):
            try:
                if psutil.Process(self.pid).status() != psutil.STATUS_ZOMBIE:
                    return False
            except psutil.Error:
                pass
        self.ended = True
        return True

    def cause(self) -> str:
        code = self.exit_code
        if code is None:
            return "it ended"
        return f"killed by signal {-code}" if code < 0 else f"exit status {code}"

    # ------------------------------------------------------------------ ending it

    def send(self, signum: int) -> None:
        """Send ``signum`` to the worker alone."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, signum)

    def kill(self, signum: int = signal.SIGKILL) -> None:
        """Send ``signum`` to the worker and to everything its handler started."""
        if self.child:   # a process group of its own (set right after the fork)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signum)
            return
        try:
            descendants = psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            descendants = []
        self.send(signum)
        for process in descendants:
            if process.pid == os.getpid():
                continue   # a lone slave's keeper is its child
            with contextlib.suppress(psutil.Error):
                process.send_signal(signum)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the process to end; True if it did."""
        deadline = time.monotonic() + timeout
        pause = 0.005
        while not self.has_ended():
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)   # polling a process that is about to end
            pause = min(0.05, 2 * pause)
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.close()
        if self.pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self.pidfd)
            self.pidfd = None
