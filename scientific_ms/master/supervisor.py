"""Slave processes that the master starts on its own machine, replaced when they die.

How each one is started, spawned or forked from a warm template, is the
``starter``'s business (``forkserver.py``); the supervisor sees a process
with ``pid``, ``wait``, ``poll`` and ``send_signal`` either way.

Each child has a thread blocked in ``wait()`` (no polling). A child that
dies while the job runs (killed, crashed, ``os._exit`` in a handler) is
replaced, at most ``max_restarts`` times per slot, so a job keeps its
workers without looping forever on a slave that cannot start. A child that
said it leaves on purpose (``terminationTest``; see ``wire/leaving.py``) is not
replaced; exit status 0 alone proves nothing, since a handler may call
``sys.exit(0)`` or ``os._exit(0)``. Nor is one that ends once the job is over.

Each child runs in its own session: Ctrl-C in the master's terminal reaches
the master alone, whose shutdown then ends the slaves, instead of killing
them all at once and having them replaced while the master shuts down.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..wire.leaving import LEFT, REFUSED, LeavingChannel
from .forkserver import spawn

log = logging.getLogger(__name__)


class SlaveSupervisor:
    """Starts ``command`` as slave processes and keeps them running until ``stop()``."""

    def __init__(self, command: Sequence[str], env: Dict[str, str], cwd: str, max_restarts: int,
                 job_over: Callable[[], bool] = lambda: False, starter: Optional[Callable[..., Any]] = None):
        self._job_over = job_over   # once true, children that end are not replaced
        # (command, env, cwd, pass_fds) -> a Popen, or a ForkedChild (forkserver.py)
        self._starter = starter or spawn
        self._command = list(command)
        self._env = env
        self._cwd = cwd
        self.max_restarts = max_restarts
        self._lock = threading.Lock()
        self._stopping = False
        self._children: List[Any] = []   # Popen or ForkedChild
        self._threads: List[threading.Thread] = []
        self.restarts = 0
        self.refused = 0   # children whose script refused to serve (never replaced)

    def launch(self, count: int) -> None:
        # Every child first, then the threads that watch them: a thread's start waits for a
        # core, which the children starting up keep busy.
        threads = [self._start(restarts_left=self.max_restarts, watch=False) for _ in range(count)]
        for thread in threads:
            if thread is not None:
                thread.start()

    @property
    def pids(self) -> List[int]:
        with self._lock:
            return [child.pid for child in self._children if child.returncode is None]

    def _start(self, restarts_left: int, watch: bool = True) -> Optional[threading.Thread]:
        """Start a child and the thread that watches it (``watch``; else the thread is returned
        unstarted, for the caller to start)."""
        with self._lock:
            if self._stopping:
                return None
            channel = LeavingChannel()
            try:
                child = self._starter(self._command, channel.child_environment(self._env), self._cwd,
                                      channel.pass_fds)
            except BaseException:
                channel.close()
                raise
            channel.started()
            self._children.append(child)
            thread = threading.Thread(target=self._supervise, args=(child, restarts_left, channel),
                                      name=f"scientific_ms-supervise-{child.pid}", daemon=True)
            self._threads.append(thread)
        log.info("started slave process %d", child.pid)
        if watch:
            thread.start()
        return thread

    def _supervise(self, child, restarts_left: int, channel: LeavingChannel) -> None:
        code = child.wait()
        outcome = channel.outcome()
        with self._lock:
            if self._stopping or self._job_over():
                return
        if outcome == REFUSED:
            with self._lock:
                self.refused += 1
                alive = any(other.returncode is None for other in self._children)
            log.error("slave process %d refused to serve (its message above says why);\n"
                      "  not replacing it: another would refuse too%s", child.pid,
                      "" if alive else ".\n  No slave of this master's own is left: fix the script and run it\n"
                      "  again, or start slaves by hand ('task_manager slave LABEL')")
            return
        if outcome == LEFT:
            log.info("slave process %d left (exit status %d); not replacing it", child.pid, code)
            return
        cause = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        if code == 0:
            cause += " without leaving on purpose: a handler ended the process?"
        if restarts_left <= 0:
            log.error("slave process %d died (%s); restart limit of %d reached, not replacing it",
                      child.pid, cause, self.max_restarts)
            return
        log.warning("slave process %d died (%s); starting a replacement", child.pid, cause)
        with self._lock:
            self.restarts += 1
        self._start(restarts_left - 1)

    def stop(self, timeout: float) -> None:
        """Stop replacing; give the children ``timeout`` s to exit, then terminate them."""
        with self._lock:
            self._stopping = True
            children = list(self._children)
        stop_processes(children, timeout, interrupt=False)
        for thread in self._threads:
            if thread.ident is not None:   # (one that launch() has not started yet never runs a restart)
                thread.join(timeout=1.0)


def stop_processes(children: List[Any], grace: float, interrupt: bool) -> None:
    """Let ``children`` exit within ``grace`` s (sent SIGINT first if ``interrupt``),
    then SIGTERM the stragglers, then SIGKILL them; every child is reaped."""
    steps = ((signal.SIGINT if interrupt else None, grace), (signal.SIGTERM, 2.0), (signal.SIGKILL, None))
    for sig, timeout in steps:
        alive = [child for child in children if child.poll() is None]
        if not alive:
            return
        if sig in (signal.SIGTERM, signal.SIGKILL):
            log.warning("%d slave process(es) still running; sending %s", len(alive), sig.name)
        if sig is not None:
            for child in alive:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(sig)
        deadline = None if timeout is None else time.monotonic() + timeout
        for child in alive:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(None if deadline is None else max(0.05, deadline - time.monotonic()))
