"""Who gets which task: the waiting queues and every rule of assignment.

Pure and lock-free: the :class:`~scientific_ms.core.manager.TaskManager` holds
its lock around every call, and its task traffic (``traffic.py``) applies
the decisions (state moves, assignment numbers, wake-ups). To change the scheduling policy, change this
module and its tests (``tests/test_scheduling.py``).

The rules:

- **Order.** One FIFO queue per tag; a requeued task goes to the front of
  its queue, and a slave takes from the queue whose head is oldest among
  the tags it handles (requeued tasks first). A task's **priority**
  (default 0) comes before all that: among waiting tasks a higher priority
  goes first, equal priorities keep this order, and a task requeued,
  retried or stolen keeps its priority (:func:`queue_key`; a tag whose
  tasks all have priority 0 keeps a plain deque, ``queues.py``).
- **Concurrency limits.** A tag limited to n (``steering.py``)
  never has more than n tasks assigned at once across the farm (running
  or queued on a slave): its queue is skipped while it is full, and a task
  of it that ends wakes a slave for the next.
- **Retries.** A task whose handler raised one of its ``retry_on``
  exceptions (any by default) goes back to the front of its queue, up to
  ``retries`` times (``steering.py``); a slave it failed on leaves it
  to another that can run it, while there is one .
  Its last exception is then delivered with a note naming the attempts
  (the rules of limits and retries: ``steering.py``, pure).
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
- **Resources.** A task that needs GPUs, memory or cores runs only on a
  host that has them free, and holds them while it runs; the rules of host
  pools, holding, cores and GPU ids are in ``resources.py`` (pure, called
  from :meth:`Scheduler.select`).
- **Affinity.** A task with a key goes preferably to the slave that last
  got one with that key; others pass it over about its estimated duration
  at most (``affinity.py``, pure, called from :meth:`Scheduler.select`).
- **Wake-ups.** Which waiting slave thread a task wakes: ``waiting.py``.
"""

from __future__ import annotations

import collections
import itertools
from typing import (
    Callable,
    Deque,
    Dict,
    FrozenSet,
    Iterable,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Set,
    Tuple,
    Union,
)

from . import flow
from .affinity import Affinities, Find
from .durations import Durations
from .needs import Need
from .queues import PriorityQueue
from .registry import ProcessRecord
from .resources import SKIP, TAKE, HostPools, place
from .steering import ConcurrencyLimits, retry_elsewhere
from .tasks import ANY_TAG, Task, handles

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


def queue_key(task: Task) -> Tuple[float, bool, int]:
    """Order among waiting tasks: the highest priority, then requeued tasks, then the oldest request."""
    return (-task.priority, not task.rescheduled, task.seq)


def _priority(task: Task) -> float:
    return task.priority


#: A tag's waiting tasks: a deque while they all have priority 0, else a heap.
Queue = Union[Deque[Task], PriorityQueue]


class LossDecision(NamedTuple):
    """What becomes of the tasks a lost slave held."""
    requeue: List[Task]
    fail: List[Task]     # each has lost too many slaves


class Scheduler:
    """The waiting queues, one per tag, and the assignment rules above."""

    def __init__(self, max_slave_losses: int):
        self.max_slave_losses = max_slave_losses
        self._queues: Dict[str, Queue] = {}   # tag -> queue; only non-empty queues
        self.waiting_count = 0
        self.durations = Durations()
        self.limits = ConcurrencyLimits()
        self.pools = HostPools()                  # each host's resources (resources.py)
        self.default_needs: Dict[str, Need] = {}  # tag -> what its tasks need unless they say
        self.needy_tags: Set[str] = set()         # tags that had a task with a need (show's unmet needs)
        self.affinity = Affinities()              # who owns each key (affinity.py)

    # ------------------------------------------------------------------ queues

    def enqueue(self, task: Task, front: bool = False) -> None:
        """Queue ``task`` (``front``: requeued)."""
        if task.affinity is not None:
            self.affinity.queued(task)
        if task.need is not None:
            self.needy_tags.add(task.tag)
        queue = self._queues.get(task.tag)
        if queue is None:
            queue = self._queues[task.tag] = PriorityQueue(queue_key) if task.priority else collections.deque()
        elif task.priority and type(queue) is collections.deque:
            queue = self._queues[task.tag] = PriorityQueue(queue_key, queue)   # from now on, a heap
        if front:
            queue.appendleft(task)
        else:
            queue.append(task)
        self.waiting_count += 1

    def remove(self, task: Task) -> None:
        """Take a waiting task out of its queue (it was answered meanwhile, or cancelled)."""
        queue = self._queues[task.tag]
        if type(queue) is collections.deque and queue[-1] is task:   # the newest first, as a cancelled map does: O(1)
            queue.pop()
        else:
            queue.remove(task)
        if not queue:
            del self._queues[task.tag]
        self.waiting_count -= 1
        if task.need is not None:
            self.pools.forget_waiting(task)
        if task.affinity is not None:
            self.affinity.left(task)

    def has_waiting(self, tag: str) -> bool:
        return tag in self._queues

    def waiting_tags(self) -> Iterable[str]:
        return self._queues.keys()

    # ------------------------------------------------------------------ assignment

    def select(self, proc: ProcessRecord, max_tasks: int, slave_count: int,
               idle_elsewhere: Callable[[str], bool] = lambda tag: False,
               queue_seconds: Optional[float] = None, running: Mapping[str, int] = {},
               slaves: Iterable[ProcessRecord] = (), now: float = 0.0,
               find: Find = lambda process_id: None) -> List[Task]:
        """Take the tasks ``proc`` gets now (at most ``max_tasks``) out of the queues.

        ``idle_elsewhere(tag)``: whether another slave that can run ``tag``
        waits for work (it gets such a task before anyone prefetches it).
        ``queue_seconds``: the work the slave asked to hold queued (None: it
        did not say), granted within ``flow.queue_limit``. ``running``: tasks
        assigned per tag (for the concurrency limits); ``slaves``: the
        registered processes (a retried task goes to another slave); ``now``
        and ``find`` (a registered process by id) serve tasks with a key (``affinity.py``).
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
        limits = self.limits
        skipped = limits.full(running) if limits else set()   # tags passed over in this call
        affinity = self.affinity
        taken: Dict[str, int] = {}                            # of limited tags, in this batch
        while len(tasks) < max_tasks and size < BATCH_PAYLOAD_LIMIT:
            queue = self._best_queue(proc.tags, every, skipped)
            if queue is None:
                break
            head = queue[0]
            picked: Optional[Task] = None   # a task with a key may be another than the head
            if affinity.waiting and head.tag in affinity.waiting:
                picked = affinity.choose(queue, type(queue) is collections.deque, proc, now, find,
                                         self.durations.estimate, queue_key)
                if picked is None:
                    skipped.add(head.tag)   # each is left to the slave that owns its key, for now
                    continue
                head = picked
            if head.failed_on is not None and retry_elsewhere(head, proc, slaves):
                skipped.add(head.tag)   # it failed here: another slave runs it
                continue
            busy = bool(tasks or proc.running)
            pool = proc.pool
            if head.need is not None:   # resources.place: take it alone, pass it over, or wait
                verdict = place(pool, head, proc, busy)
                if verdict is SKIP:
                    skipped.add(head.tag)
                    continue
                if verdict is TAKE:
                    tasks.append(self._pop(queue) if picked is None else self._take(queue, picked, proc))
                break
            if pool is not None and pool.tight and not pool.room_for_plain(proc, busy):
                break   # its host's cores are held (or kept for a task that needs several)
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
            task = self._pop(queue) if picked is None else self._take(queue, picked, proc)
            tasks.append(task)
            size += len(task.payload or b"")
            if limits:
                most = limits.get(task.tag)
                if most is not None:
                    taken[task.tag] = taken.get(task.tag, 0) + 1
                    if running.get(task.tag, 0) + taken[task.tag] >= most:
                        skipped.add(task.tag)
            if task.suspect:
                proc.runs_suspect = True
                break
        return tasks

    def _pop(self, queue: Queue) -> Task:
        task = queue.popleft()
        if not queue:
            del self._queues[task.tag]
        self.waiting_count -= 1
        return task

    def _take(self, queue: Queue, task: Task, proc: ProcessRecord) -> Task:
        """Take ``task``, the head of ``queue`` or not, for ``proc``: it owns the task's key from now on."""
        if queue[0] is task:
            queue.popleft()
        else:
            queue.remove(task)
        if not queue:
            del self._queues[task.tag]
        self.waiting_count -= 1
        if task.affinity is not None:
            self.affinity.left(task)
            self.affinity.assigned(task, proc.process_id)
        return task

    def waiting_needs(self) -> Dict[str, Set[Need]]:
        """The needs of the waiting tasks, per tag that ever had one (for ``resources.unmet``)."""
        return {tag: {task.need for task in self._queues[tag] if task.need is not None}
                for tag in self.needy_tags if tag in self._queues}

    def _best_queue(self, tags: FrozenSet[str], every: bool, skipped: Set[str]) -> Optional[Queue]:
        """The queue, among the tags handled (``every``: all) but ``skipped``, whose head comes first."""
        best: Optional[Queue] = None
        for tag, queue in self._queues.items():
            if (every or tag in tags) and tag not in skipped and \
                    (best is None or queue_key(queue[0]) < queue_key(best[0])):
                best = queue
        return best

    def steal(self, thief: ProcessRecord, processes: Iterable[ProcessRecord],
              now: float) -> Optional[Tuple[ProcessRecord, Task]]:
        """A task another slave holds unstarted that the idle ``thief`` should run instead.

        From the slave with the most queued work, its last unstarted task
        of the highest priority that the thief can run, taken from that slave and
        listed in its ``revoked`` assignments; None if no slave holds more than
        the task it runs.
        """
        if thief.tags is None or thief.running:   # not a slave (thief.is_slave), or not idle
            return None
        pool = thief.pool
        if pool is not None and pool.tight and not pool.room_for_plain(thief, False):
            return None   # its host's cores are held (resources.py)
        best: Optional[Tuple[ProcessRecord, List[Task]]] = None
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
                best, most_queued = (victim, unstarted), queued
        if best is None:
            return None
        victim, unstarted = best
        task = max(reversed(unstarted), key=_priority)   # the first of the most urgent from the end
        assert task.assignment is not None, f"task {task.task_id} held without an assignment"
        del victim.running[task.assignment]
        victim.revoked.append(task.assignment)
        if task.affinity is not None:
            self.affinity.assigned(task, thief.process_id)
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
