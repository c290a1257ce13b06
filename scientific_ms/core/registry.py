"""The registered processes and their liveness: pure logic, no lock, no I/O.

The :class:`~scientific_ms.core.manager.TaskManager` holds the lock while
its parts (``processes.py``, ``traffic.py``) call this. Liveness is a pure
function of (registry, now): :meth:`Registry.silent` names the processes
that missed too many heartbeats, and the caller decides what that costs
them. Times come from the manager's clock (a fake in tests).
"""

from __future__ import annotations

import logging
import threading
from typing import Dict, FrozenSet, Iterator, List, Optional, Tuple

from .tasks import RUNNING, Task

log = logging.getLogger(__name__)


class ProcessRecord:
    """A registered process (the master itself, or a slave)."""

    __slots__ = ("process_id", "role", "info", "tags", "watchdog_period",
                 "registered", "last_seen", "running", "tasks_done",
                 "stats", "waiting", "revoked", "news", "runs_suspect", "pool")

    def __init__(self, process_id: int, role: str, info: Dict,
                 tags: Optional[FrozenSet[str]], watchdog_period: Optional[float],
                 now: float):
        self.process_id = process_id
        self.role = role
        self.info = info
        self.tags = tags                  # None: the master (runs no tasks)
        self.watchdog_period = watchdog_period
        self.registered = now
        self.last_seen = now
        self.running: Dict[int, Task] = {}  # assignment -> task
        self.tasks_done = 0
        self.stats: Dict = {}             # sampled on the slave (cpu, rss)
        self.waiting = 0                  # its threads blocked in take_tasks right now
        self.revoked: List[int] = []      # assignments taken back, not yet told to the slave
        self.news: Optional[threading.Condition] = None   # its watch call waits on it, once it watches
        self.runs_suspect = False         # it was given a suspect (cleared once none is held)
        self.pool = None                  # its host's resources.HostPool (a slave or an agent)

    @property
    def is_slave(self) -> bool:
        return self.tags is not None

    def describe(self) -> str:
        host = self.info.get("host", "?")
        pid = self.info.get("pid", "?")
        return f"process {self.process_id} (PID {pid} on {host})"


class Registry:
    """Every registered process by id, and how many of them are slaves."""

    def __init__(self):
        self._processes: Dict[int, ProcessRecord] = {}
        self._holders: Dict[int, ProcessRecord] = {}   # may hold unstarted tasks (see holders())
        self._time_limits_used = False   # a task with a time limit was handed out (see overdue())
        self._next_id = 1
        self.slave_count = 0
        self._last_check: Optional[float] = None

    def add(self, role: str, info: Dict, tags: Optional[FrozenSet[str]],
            watchdog_period: Optional[float], now: float) -> ProcessRecord:
        proc = ProcessRecord(self._next_id, role, info, tags, watchdog_period, now)
        self._next_id += 1
        self._processes[proc.process_id] = proc
        if proc.is_slave:
            self.slave_count += 1
        return proc

    def remove(self, process_id: int) -> Optional[ProcessRecord]:
        proc = self._processes.pop(process_id, None)
        if proc is not None and proc.is_slave:
            self.slave_count -= 1
        return proc

    def hand_over(self, proc: ProcessRecord, task: Task) -> None:
        """``proc`` now holds ``task`` (its assignment number is set)."""
        assert task.assignment is not None, f"task {task.task_id} handed over without an assignment"
        proc.running[task.assignment] = task
        if task.time_limit is not None:
            self._time_limits_used = True
        if len(proc.running) > 1:
            self._holders[proc.process_id] = proc   # it holds one it has not started: may be stolen from

    def release(self, task: Task) -> None:
        """The slave holding ``task`` (if any still does) no longer holds it: it was answered."""
        holder = self.get(task.process_id)
        if holder is not None and task.assignment is not None:
            holder.running.pop(task.assignment, None)

    def holders(self) -> List[ProcessRecord]:
        """The slaves holding unstarted tasks, so that stealing does not scan
        every slave (there may be thousands); forgets the others."""
        gone = [process_id for process_id, proc in self._holders.items()
                if len(proc.running) < 2 or self._processes.get(process_id) is not proc]
        for process_id in gone:
            del self._holders[process_id]
        return list(self._holders.values())

    def get(self, process_id: Optional[int]) -> Optional[ProcessRecord]:
        return self._processes.get(process_id) if process_id is not None else None

    def __iter__(self) -> Iterator[ProcessRecord]:
        return iter(list(self._processes.values()))

    def __len__(self) -> int:
        return len(self._processes)

    def overdue(self, now: float, grace: float) -> List[Tuple[ProcessRecord, Task]]:
        """Running tasks whose time limit passed more than ``grace`` seconds ago."""
        if not self._time_limits_used:   # most jobs: no scan of every slave's tasks
            return []
        return [(proc, task) for proc in self._processes.values() for task in proc.running.values()
                if task.time_limit is not None and task.state is RUNNING
                and now - task.started > task.time_limit + grace]

    def silent(self, now: float, missed_heartbeats: float,
               expected_interval: Optional[float] = None) -> List[Tuple[ProcessRecord, str]]:
        """The processes that missed more than ``missed_heartbeats`` periods, with the reason.

        ``expected_interval``: how often the caller runs this. If it ran late,
        the master itself was stalled (its threads starved, the machine
        swapping): the heartbeats then wait unread in its sockets, so the
        delay is credited to every process instead of counted as silence.
        A slave waiting for work is alive (its poll is open) and holds
        nothing to reschedule, so it is never silent.
        """
        previous, self._last_check = self._last_check, now
        if expected_interval is not None and previous is not None:
            late = now - previous - expected_interval
            if late > expected_interval:
                log.info("the master stalled for %.1f s; not counted against its slaves", late)
                for proc in self._processes.values():
                    proc.last_seen = min(now, proc.last_seen + late)
        silent = []
        for proc in self._processes.values():
            period = proc.watchdog_period
            if period is None or proc.waiting:
                continue
            silence = now - proc.last_seen
            if silence > missed_heartbeats * period:
                silent.append((proc, f"no heartbeat for {silence:.1f} s (watchdog period {period:g} s)"))
        return silent
