"""Who gets which task: the waiting queues and every rule of assignment.

Pure and lock-free: the :class:`~scientific_ms.core.manager.TaskManager` holds
its lock around every call, and its task traffic (``traffic.py``) applies
the decisions (state moves, assignment numbers, wake-ups). To change the scheduling policy, change this
module and its tests (``tests/test_scheduling.py``).

The rules:

- **Order.** One FIFO queue per tag; a requeued task goes to the front of
  its queue, and a slave takes from the queue whose head is oldest among
  the tags it handles (requeued tasks first).
- **Durations.** The manager learns how long each tag's tasks take from
  the handler times slaves report (:class:`Durations`); a tag not measured
  yet counts as long.
- **Batches.** A slave may ask for several tasks at once (it prefetches
  short tasks). Beyond the task it runs, it gets queued work while what it
  holds queued is under the queue it asked for by its tags' estimates
  (``QUEUE_SECONDS``, or more for a slave far from its master, at most
  ``flow.MAX_QUEUE_SECONDS``; so at most one more task's worth above
  that: about a round trip's worth), no task longer than that, no task of
  a tag not yet measured, and nothing
  beyond a round trip's worth (``IDLE_FIRST_BEYOND``) while another slave
  that could run the task waits idle. A batch also stops at
  ``BATCH_PAYLOAD_LIMIT`` bytes of parameters and at the slave's fair share
  of what is waiting (waiting / slaves).
- **Stealing.** A slave that asks for work when none waits takes a task
  that another slave holds but has not started (the last of the slave
  with the most queued work), once the task that slave runs has taken
  ``STEAL_AFTER`` seconds and twice its estimate; that slave is told to
  drop it. If it ran it anyway, the first answer wins.
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
import itertools
import threading
from typing import Callable, Deque, Dict, FrozenSet, Iterable, List, NamedTuple, Optional, Tuple

from . import flow
from .registry import ProcessRecord
from .tasks import ANY_TAG, Task

#: A batch is cut once its parameters reach this size, so that a slave asking
#: for many small tasks does not also hoard a queue of large ones.
BATCH_PAYLOAD_LIMIT = 4 * 1024 * 1024

#: Most estimated work (seconds) a slave may hold queued beyond the task it runs,
#: unless it asks for more (``flow.queue_limit``).
QUEUE_SECONDS = flow.TARGET_QUEUE_SECONDS

#: A busy slave may queue work that an idle slave could run only while its
#: queue stays this short (about one round trip): tiny tasks then travel in
#: batches, which the idle slave would not finish any sooner.
IDLE_FIRST_BEYOND = 0.001

#: A slave's queued tasks are taken over only once the task ahead of them has
#: run this long (and twice its estimate). Before that the slave may well have
#: started them already (answers of short tasks travel in batches, so the
#: master's view lags), and a task taken over then would run twice for a gain
#: of milliseconds. A slave sends the answer of a long task at once.
STEAL_AFTER = 0.05


class Durations:
    """How long each tag's handler takes, learned from the slaves' measurements
    (a :class:`~scientific_ms.core.flow.MovingAverage` per tag)."""

    def __init__(self):
        self._averages: Dict[str, flow.MovingAverage] = {}
        self._seconds: Dict[str, float] = {}   # each average's value, read once per held task

    def record(self, tag: str, seconds: float) -> None:
        average = self._averages.get(tag)
        if average is None:
            average = self._averages[tag] = flow.MovingAverage()
        self._seconds[tag] = average.add(seconds)

    def expect(self, tag: str, seconds: float) -> None:
        """A hint for a tag not measured yet; the measurements take over."""
        if tag not in self._averages:
            self._averages[tag] = flow.MovingAverage(seconds)
            self._seconds[tag] = seconds

    def estimate(self, tag: str) -> Optional[float]:
        """Seconds per task of ``tag``; None while not measured (then it counts as long)."""
        return self._seconds.get(tag)

    #: ``queued`` looks at this many held tasks at most and scales up (a slave may hold thousands).
    SAMPLE = 32

    def queued(self, proc: ProcessRecord) -> float:
        """Estimated work ``proc`` holds beyond the task it runs (its oldest); inf if unknown."""
        behind = len(proc.running) - 1
        if behind <= 0:
            return 0.0
        total = 0.0
        for task in itertools.islice(proc.running.values(), 1, 1 + self.SAMPLE):
            estimate = self._seconds.get(task.tag)
            if estimate is None:
                return float("inf")
            total += estimate
        return total * behind / min(behind, self.SAMPLE)


def handles(tags: FrozenSet[str], tag: str) -> bool:
    """Can a slave registered with ``tags`` run a task of ``tag``? (``ANY_TAG``: every tag.)"""
    return tag in tags or ANY_TAG in tags


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
        self.durations = Durations()

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
        """Take a waiting task out of its queue (it was answered meanwhile, or cancelled)."""
        queue = self._queues[task.tag]
        if queue[-1] is task:   # cancelling the newest first, as a cancelled map does: O(1)
            queue.pop()
        else:
            queue.remove(task)
        if not queue:
            del self._queues[task.tag]
        self.waiting_count -= 1

    def waiting_tags(self) -> Iterable[str]:
        return self._queues.keys()

    # ------------------------------------------------------------------ assignment

    def select(self, proc: ProcessRecord, max_tasks: int, slave_count: int,
               idle_elsewhere: Callable[[str], bool] = lambda tag: False,
               queue_seconds: Optional[float] = None) -> List[Task]:
        """Take the tasks ``proc`` gets now (at most ``max_tasks``) out of the queues.

        ``idle_elsewhere(tag)``: whether another slave that can run ``tag``
        waits for work (it gets such a task before anyone prefetches it).
        ``queue_seconds``: the work the slave asked to hold queued (None: it
        did not say), granted within ``flow.queue_limit``.
        """
        if proc.tags is None or not self.waiting_count:   # not a slave (proc.is_slave), or nothing waits
            return []
        if proc.runs_suspect:
            if any(task.suspect for task in proc.running.values()):
                return []   # a suspect runs alone, so that a death can be blamed on it
            proc.runs_suspect = False
        if max_tasks > 1:
            max_tasks = min(max_tasks, max(1, self.waiting_count // max(1, slave_count)))
        tasks: List[Task] = []
        size = 0
        queued = self.durations.queued(proc)
        limit = flow.queue_limit(queue_seconds)
        idle: Dict[str, bool] = {}   # idle_elsewhere, asked once per tag
        every = ANY_TAG in proc.tags
        while len(tasks) < max_tasks and size < BATCH_PAYLOAD_LIMIT:
            queue = self._best_queue(proc.tags, every)
            if queue is None:
                break
            head = queue[0]
            busy = bool(tasks or proc.running)
            if busy:
                if head.suspect:
                    break   # only an idle slave takes a suspect, and nothing with it
                estimate = self.durations.estimate(head.tag)
                if estimate is None or not flow.may_queue(queued, estimate, limit):
                    break   # no hoarding of long or unknown work
                if queued + estimate > IDLE_FIRST_BEYOND:
                    if head.tag not in idle:
                        idle[head.tag] = idle_elsewhere(head.tag)
                    if idle[head.tag]:
                        break   # an idle slave would run it sooner
                queued += estimate
            task = queue.popleft()
            if not queue:
                del self._queues[task.tag]
            self.waiting_count -= 1
            tasks.append(task)
            size += len(task.payload or b"")
            if task.suspect:
                proc.runs_suspect = True
                break
        return tasks

    def _best_queue(self, tags: FrozenSet[str], every: bool) -> Optional[Deque[Task]]:
        """The queue, among the tags handled (``every``: all), whose head comes first."""
        best = None
        for tag, queue in self._queues.items():
            if (every or tag in tags) and (best is None or queue_key(queue[0]) < queue_key(best[0])):
                best = queue
        return best

    def steal(self, thief: ProcessRecord, processes: Iterable[ProcessRecord],
              now: float) -> Optional[Tuple[ProcessRecord, Task]]:
        """A task another slave holds unstarted that the idle ``thief`` should run instead.

        From the slave with the most queued work, its last unstarted task
        that the thief can run, taken from that slave and listed in its
        ``revoked`` assignments; None if no slave holds more than the task it runs.
        """
        if thief.tags is None or thief.running:   # not a slave (thief.is_slave), or not idle
            return None
        best: Optional[Tuple[ProcessRecord, Task]] = None
        most_queued = 0.0
        for victim in processes:
            if victim is thief or len(victim.running) < 2:
                continue
            running = next(iter(victim.running.values()))
            if now - running.started < max(STEAL_AFTER, 2 * (self.durations.estimate(running.tag) or 0.0)):
                continue
            unstarted = [t for t in itertools.islice(victim.running.values(), 1, None)
                         if handles(thief.tags, t.tag) and not t.suspect]
            if not unstarted:
                continue
            queued = self.durations.queued(victim)
            if best is None or queued > most_queued:
                best, most_queued = (victim, unstarted[-1]), queued
        if best is None:
            return None
        victim, task = best
        assert task.assignment is not None, f"task {task.task_id} held without an assignment"
        del victim.running[task.assignment]
        victim.revoked.append(task.assignment)
        return victim, task

    # ------------------------------------------------------------------ losses

    def on_loss(self, proc: ProcessRecord, held: List[Task], died: bool,
                abandoned: FrozenSet[int] = frozenset()) -> LossDecision:
        """Decide the fate of the tasks ``proc`` held when it left (``died``: it was lost).

        ``held`` is in assignment order; requeued tasks keep that order.
        ``abandoned``: assignments it had started and gave up, each a loss as a
        death would be: named by a slave that said goodbye (a handler ended
        it), or by the keeper of a slave that died. When they are named,
        only they are blamed; the rest return without blame.
        """
        requeue: List[Task] = []
        fail: List[Task] = []
        named = bool(abandoned)
        for task in held:
            if task.assignment not in abandoned and (named or not died):
                requeue.append(task)     # unstarted work returns without blame
                continue
            task.suspect = True
            if died and len(held) > 1 and not named:
                # It died holding a batch: which one was running is unknown, so none
                # is blamed; each will run alone from now on.
                requeue.append(task)
                continue
            task.lost_slaves.append(proc.describe() if died else f"{proc.describe()}, which left while running it")
            (fail if len(task.lost_slaves) >= self.max_slave_losses else requeue).append(task)
        return LossDecision(requeue, fail)


# ---------------------------------------------------------------- waiting slave threads

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
