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
from typing import Optional, Tuple

import psutil

from ..machine import ResourceSampler

#: Process states in which a worker cannot be vouched for (it would not answer).
NOT_RUNNING = frozenset({psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP,
                         psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD})


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
        self.running: Optional[tuple] = None     # (task_id, assignment, tag, limit, started) with a limit
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
        if self.running is None:
            return None
        return self.running[4] + self.running[3] + grace

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
