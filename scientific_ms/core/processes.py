"""The process side of the task manager: registration, heartbeats, liveness, time limits, losses.

:class:`Processes` is a part that :class:`~scientific_ms.core.manager.TaskManager`
holds and calls with its lock held (``signals.py``): it keeps the
:class:`~scientific_ms.core.registry.Registry` and decides what a process's
departure or a task's overrun costs, but settles no task itself. It reports
those decisions, a :class:`Departure` or a list of failures, and the manager
applies them through the task traffic (``traffic.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Counter, FrozenSet, Iterable, List, NamedTuple, Optional, Tuple

from ..errors import ConfigurationError, SlaveLostError, TaskTimeLimitError, UnknownProcessError
from ..wire.protocol import LEAVE_REASONS
from .registry import ProcessRecord, Registry
from .scheduling import Scheduler
from .signals import Signals
from .tasks import RUNNING, Task

log = logging.getLogger(__name__)

#: The slave interrupts a handler at its time limit; the master reports the
#: task itself only this much later, if the slave has not answered by then.
TIME_LIMIT_GRACE = 5.0


class Departure(NamedTuple):
    """What becomes of the tasks a process held when it left (applied by the task traffic)."""
    process_id: int
    requeue: List[Task]                   # back to the front of the queue, in this order
    fail: List[Tuple[Task, Exception]]    # each lost too many slaves


class Processes:
    """Registered processes: who is alive, and what their loss costs their tasks.

    Every method expects the manager's lock held (``signals.lock``), except
    where it says otherwise.
    """

    def __init__(self, signals: Signals, registry: Registry, scheduler: Scheduler,
                 counters: Counter, clock: Callable[[], float], missed_heartbeats: float):
        self._signals = signals
        self._registry = registry
        self._scheduler = scheduler     # decides the fate of a lost slave's tasks
        self._counters = counters       # the manager's, shared with the task traffic
        self._clock = clock
        self.missed_heartbeats = missed_heartbeats

    # ------------------------------------------------------------------ coming and going

    def register(self, role: str, info: Optional[dict], tags: Optional[Iterable[str]],
                 watchdog_period: Optional[float]) -> int:
        """Register a process; returns its id. ``tags``: the tasks it can run."""
        if watchdog_period is not None and watchdog_period <= 0:
            raise ConfigurationError(f"watchdog_period must be > 0 or None, got {watchdog_period!r}")
        self._signals.check_running()
        tagset = frozenset(tags) if tags is not None else None
        proc = self._registry.add(role, dict(info or {}), tagset, watchdog_period, self._clock())
        try:
            self._scheduler.pools.join(proc, proc.info)   # its host's resources (resources.py)
        except ConfigurationError:
            self._registry.remove(proc.process_id)
            raise
        if proc.is_slave:
            self._signals.slaves_changed.notify_all()
        log.debug("registered %s %s, tags %s", role, proc.process_id, sorted(tagset or ()))
        return proc.process_id

    def leave(self, process_id: int, abandoned: FrozenSet[int], reason: Optional[str]) -> Optional[Departure]:
        """A process says goodbye; ``reason`` in ``LEAVE_REASONS`` is counted as ``left_<reason>``."""
        departure = self.remove(process_id, None, abandoned)
        if departure is not None and reason in LEAVE_REASONS:
            self._counters[f"left_{reason}"] += 1
        return departure

    def remove(self, process_id: int, reason: Optional[str],
               abandoned: FrozenSet[int] = frozenset()) -> Optional[Departure]:
        """Forget a process (``reason`` None: it left cleanly; else why it was lost).

        Returns what becomes of the tasks it held, or None if it was unknown.
        ``abandoned``: the assignments it had started and gave up (see
        :meth:`Scheduler.on_loss`).
        """
        proc = self._registry.remove(process_id)
        if proc is None:
            return None
        self._scheduler.pools.leave(proc)
        held = [task for assignment, task in proc.running.items()
                if task.state is RUNNING and task.assignment == assignment]
        proc.running.clear()
        if proc.news is not None:
            proc.news.notify_all()
        given_up = [task.task_id for task in held if task.assignment in abandoned] if reason is None else []
        decision = self._scheduler.on_loss(proc, held, died=reason is not None, abandoned=abandoned)
        failures: List[Tuple[Task, Exception]] = [
            (task, SlaveLostError(f"task {task.task_id} lost its slave {len(task.lost_slaves)} times "
                                  f"({'; '.join(task.lost_slaves)}); giving up on it"))
            for task in decision.fail]
        self._signals.slaves_changed.notify_all()
        for task_id in given_up:
            log.warning("%s left while running task %s; counted as a loss of that task",
                        proc.describe(), task_id)
        if reason is None or self._signals.terminated:
            log.debug("%s left (%s); %d task(s) returned to the queue",
                      proc.describe(), reason or "goodbye", len(decision.requeue))
        else:
            self._counters["processes_lost"] += 1
            log.warning("%s lost: %s; %d task(s) rescheduled, %d failed after too many losses",
                        proc.describe(), reason, len(decision.requeue), len(decision.fail))
        return Departure(process_id, decision.requeue, failures)

    def live(self, process_id: int) -> ProcessRecord:
        """The record of a registered process; raises UnknownProcessError (or
        TaskManagerTermination) saying why there is none."""
        self._signals.check_running()
        proc = self._registry.get(process_id)
        if proc is None:
            raise UnknownProcessError(
                f"process {process_id} is not registered (it left, or was declared dead)")
        return proc

    # ------------------------------------------------------------------ signs of life

    def heartbeats(self, beats: Iterable[Tuple[int, Optional[dict]]]) -> List[int]:
        """Record signs of life ((process_id, stats) pairs, stats None: only check); returns unknown ids."""
        unknown = []
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

    def silent(self, expected_interval: Optional[float]) -> List[Tuple[int, str]]:
        """(process_id, reason) of every process that missed too many heartbeats
        (see :meth:`Registry.silent`); the caller removes them."""
        silent = self._registry.silent(self._clock(), self.missed_heartbeats, expected_interval)
        return [(proc.process_id, reason) for proc, reason in silent]

    def overdue(self) -> List[Tuple[Task, Exception]]:
        """Every task that ran ``TIME_LIMIT_GRACE`` s past its limit, with the error to fail it with."""
        return [(task, TaskTimeLimitError(
                    f"task {task.task_id} ran longer than its time limit of {task.time_limit:g} s "
                    f"on {proc.describe()}, which did not stop it"))
                for proc, task in self._registry.overdue(self._clock(), TIME_LIMIT_GRACE)]

    def longest_silence(self) -> float:
        """Seconds since the slave heard from least recently last gave a sign of life."""
        now = self._clock()
        return max((now - proc.last_seen for proc in self._registry if proc.is_slave), default=0.0)

    @property
    def slave_count(self) -> int:
        """How many slaves are registered now (read without the lock: one int)."""
        return self._registry.slave_count

    def wait_for_slaves(self, enough: Callable[[int], bool], timeout: Optional[float],
                        check_terminated: bool = True) -> bool:
        """Wait until ``enough(slave count)``; False on timeout."""
        return self._signals.wait_until(self._signals.slaves_changed,
                                        lambda: enough(self._registry.slave_count), timeout,
                                        check_terminated=check_terminated)

    # ------------------------------------------------------------------ news for a slave's watch

    def wait_for_news(self, process_ids: Iterable[int], timeout: float) -> Tuple[bool, bool]:
        """Wait until the manager terminates, tasks of any of the processes are
        revoked, any of them leaves, or ``timeout`` seconds pass; returns (terminated, revoked)."""
        deadline = time.monotonic() + timeout
        procs = [proc for proc in map(self._registry.get, process_ids) if proc is not None]
        news = procs[0].news if len(procs) == 1 and procs[0].news is not None \
            else threading.Condition(self._signals.lock)
        for proc in procs:
            proc.news = news
        while not self._signals.terminated and procs and not any(proc.revoked for proc in procs):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or any(self._registry.get(proc.process_id) is not proc for proc in procs):
                break
            news.wait(remaining)
        return self._signals.terminated, any(proc.revoked for proc in procs)

    def has_revoked(self, process_id: int) -> bool:
        """Were tasks of this process taken over? Safe without the lock: a
        revocation made meanwhile is seen next time."""
        proc = self._registry.get(process_id)
        return proc is not None and bool(proc.revoked)

    def take_revoked(self, process_id: int) -> List[int]:
        """Assignments of this process that another slave took over; forgets them."""
        proc = self._registry.get(process_id)
        if proc is None:
            return []
        revoked, proc.revoked = proc.revoked, []
        return revoked

    def wake_watchers(self) -> None:
        """Wake every watch (the manager terminates)."""
        for proc in self._registry:
            if proc.news is not None:
                proc.news.notify_all()
