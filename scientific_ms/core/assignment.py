"""Handing tasks to the processes that ask for work.

:class:`Assignment` is a part of the task traffic (``traffic.py``), called
with the manager's lock held (``signals.py``). It owns what happens between
a slave asking for tasks and getting them: the wait for work (one
:class:`~scientific_ms.core.waiting.Waiter` for all the processes of one
call), the tasks the scheduler chooses for each (``scheduling.py``) or an
unstarted one an idle slave steals, their assignment numbers, and the
wake-up a thread passes on when it leaves without the task it was woken
for. The table of tasks, the memory budget and the waiting slave threads
are the traffic's, shared with this part.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Callable, Counter, Dict, List, NamedTuple, Optional, Tuple

from .budget import MemoryBudget
from .registry import ProcessRecord, Registry
from .scheduling import Scheduler
from .signals import Signals
from .tasks import RUNNING, Task, TaskTable
from .waiting import Waiter, WaitingSlaves


class Want(NamedTuple):
    """How many tasks a process asks for, and how much work it wants queued
    (None: the fixed target; ``flow.queue_limit``)."""
    process_id: int
    max_tasks: int
    queue_seconds: Optional[float] = None


class Assignment:
    """Waiting tasks to the processes that ask; every method expects the
    manager's lock held (and may wait on its conditions)."""

    def __init__(self, signals: Signals, registry: Registry, scheduler: Scheduler, tasks: TaskTable,
                 budget: MemoryBudget, waiters: WaitingSlaves, counters: Counter,
                 clock: Callable[[], float]):
        self._signals = signals
        self._registry = registry
        self._scheduler = scheduler
        self._tasks = tasks           # the traffic's, as are the budget and the waiters
        self._budget = budget
        self._waiters = waiters
        self._counters = counters     # the manager's
        self._clock = clock
        self._assignment_numbers = itertools.count(1)

    def take(self, wants: List[Want], timeout: float) -> Tuple[Dict[int, List[Task]], List[int]]:
        """Assign tasks to processes (what each wants), waiting up to
        ``timeout`` seconds until one gets some; ({process_id: tasks}, unknown ids)."""
        deadline = None
        woken = False
        alone = wants[0].process_id if len(wants) == 1 else None   # whose thread passes a wake-up on
        try:
            while True:
                self._signals.check_running()
                assigned: Dict[int, List[Task]] = {}
                unknown: List[int] = []
                live: List[ProcessRecord] = []
                now = self._clock()
                self._scheduler.affinity.soonest = math.inf   # a task with a key passed over shortens the wait
                may_steal = True   # once per call: a steal scans the slaves that hold work
                for process_id, count, queue_seconds in wants:
                    proc = self._registry.get(process_id)
                    if proc is None:
                        unknown.append(process_id)
                        continue
                    proc.last_seen = now
                    if proc.tags is None:
                        continue   # not a slave (the master): it runs no task, so it waits for none
                    live.append(proc)
                    if not (self._scheduler.waiting_count or may_steal):
                        continue   # nothing left to give: the rest only wait
                    tasks = self._assign(proc, count, may_steal, queue_seconds)
                    if tasks:
                        assigned[process_id] = tasks
                    else:
                        may_steal = False
                if assigned:
                    woken = False
                if assigned or timeout <= 0 or not live:
                    return assigned, unknown
                now = time.monotonic()
                if deadline is None:
                    deadline = now + timeout
                if now >= deadline:
                    return assigned, unknown
                wait = deadline - now
                soonest = self._scheduler.affinity.soonest
                if soonest < math.inf:   # ask again once the patience of a task passed over ends
                    wait = min(wait, max(0.001, soonest - self._clock()))
                woken = self._wait_for_work(live, wait)
        finally:
            if woken:
                # Woken for a task but leaving without one (its process left,
                # it runs a suspect, time ran out): pass the wake-up on.
                self.pass_wake_up_on(alone)

    def _wait_for_work(self, live: List[ProcessRecord], timeout: float) -> bool:
        """Wait until a task that one of ``live`` can run arrives (one waiter for
        them all); returns whether it was woken for one."""
        if len(live) == 1 and live[0].tags is not None:
            tags = live[0].tags
        else:   # take() lets only slaves (tags not None) wait
            tags = frozenset().union(*(p.tags for p in live if p.tags is not None))
        waiter = Waiter(tuple(proc.process_id for proc in live), tags, self._signals.lock)
        self._waiters.add(waiter)
        for proc in live:
            proc.waiting += 1
        try:
            waiter.condition.wait(timeout)
        finally:
            now = self._clock()
            self._waiters.discard(waiter)
            for proc in live:
                proc.waiting -= 1
                proc.last_seen = now
        return waiter.woken

    def pass_wake_up_on(self, process_id: Optional[int]) -> None:
        """Wake another thread for every tag still waiting (not one of ``process_id``'s)."""
        for tag in list(self._scheduler.waiting_tags()):
            self._waiters.wake_one(tag, skip=process_id)

    def _assign(self, proc: ProcessRecord, max_tasks: int, may_steal: bool = True,
                queue_seconds: Optional[float] = None) -> List[Task]:
        """The tasks ``proc`` gets now: the scheduler's choice, else (``may_steal``) an
        unstarted one taken over from a slave that holds it; none while answers are over budget."""
        if self._budget.hold_back_slaves():
            return []
        now = self._clock()
        tasks = self._scheduler.select(proc, max_tasks, self._registry.slave_count,
                                       lambda tag: self._waiters.idle_for(tag, proc.process_id),
                                       queue_seconds, self._tasks.running(), self._registry,
                                       now, self._registry.get)
        for task in tasks:
            self._tasks.move(task, RUNNING)
            self._budget.add_waiting(-len(task.payload or b""))
        if tasks:
            self._signals.make_room()
            self._signals.tasks_started()
        if not tasks and may_steal:
            stolen = self._scheduler.steal(proc, self._registry.holders(), now)
            if stolen is not None:
                victim, task = stolen
                if victim.news is not None:
                    victim.news.notify_all()   # its watch tells it to drop the task
                self._counters["stolen"] += 1
                tasks = [task]
        for task in tasks:
            task.assignment = next(self._assignment_numbers)
            task.process_id = proc.process_id
            task.started = now
            self._registry.hand_over(proc, task)
        return tasks
