"""The task manager's lock, the conditions its threads wait on, and its end.

:class:`~scientific_ms.core.manager.TaskManager` makes one :class:`Signals`
and hands it to its parts (``traffic.py``, ``processes.py``): they all
wait on conditions built on this one lock, which the manager's public
methods hold while they call them. Nothing here takes the lock itself;
every method expects it held (except :meth:`Signals.wait_terminated`).
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional

from ..errors import TaskManagerTermination


class Signals:
    """One lock, the conditions on it, and whether the manager was terminated.

    Each condition says what its waiters wait for; whoever changes that
    notifies it (under the lock). The ``*_waiting`` counts let the hot
    paths skip a notify that nobody would hear.
    """

    def __init__(self):
        #: Protects every part of the manager except the shared data (its own lock).
        self.lock = threading.Lock()
        #: ``get_answers`` waits here: an answer arrived, or a task it may wait for went away.
        self.answer_ready = threading.Condition(self.lock)
        #: ``wait_for_slaves`` and ``wait_until_no_slaves`` wait here: a slave came or went.
        self.slaves_changed = threading.Condition(self.lock)
        #: A request waits here for the memory budget: slaves took tasks or answers left.
        self.room = threading.Condition(self.lock)
        self.room_waiting = 0
        #: ``wait_for_running`` waits here: a slave took a task.
        self.task_started = threading.Condition(self.lock)
        self.task_started_waiting = 0
        self.terminated = False
        self._terminated_event = threading.Event()   # for waits without the lock

    def check_running(self) -> None:
        """Raise TaskManagerTermination once terminated."""
        if self.terminated:
            raise TaskManagerTermination("the task manager has been terminated")

    def make_room(self) -> None:
        """Wake requests waiting for the memory budget (if any: this runs for every task)."""
        if self.room_waiting:
            self.room.notify_all()

    def wait_for_room(self) -> None:
        """Wait once on :attr:`room` (the caller loops on its own test)."""
        self.room_waiting += 1
        try:
            self.room.wait()
        finally:
            self.room_waiting -= 1

    def tasks_started(self) -> None:
        """Slaves took tasks: wake ``wait_for_running``, if it waits."""
        if self.task_started_waiting:
            self.task_started.notify_all()

    def wait_for_start(self, done: Callable[[], bool], timeout: Optional[float]) -> bool:
        """Wait on :attr:`task_started` until ``done()``; False after ``timeout`` seconds."""
        self.task_started_waiting += 1
        try:
            return self.wait_until(self.task_started, done, timeout)
        finally:
            self.task_started_waiting -= 1

    def wait_until(self, condition: threading.Condition, done: Callable[[], bool],
                   timeout: Optional[float], check_terminated: bool = True) -> bool:
        """Wait on ``condition`` until ``done()``; False after ``timeout`` seconds (real time).

        ``check_terminated``: raise TaskManagerTermination once terminated.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done():
            if check_terminated:
                self.check_running()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            condition.wait(remaining)
        return True

    def terminate(self) -> bool:
        """Mark the end and wake every condition here; False if it had ended already.

        The caller wakes the waits that live elsewhere (slave threads, watches).
        """
        if self.terminated:
            return False
        self.terminated = True
        self._terminated_event.set()
        for condition in (self.room, self.answer_ready, self.slaves_changed, self.task_started):
            condition.notify_all()
        return True

    def wait_terminated(self, timeout: float) -> bool:
        """Block (without the lock) until terminated or ``timeout`` seconds pass."""
        return self._terminated_event.wait(timeout)
