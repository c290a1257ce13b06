"""The slave threads waiting for work, and which one a new task wakes.

A part of the task traffic (``traffic.py``), under the manager's lock. The
rule: a new or requeued task wakes the slave thread that has waited longest
among those that can run it; a thread woken for a task that leaves without
one passes the wake-up on, so no task waits for a poll to time out while an
idle slave could run it.
"""

from __future__ import annotations

import threading
from typing import Dict, FrozenSet, List, Optional, Tuple

from .tasks import handles


class Waiter:
    """A thread blocked in ``take_tasks`` for one slave (or in ``take_tasks_for`` for
    several), woken when a task that one of them can run arrives."""

    __slots__ = ("process_ids", "tags", "condition", "woken", "room")

    def __init__(self, process_ids: Tuple[int, ...], tags: FrozenSet[str], lock: threading.Lock):
        self.process_ids = process_ids
        self.tags = tags                              # what any of them can run
        self.condition = threading.Condition(lock)    # on the manager's lock
        self.woken = False    # chosen for a task: it must take it or pass the wake-up on
        self.room = len(process_ids)   # tasks it will take at least once it runs

    def is_only(self, process_id: Optional[int]) -> bool:
        """Does it wait for that process alone?"""
        return len(self.process_ids) == 1 and self.process_ids[0] == process_id


class WaitingSlaves:
    """The slave threads waiting for work, longest-waiting first."""

    def __init__(self):
        self._waiters: Dict[Waiter, None] = {}   # an insertion-ordered set
        self._woken: Dict[Waiter, None] = {}     # woken, not yet back in take_tasks
        self._of_process: Dict[int, List[Waiter]] = {}   # so that a leaver is found at once

    def add(self, waiter: Waiter) -> None:
        self._waiters[waiter] = None
        for process_id in waiter.process_ids:
            self._of_process.setdefault(process_id, []).append(waiter)

    def discard(self, waiter: Waiter) -> None:
        self._waiters.pop(waiter, None)
        self._woken.pop(waiter, None)
        for process_id in waiter.process_ids:
            others = self._of_process.get(process_id)
            if others is not None:
                if waiter in others:
                    others.remove(waiter)
                if not others:
                    del self._of_process[process_id]

    def __len__(self) -> int:
        return len(self._waiters)

    def idle_for(self, tag: str, process_id: int) -> bool:
        """Does a slave other than ``process_id`` wait (or was just woken) for a task of ``tag``?"""
        return any(handles(w.tags, tag) and not w.is_only(process_id)
                   for waiters in (self._woken, self._waiters) for w in waiters)

    def wake_one(self, tag: str, skip: Optional[int] = None) -> None:
        """Wake the longest-waiting thread that can run ``tag`` (not one of process ``skip``).

        A thread already woken that will take more tasks when it runs (one
        waiting for several slaves) takes this one too: tasks that arrive one by one
        then go out in batches, instead of each waking a thread and a call.
        """
        for waiter in self._woken:
            if waiter.room > 0 and handles(waiter.tags, tag) and not waiter.is_only(skip):
                waiter.room -= 1
                return
        if not self._waiters:
            return
        for waiter in self._waiters:
            if handles(waiter.tags, tag) and not waiter.is_only(skip):
                del self._waiters[waiter]
                self._woken[waiter] = None
                waiter.woken = True
                waiter.room -= 1
                waiter.condition.notify()
                return

    def wake_process_for(self, tag: str, process_id: int) -> bool:
        """Wake a waiting thread of ``process_id`` for a task of ``tag`` (one whose key it
        owns, ``affinity.py``); False if none waits."""
        for waiter in self._of_process.get(process_id, ()):
            if waiter in self._waiters and handles(waiter.tags, tag):
                del self._waiters[waiter]
                self._woken[waiter] = None
                waiter.woken = True
                waiter.room -= 1
                waiter.condition.notify()
                return True
        return False

    def wake_process(self, process_id: int) -> None:
        """Wake every thread of a process that left, out of the set at once so that
        no task's wake-up goes to a leaver."""
        for waiter in self._of_process.pop(process_id, ()):
            if self._waiters.pop(waiter, 0) is None:
                waiter.condition.notify()
            self._woken.pop(waiter, None)

    def wake_all(self) -> None:
        for waiter in list(self._waiters):
            waiter.condition.notify()
