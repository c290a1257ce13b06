"""Answers waiting for the master: the first answer wins, each is delivered once.

Pure logic; the :class:`~scientific_ms.core.manager.TaskManager` holds the lock.
An answered task sits in two ordered indexes, all tags and its own tag, so
that ``retrieveResult()`` and ``retrieveResult(tag)`` both take the oldest
in O(1); a task delivered through one index is dropped from the other when
it reaches its head, or by a compaction once such records outnumber the
live ones, so nothing delivered lingers for long.
"""

from __future__ import annotations

import collections
import itertools
import logging
from typing import Counter, Deque, Dict, NamedTuple, Optional

from ..wire.payload import Payload
from .tasks import DELIVERED, FAILED, FINISHED, UNANSWERED, Task, TaskTable

log = logging.getLogger(__name__)


class Outcome(NamedTuple):
    """A finished task as handed to the master."""
    task_id: str
    tag: str
    ok: bool          # False: ``payload`` is a pickled exception
    payload: Payload
    traceback: str


class ResultStore:
    """Answered tasks not yet delivered to the master.

    ``counters`` (shared with the manager) counts finished, failed,
    delivered and duplicates_dropped; ``completion_rate`` the answers.
    """

    def __init__(self, tasks: TaskTable, counters: Counter):
        self._tasks = tasks
        self._counters = counters
        #: Answers per outcome and tag since the start ({"finished": {tag: n}, "failed": {...}}):
        #: what the tasks of each tag came to, once delivered tasks have left the table.
        self.answered: Dict[str, Counter] = {"finished": collections.Counter(), "failed": collections.Counter()}
        self.completion_rate = RateMeter()
        # Two queues in completion order, all tags and per tag. A task delivered
        # through one stays in the other until it reaches that one's head or a
        # compaction drops it (lazy deletion: deque operations are O(1) and cheap).
        self._all: Deque[Task] = collections.deque()
        self._by_tag: Dict[str, Deque[Task]] = {}
        self._live = 0        # answered, not yet delivered
        self._stale = 0       # delivered, still in one of the queues

    def unanswered(self, task_id: str, assignment: int, process_id: Optional[int]) -> Optional[Task]:
        """The task an answer is for, if it is the first answer; else None (dropped, logged)."""
        task = self._tasks.get(task_id)
        if task is None or task.state not in UNANSWERED:
            self._counters["duplicates_dropped"] += 1
            log.info("dropped a second answer for task %s (assignment %s from process %s)",
                     task_id, assignment, process_id)
            return None
        if task.assignment != assignment:
            log.info("task %s: late answer from an earlier assignment accepted (first wins)", task_id)
        return task

    def settle(self, task: Task, ok: bool, payload: Payload, traceback: str, now: float) -> None:
        """Keep a task's answer for the master (the task already left its queue or slave)."""
        self._tasks.move(task, FINISHED if ok else FAILED)
        task.payload = None
        task.assignment = None
        task.answer = payload
        task.traceback = traceback
        self._counters["finished" if ok else "failed"] += 1
        self.answered["finished" if ok else "failed"][task.tag] += 1
        self.completion_rate.add(now)
        self._add(task)

    def deliver(self, tag: Optional[str] = None) -> Optional[Outcome]:
        """The oldest answer (to a task with ``tag``), now DELIVERED; None if there is none."""
        task = self.pop(tag)
        if task is None:
            return None
        outcome = tuple.__new__(Outcome, (task.task_id, task.tag, task.state is FINISHED,
                                          task.answer, task.traceback))   # C speed: once per task
        self._tasks.move(task, DELIVERED)
        task.answer = None
        self._counters["delivered"] += 1
        return outcome

    def _add(self, task: Task) -> None:
        self._all.append(task)
        queue = self._by_tag.get(task.tag)
        if queue is None:
            queue = self._by_tag[task.tag] = collections.deque()
        queue.append(task)
        self._live += 1

    def pop(self, tag: Optional[str] = None) -> Optional[Task]:
        """Remove and return the oldest answered task (with ``tag``), or None."""
        queue = self._all if tag is None else self._by_tag.get(tag)
        while queue:
            task = queue.popleft()
            if task.state is DELIVERED:
                self._stale -= 1          # delivered through the other queue
                continue
            self._live -= 1
            self._stale += 1              # it stays in the other queue for now
            if tag is not None and not queue:
                del self._by_tag[tag]
            if self._stale > self._live + 1024:
                self._compact()
            return task
        if tag is not None and queue is not None and not queue:
            del self._by_tag[tag]
        return None

    def _compact(self) -> None:
        # Called only once the stale records outnumber the live ones, so the cost per
        # task stays O(1) and memory is bounded by about twice what is answered.
        self._all = collections.deque(t for t in self._all if t.state is not DELIVERED)
        for tag, queue in list(self._by_tag.items()):
            kept = collections.deque(t for t in queue if t.state is not DELIVERED)
            if kept:
                self._by_tag[tag] = kept
            else:
                del self._by_tag[tag]
        self._stale = 0

    def __len__(self) -> int:
        return self._live


class RateMeter:
    """Events per second over a sliding window, in one-second buckets."""

    def __init__(self, window: float = 60.0):
        self.window = int(window)
        self._counts: Dict[int, int] = {}   # second -> events, oldest first (insertion order)

    def add(self, now: float, count: int = 1) -> None:
        second = int(now)
        known = self._counts.get(second)
        if known is not None:
            self._counts[second] = known + count
        else:
            self._counts[second] = count
            self._trim(second)

    def rate(self, now: float, elapsed: float) -> float:
        self._trim(int(now))
        span = min(float(self.window), max(elapsed, 1e-9))
        return sum(self._counts.values()) / span

    def _trim(self, second: int) -> None:
        for oldest in list(itertools.takewhile(lambda s: s <= second - self.window, self._counts)):
            del self._counts[oldest]
