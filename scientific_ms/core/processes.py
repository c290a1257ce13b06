"""The process side of the task manager: registration, heartbeats, liveness, losses.

:class:`ProcessSide` is a base of :class:`~scientific_ms.manager.TaskManager`
and shares its lock and state (``_lock``, ``_registry``, ``_scheduler``,
``_waiters``, the conditions, ``counters``); it calls the manager's
``_requeue`` and ``_fail`` to settle what a lost process held. The same
lock rules hold: public methods take the lock once, ``_`` methods expect it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, FrozenSet, Iterable, List, Optional, Tuple

from ..errors import ConfigurationError, SlaveLostError, TaskTimeLimitError, UnknownProcessError
from ..slave.departure import REASONS
from .registry import ProcessRecord
from .tasks import TaskState

log = logging.getLogger("scientific_ms.manager")   # one logger for the whole manager

#: The slave interrupts a handler at its time limit; the master reports the
#: task itself only this much later, if the slave has not answered by then.
TIME_LIMIT_GRACE = 5.0


class ProcessSide:
    """Registered processes: who is alive, and what their loss costs their tasks."""

    def register_process(self, role: str = "slave", info: Optional[dict] = None,
                         tags: Optional[Iterable[str]] = None,
                         watchdog_period: Optional[float] = None) -> int:
        """Register a process; returns its id. ``tags``: the tasks it can run."""
        if watchdog_period is not None and watchdog_period <= 0:
            raise ConfigurationError(f"watchdog_period must be > 0 or None, got {watchdog_period!r}")
        with self._lock:
            self._check_running()
            tagset = frozenset(tags) if tags is not None else None
            proc = self._registry.add(role, dict(info or {}), tagset, watchdog_period, self._clock())
            if proc.is_slave:
                self._slaves_changed.notify_all()
            log.debug("registered %s %s, tags %s", role, proc.process_id, sorted(tagset or ()))
            return proc.process_id

    def unregister_process(self, process_id: int, abandoned: Iterable[int] = (),
                           reason: Optional[str] = None) -> None:
        """A process leaves cleanly; tasks it still holds go back to the queue front.

        ``abandoned``: assignments it had started and gives up as it leaves
        (a handler ended the slave). Each counts as a loss of its task, as a
        death would; the tasks it holds but never started are returned without blame.
        ``reason``: why a slave leaves on its own (``departure.IDLE`` or
        ``SIGTERM``); counted as ``left_idle`` / ``left_sigterm``, others ignored.
        """
        with self._lock:
            if self._remove_process(process_id, reason=None, abandoned=frozenset(abandoned)) and \
                    reason in REASONS:
                self.counters[f"left_{reason}"] += 1

    def process_lost(self, process_id: int, reason: str, running: Iterable[int] = ()) -> bool:
        """Declare a process dead (connection dropped, missed heartbeats).

        Its running tasks go back to the front of the queue, or fail once they
        have lost ``max_slave_losses`` slaves. ``running``: the assignments it
        had started, when known (its node agent saw it die): only those are
        blamed. Returns False if it was unknown.
        """
        with self._lock:
            return self._remove_process(process_id, reason=reason, abandoned=frozenset(running))

    def heartbeat(self, process_id: int, stats: Optional[dict] = None) -> bool:
        """Record a sign of life; False if the process is unknown (declared dead)."""
        return not self.heartbeats([(process_id, stats or {})])

    def check_liveness(self, expected_interval: Optional[float] = None) -> List[int]:
        """Declare dead every process that missed too many heartbeats; returns their ids.

        ``expected_interval``: how often the caller runs this; a late run
        means the master itself stalled, which is not held against slaves
        (see :meth:`Registry.silent`).
        """
        with self._lock:
            silent = self._registry.silent(self._clock(), self.missed_heartbeats, expected_interval)
            for proc, reason in silent:
                self._remove_process(proc.process_id, reason=reason)
            return [proc.process_id for proc, _ in silent]

    def check_time_limits(self) -> List[str]:
        """Report every task that ran ``TIME_LIMIT_GRACE`` s past its limit; returns their ids.

        Normally the slave interrupts the handler at the limit and answers
        first; this catches slaves that cannot (a handler stuck in C code, a
        hung slave). The slave stays registered; a later answer is dropped.
        """
        with self._lock:
            overdue = self._registry.overdue(self._clock(), TIME_LIMIT_GRACE)
            for proc, task in overdue:
                self._fail(task, TaskTimeLimitError(
                    f"task {task.task_id} ran longer than its time limit of {task.time_limit:g} s "
                    f"on {proc.describe()}, which did not stop it"))
            if overdue:
                self._answer_ready.notify_all()
            return [task.task_id for _, task in overdue]

    def wait_for_slaves(self, count: int, timeout: Optional[float] = None) -> bool:
        """Block until at least ``count`` slaves are registered; False on timeout."""
        with self._lock:
            return self._wait_until(self._slaves_changed, lambda: self._registry.slave_count >= count, timeout)

    def wait_until_no_slaves(self, timeout: float) -> bool:
        """Block until every slave has left; False on timeout."""
        with self._lock:
            return self._wait_until(self._slaves_changed, lambda: self._registry.slave_count == 0, timeout,
                                    check_terminated=False)

    def _wait_until(self, condition: threading.Condition, done: Callable[[], bool], timeout: Optional[float],
                    check_terminated: bool = True) -> bool:
        """Wait on ``condition`` (under the lock) until ``done()``; False after ``timeout`` seconds.

        ``check_terminated``: raise TaskManagerTermination once terminated.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done():
            if check_terminated:
                self._check_running()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            condition.wait(remaining)
        return True

    def heartbeats(self, beats: Iterable[Tuple[int, Optional[dict]]]) -> List[int]:
        """Signs of life of several processes (a node agent's slaves); returns the unknown ids.

        ``beats``: (process_id, stats) pairs; stats None checks the id
        without counting a sign of life (a stopped slave behind an agent).
        """
        unknown = []
        with self._lock:
            now = self._clock()
            for process_id, stats in beats:
                proc = self._registry.get(process_id)
                if proc is None:
                    unknown.append(process_id)
                elif stats is not None:
                    proc.last_seen = now
                    if stats:
                        proc.stats = dict(stats)
        return unknown

    def wait_for_news(self, process_id: int, timeout: float) -> Tuple[bool, bool]:
        """Block until the manager terminates, tasks of this process are revoked, or
        ``timeout`` seconds pass; returns (terminated, revoked)."""
        return self.wait_for_news_of([process_id], timeout)

    def wait_for_news_of(self, process_ids: Iterable[int], timeout: float) -> Tuple[bool, bool]:
        """:meth:`wait_for_news` for several processes (a node agent's): returns
        when the manager terminates, or tasks of any of them are revoked, or any
        of them leaves, or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        with self._lock:
            procs = [proc for proc in map(self._registry.get, process_ids) if proc is not None]
            news = procs[0].news if len(procs) == 1 and procs[0].news is not None else threading.Condition(self._lock)
            for proc in procs:
                proc.news = news
            while not self._terminated and procs and not any(proc.revoked for proc in procs):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or any(self._registry.get(proc.process_id) is not proc for proc in procs):
                    break
                news.wait(remaining)
            return self._terminated, any(proc.revoked for proc in procs)

    def take_revoked(self, process_id: int) -> List[int]:
        """Assignments of this process that another slave took over: the slave must not start them."""
        proc = self._registry.get(process_id)
        if proc is None or not proc.revoked:   # the usual case, read without the lock: a
            return []                           # revocation made meanwhile comes next time
        with self._lock:
            revoked, proc.revoked = proc.revoked, []
            return revoked

    @property
    def slave_count(self) -> int:
        """How many slaves are registered now."""
        return self._registry.slave_count

    def longest_silence(self) -> float:
        """Seconds since the slave heard from least recently last gave a sign of life."""
        with self._lock:
            now = self._clock()
            return max((now - proc.last_seen for proc in self._registry if proc.is_slave), default=0.0)

    def slaves_waiting_for_work(self) -> int:
        """How many slave threads are blocked in :meth:`take_tasks` right now."""
        with self._lock:
            return len(self._waiters)

    def _live_process(self, process_id: int) -> ProcessRecord:
        self._check_running()
        proc = self._registry.get(process_id)
        if proc is None:
            raise UnknownProcessError(
                f"process {process_id} is not registered (it left, or was declared dead)")
        return proc

    def _remove_process(self, process_id: int, reason: Optional[str],
                        abandoned: FrozenSet[int] = frozenset()) -> bool:
        proc = self._registry.remove(process_id)
        if proc is None:
            return False
        held = [task for assignment, task in proc.running.items()
                if task.state is TaskState.RUNNING and task.assignment == assignment]
        proc.running.clear()
        if proc.news is not None:
            proc.news.notify_all()
        given_up = [task.task_id for task in held if task.assignment in abandoned] if reason is None else []
        decision = self._scheduler.on_loss(proc, held, died=reason is not None, abandoned=abandoned)
        for task in reversed(decision.requeue):   # each goes to the front: keep their order
            self._requeue(task)
        for task in decision.fail:
            self._fail(task, SlaveLostError(
                f"task {task.task_id} lost its slave {len(task.lost_slaves)} times "
                f"({'; '.join(task.lost_slaves)}); giving up on it"))
        self._waiters.wake_process(process_id)
        if decision.fail:
            self._answer_ready.notify_all()
        self._slaves_changed.notify_all()
        for task_id in given_up:
            log.warning("%s left while running task %s; counted as a loss of that task",
                        proc.describe(), task_id)
        if reason is None or self._terminated:
            log.debug("%s left (%s); %d task(s) returned to the queue",
                      proc.describe(), reason or "goodbye", len(decision.requeue))
        else:
            self.counters["processes_lost"] += 1
            log.warning("%s lost: %s; %d task(s) rescheduled, %d failed after too many losses",
                        proc.describe(), reason, len(decision.requeue), len(decision.fail))
        return True
