"""Task and process records, and the states a task moves through.

A task's life::

    WAITING --assign--> RUNNING --result--> FINISHED --retrieve--> DELIVERED
       ^                  |  \\--exception-> FAILED ----retrieve--/
       +---slave lost-----+
           (front of queue; FAILED after too many losses)

Every assignment of a task to a slave gets its own number, so an answer
from an earlier assignment (a slave presumed dead that comes back) is
recognised. The first answer wins; later ones are dropped.
"""

from __future__ import annotations

import enum
from typing import Dict, FrozenSet, List, Optional

#: A slave registered with this tag runs tasks of every tag (the Executor's
#: function runner, whose tasks are tagged with their function's name).
ANY_TAG = "*"


class TaskState(str, enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"     # result stored, not yet retrieved
    FAILED = "failed"         # exception stored, not yet retrieved
    DELIVERED = "delivered"   # handed to the master; the record is gone


class Task:
    """One task request. Kept small: a queue may hold millions of these."""

    __slots__ = ("task_id", "tag", "payload", "state", "seq", "rescheduled",
                 "assignment", "process_id", "started", "lost_slaves", "suspect",
                 "answer", "traceback", "time_limit")

    def __init__(self, task_id: str, tag: str, payload: bytes, seq: int,
                 time_limit: Optional[float] = None):
        self.task_id = task_id
        self.tag = tag
        self.payload: Optional[bytes] = payload  # pickled parameters
        self.state = TaskState.WAITING
        self.seq = seq
        self.rescheduled = False
        self.assignment: Optional[int] = None
        self.process_id: Optional[int] = None
        self.started = 0.0
        self.lost_slaves: List[str] = []   # slaves that died while running it alone
        self.suspect = False               # held by a slave that died: from now on it runs alone
        self.answer: Optional[bytes] = None  # pickled result or exception
        self.traceback = ""
        self.time_limit = time_limit      # seconds, or None

    @property
    def queue_key(self):
        """Order in the waiting queue: rescheduled tasks first, then FIFO."""
        return (not self.rescheduled, self.seq)


class ProcessRecord:
    """A registered process (the master itself, or a slave)."""

    __slots__ = ("process_id", "role", "info", "tags", "watchdog_period",
                 "registered", "last_seen", "running", "tasks_done",
                 "stats", "lost", "waiting")

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
        self.lost = False
        self.waiting = 0                  # its threads blocked in take_tasks right now

    def describe(self) -> str:
        host = self.info.get("host", "?")
        pid = self.info.get("pid", "?")
        return f"process {self.process_id} (PID {pid} on {host})"
