"""Who gets which task: the waiting queues and every rule of assignment.

Pure and lock-free: the :class:`~scientific_ms.manager.TaskManager` holds
its lock around every call and applies the decisions (state moves,
assignment numbers, wake-ups). To change the scheduling policy, change this
module and its tests (``tests/test_scheduling.py``).

The rules:

- **Order.** One FIFO queue per tag; a requeued task goes to the front of
  its queue, and a slave takes from the queue whose head is oldest among
  the tags it handles (requeued tasks first).
- **Batches.** A slave may ask for several tasks at once (it prefetches
  short tasks). A batch stops at ``BATCH_PAYLOAD_LIMIT`` bytes of
  parameters, and never exceeds the slave's fair share of what is waiting
  (waiting / slaves), so the end of a run is spread over every slave.
- **Suspects.** A slave that dies holding several tasks blames none of
  them: each becomes a *suspect* that from then on runs alone, on an idle
  slave, with nothing else in its batch. Only a death while running alone
  counts against a task; after ``max_slave_losses`` such deaths the task
  fails with :class:`~scientific_ms.errors.SlaveLostError`.
- **Goodbyes.** Tasks held by a slave that leaves cleanly go back to the
  front of the queue without blame.
- **Wake-ups.** A new or requeued task wakes the slave thread that has
  waited longest among those that can run it; a thread woken for a task
  that leaves without one passes the wake-up on, so no task waits for a
  poll to time out while an idle slave could run it.
"""

from __future__ import annotations

import collections
import threading
from typing import Deque, Dict, FrozenSet, Iterable, List, NamedTuple, Optional, Tuple

from .registry import ProcessRecord
from .tasks import Task

#: A batch is cut once its parameters reach this size, so that a slave asking
#: for many small tasks does not also hoard a queue of large ones.
BATCH_PAYLOAD_LIMIT = 4 * 1024 * 1024


def queue_key(task: Task) -> Tuple[bool, int]:
    """Order among queue heads: requeued tasks first, then the oldest request."""
    return (not task.rescheduled, task.seq)


class LossDecision(NamedTuple):
    """What becomes of the tasks a lost slave held."""
    requeue: List[Task]
    fail: List[Task]     # each has lost too many slaves


class Scheduler:
    """The waiting queues, one per tag, and the assignment rules above."""

    def __init__(self, max_slave_losses: int):
        self.max_slave_losses = max_slave_losses
        self._queues: Dict[str, Deque[Task]] = {}   # tag -> queue; only non-empty queues
        self.waiting_count = 0

    # ------------------------------------------------------------------ queues

    def enqueue(self, task: Task, front: bool = False) -> None:
        queue = self._queues.get(task.tag)
        if queue is None:
            queue = self._queues[task.tag] = collections.deque()
        if front:
            queue.appendleft(task)
        else:
            queue.append(task)
        self.waiting_count += 1

    def remove(self, task: Task) -> None:
        """Take a waiting task out of its queue (it was answered meanwhile)."""
        queue = self._queues[task.tag]
        queue.remove(task)
        if not queue:
            del self._queues[task.tag]
        self.waiting_count -= 1

    def waiting_tags(self) -> Iterable[str]:
        return self._queues.keys()

    # ------------------------------------------------------------------ assignment

    def select(self, proc: ProcessRecord, max_tasks: int, slave_count: int) -> List[Task]:
        """Take the tasks ``proc`` gets now (at most ``max_tasks``) out of the queues."""
        if not proc.is_slave or not self.waiting_count:
            return []
        if any(task.suspect for task in proc.running.values()):
            return []   # a suspect runs alone, so that a death can be blamed on it
        if max_tasks > 1:
            max_tasks = min(max_tasks, max(1, self.waiting_count // max(1, slave_count)))
        tasks: List[Task] = []
        size = 0
        while len(tasks) < max_tasks and size < BATCH_PAYLOAD_LIMIT:
            queue = self._best_queue(proc.tags)
            if queue is None:
                break
            if queue[0].suspect and (tasks or proc.running):
                break   # only an idle slave takes a suspect, and nothing with it
            task = queue.popleft()
            if not queue:
                del self._queues[task.tag]
            self.waiting_count -= 1
            tasks.append(task)
            size += len(task.payload or b"")
            if task.suspect:
                break
        return tasks

    def _best_queue(self, tags: FrozenSet[str]) -> Optional[Deque[Task]]:
        best = None
        for tag, queue in self._queues.items():
            if tag in tags and (best is None or queue_key(queue[0]) < queue_key(best[0])):
                best = queue
        return best

    # ------------------------------------------------------------------ losses

    def on_loss(self, proc: ProcessRecord, held: List[Task], died: bool) -> LossDecision:
        """Decide the fate of the tasks ``proc`` held when it left (``died``: it was lost).

        ``held`` is in assignment order; requeued tasks keep that order.
        """
        if not died:
            return LossDecision(list(held), [])
        requeue: List[Task] = []
        fail: List[Task] = []
        for task in held:
            task.suspect = True
            if len(held) > 1:
                # It died holding a batch: which one was running is unknown, so none
                # is blamed; each will run alone from now on.
                requeue.append(task)
                continue
            task.lost_slaves.append(proc.describe())
            (fail if len(task.lost_slaves) >= self.max_slave_losses else requeue).append(task)
        return LossDecision(requeue, fail)


# ---------------------------------------------------------------- waiting slave threads

class Waiter:
    """A slave thread blocked in ``take_tasks``, woken when a task it can run arrives."""

    __slots__ = ("process_id", "tags", "condition", "woken")

    def __init__(self, process_id: int, tags: FrozenSet[str], lock: threading.Lock):
        self.process_id = process_id
        self.tags = tags
        self.condition = threading.Condition(lock)   # on the manager's lock
        self.woken = False    # chosen for a task: it must take it or pass the wake-up on


class WaitingSlaves:
    """The slave threads waiting for work, longest-waiting first."""

    def __init__(self):
        self._waiters: Dict[Waiter, None] = {}   # an insertion-ordered set

    def add(self, waiter: Waiter) -> None:
        self._waiters[waiter] = None

    def discard(self, waiter: Waiter) -> None:
        self._waiters.pop(waiter, None)

    def __len__(self) -> int:
        return len(self._waiters)

    def wake_one(self, tag: str, skip: Optional[int] = None) -> None:
        """Wake the longest-waiting thread that can run ``tag`` (not one of process ``skip``)."""
        for waiter in self._waiters:
            if tag in waiter.tags and waiter.process_id != skip:
                del self._waiters[waiter]
                waiter.woken = True
                waiter.condition.notify()
                return

    def wake_process(self, process_id: int) -> None:
        """Wake every thread of a process that left, out of the set at once so that
        no task's wake-up goes to a leaver."""
        for waiter in [w for w in self._waiters if w.process_id == process_id]:
            del self._waiters[waiter]
            waiter.condition.notify()

    def wake_all(self) -> None:
        for waiter in list(self._waiters):
            waiter.condition.notify()
