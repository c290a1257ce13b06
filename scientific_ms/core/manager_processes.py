"""The task manager's calls about processes: registration, departures, losses,
heartbeats, liveness, time limits, and the waits for slaves and for news.

:class:`ProcessCalls` is a base class of
:class:`~scientific_ms.core.manager.TaskManager` and keeps no state of its
own: each public method takes the manager's lock once and calls the process
side (``processes.py``) with it held; what a departure or an overrun costs
it hands to the task traffic (``traffic.py``), which requeues or fails the
tasks. The lock rules are ``manager.py``'s.
"""

from __future__ import annotations

import threading
from typing import Iterable, List, Optional, Tuple

from .processes import Processes
from .traffic import TaskTraffic


class ProcessCalls:
    """The processes' half of the task manager's public methods (see :class:`TaskManager`)."""

    # The manager's parts, made by TaskManager.__init__.
    _lock: threading.Lock
    _processes: Processes
    _traffic: TaskTraffic

    def register_process(self, role: str = "slave", info: Optional[dict] = None,
                         tags: Optional[Iterable[str]] = None,
                         watchdog_period: Optional[float] = None) -> int:
        """Register a process; returns its id. ``tags``: the tasks it can run."""
        with self._lock:
            return self._processes.register(role, info, tags, watchdog_period)

    def unregister_process(self, process_id: int, abandoned: Iterable[int] = (),
                           reason: Optional[str] = None) -> None:
        """A process leaves cleanly; tasks it still holds go back to the queue front.

        ``abandoned``: assignments it had started and gives up as it leaves (a handler ended the
        slave). Each counts as a loss of its task, as a death would; the tasks it holds but never
        started are returned without blame. ``reason``: why a slave leaves on its own
        (``protocol.LEAVE_REASONS``: idle, sigterm); counted as ``left_idle`` / ``left_sigterm``, others ignored.
        """
        with self._lock:
            self._traffic.take_back(self._processes.leave(process_id, frozenset(abandoned), reason))

    def process_lost(self, process_id: int, reason: str, running: Iterable[int] = ()) -> bool:
        """Declare a process dead (connection dropped, missed heartbeats).

        Its running tasks go back to the front of the queue, or fail once they have lost
        ``max_slave_losses`` slaves. ``running``: the assignments it had started, when known (its
        keeper saw it die): only those are blamed. Returns False if it was unknown.
        """
        with self._lock:
            return self._traffic.take_back(self._processes.remove(process_id, reason, frozenset(running)))

    def heartbeat(self, process_id: int, stats: Optional[dict] = None) -> bool:
        """Record a sign of life; False if the process is unknown (declared dead)."""
        return not self.heartbeats([(process_id, stats or {})])

    def heartbeats(self, beats: Iterable[Tuple[int, Optional[dict]]]) -> List[int]:
        """Signs of life of several processes (a keeper's workers); returns the unknown ids.

        ``beats``: (process_id, stats) pairs; stats None checks the id without counting a sign of
        life (a stopped worker of a keeper).
        """
        with self._lock:
            return self._processes.heartbeats(beats)

    def check_liveness(self, expected_interval: Optional[float] = None) -> List[int]:
        """Declare dead every process that missed too many heartbeats; returns their ids.

        ``expected_interval``: how often the caller runs this; a late run means the master itself
        stalled, which is not held against slaves (see :meth:`Registry.silent`).
        """
        with self._lock:
            silent = self._processes.silent(expected_interval)
            for process_id, reason in silent:
                self._traffic.take_back(self._processes.remove(process_id, reason))
            return [process_id for process_id, _ in silent]

    def check_time_limits(self) -> List[str]:
        """Report every task that ran ``TIME_LIMIT_GRACE`` s past its limit; returns their ids.

        Normally the slave interrupts the handler at the limit and answers first; this catches
        slaves that cannot and have no keeper to end the task for them (a handler stuck in C code,
        a hung slave). The slave stays registered; a later answer is dropped.
        """
        with self._lock:
            overdue = self._processes.overdue()
            self._traffic.fail_all(overdue)
            return [task.task_id for task, _ in overdue]

    def wait_for_slaves(self, count: int, timeout: Optional[float] = None) -> bool:
        """Block until at least ``count`` slaves are registered; False on timeout."""
        with self._lock:
            return self._processes.wait_for_slaves(lambda slaves: slaves >= count, timeout)

    def wait_until_no_slaves(self, timeout: float) -> bool:
        """Block until every slave has left; False on timeout."""
        with self._lock:
            return self._processes.wait_for_slaves(lambda slaves: slaves == 0, timeout,
                                                   check_terminated=False)

    def wait_for_news(self, process_id: int, timeout: float) -> Tuple[bool, bool]:
        """Block until the manager terminates, tasks of this process are revoked, or
        ``timeout`` seconds pass; returns (terminated, revoked)."""
        return self.wait_for_news_of([process_id], timeout)

    def wait_for_news_of(self, process_ids: Iterable[int], timeout: float) -> Tuple[bool, bool]:
        """:meth:`wait_for_news` for several processes (a keeper's workers): returns when the manager
        terminates, or tasks of any of them are revoked, or any of them leaves, or ``timeout`` passes."""
        with self._lock:
            return self._processes.wait_for_news(process_ids, timeout)

    def take_revoked(self, process_id: int) -> List[int]:
        """Assignments of this process that another slave took over: the slave must not start them."""
        if not self._processes.has_revoked(process_id):   # the usual case, without the lock
            return []
        with self._lock:
            return self._processes.take_revoked(process_id)

    @property
    def slave_count(self) -> int:
        """How many slaves are registered now."""
        return self._processes.slave_count

    def longest_silence(self) -> float:
        """Seconds since the slave heard from least recently last gave a sign of life."""
        with self._lock:
            return self._processes.longest_silence()

    def slaves_waiting_for_work(self) -> int:
        """How many slave threads are blocked in :meth:`take_tasks` right now."""
        with self._lock:
            return self._traffic.waiting_threads()
