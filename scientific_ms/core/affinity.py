"""Affinity: a task goes preferably to the slave that last ran a task with its key.

``request_task(..., affinity=key)``: the key names what the task loads (a
database, a file, a model), so that the slave which has it loaded already
runs the task. A preference, never a hold-up:

- **Owners.** The slave a task with key k was last assigned to owns k
  (:class:`Affinities`, a map key -> process id bounded to ``MAX_KEYS``,
  least recently assigned forgotten first). A key whose owner left or died
  has no owner: the owner is looked up among the registered processes at
  each use (process ids are never reused), so a departure costs nothing.
- **Preference.** A slave looking at a tag's queue takes, among the tasks
  of the first one's priority, a task of a key it owns first (looking at
  most ``SCAN`` tasks deep).
- **Patience.** A slave passes over a task whose key another registered
  slave owns (one that can run its tag), until the task has waited about its own estimated duration
  (its tag's average, ``durations.py``, or ``DEFAULT_PATIENCE`` while its
  tag has none) since a slave first passed it over: since another slave
  could have run it. Not since it was queued: a task behind a long queue
  would then have used up its patience before any slave looked at it. A
  task queued again starts afresh. Then any slave takes it. A slave that passed one over waits for work no
  longer than until that task's patience ends (:attr:`Affinities.soonest`,
  read by ``traffic.py``), so no task is stranded while a slave is idle.
- Tasks without a key cost nothing: while none waits (``Affinities.waiting``)
  the scheduler never calls this module. A retried task (it leaves a slave
  it failed on) and a suspect ignore their key.

Pure and lock-free, called by ``scheduling.py`` under the manager's lock.
"""

from __future__ import annotations

import collections
import itertools
import math
from typing import Callable, Dict, Hashable, Iterable, Optional

from ..errors import ConfigurationError
from . import flow
from .registry import ProcessRecord
from .tasks import ANY_TAG, Task

#: Most keys remembered; the least recently assigned is forgotten first.
MAX_KEYS = 100_000
#: How many tasks deep a slave looks into a tag's queue, past those left to others and for its own.
SCAN = 64
#: How long (seconds) a task waits for its key's owner while its tag has no estimate yet.
DEFAULT_PATIENCE = flow.TARGET_QUEUE_SECONDS

#: Looks up a registered process by id (``Registry.get``): None once it left or died.
Find = Callable[[int], Optional[ProcessRecord]]


def check_affinity(key: object) -> Hashable:
    """Raise ConfigurationError, saying why, unless ``key`` can be an affinity key; the key."""
    try:
        hash(key)
    except TypeError:
        raise ConfigurationError(f"affinity must be a hashable value (a name, a path, a number), "
                                 f"got {type(key).__name__} {key!r}") from None
    return key


class Affinity:
    """A task's key and when a slave first passed it over (the start of its patience)."""

    __slots__ = ("key", "since")

    def __init__(self, key: Hashable):
        self.key = key
        self.since: Optional[float] = None   # None: no slave passed it over yet


def patience(estimate: Optional[float]) -> float:
    """How long a task waits for its key's owner, given its tag's estimate (None: not measured)."""
    return DEFAULT_PATIENCE if estimate is None else estimate


class Affinities:
    """Which slave owns each key, and how many tasks with a key wait per tag."""

    def __init__(self, max_keys: int = MAX_KEYS):
        self.max_keys = max_keys
        self._owners: collections.OrderedDict[Hashable, int] = collections.OrderedDict()
        self.waiting: Dict[str, int] = {}   # tag -> waiting tasks with a key (empty: nothing to do)
        #: The earliest end of patience of a task passed over since the caller last reset it to inf.
        self.soonest = math.inf

    def __len__(self) -> int:
        return len(self._owners)

    # ------------------------------------------------------------------ counts

    def queued(self, task: Task) -> None:
        """A task with a key joins its queue (again): its patience starts afresh."""
        assert task.affinity is not None
        task.affinity.since = None
        self.waiting[task.tag] = self.waiting.get(task.tag, 0) + 1

    def left(self, task: Task) -> None:
        """A task with a key leaves its queue (taken, cancelled or answered)."""
        count = self.waiting[task.tag] - 1
        if count:
            self.waiting[task.tag] = count
        else:
            del self.waiting[task.tag]

    # ------------------------------------------------------------------ owners

    def owner(self, key: Hashable, find: Find) -> Optional[ProcessRecord]:
        """The registered slave that owns ``key``; None if none does (a leaver's keys are dropped here)."""
        process_id = self._owners.get(key)
        if process_id is None:
            return None
        proc = find(process_id)
        if proc is None:
            del self._owners[key]
        return proc

    def assigned(self, task: Task, process_id: int) -> None:
        """``task`` (with a key) went to ``process_id``: that slave owns its key now."""
        assert task.affinity is not None
        owners = self._owners
        owners[task.affinity.key] = process_id
        owners.move_to_end(task.affinity.key)
        if len(owners) > self.max_keys:
            owners.popitem(last=False)

    # ------------------------------------------------------------------ the choice

    def choose(self, queue: Iterable[Task], ordered: bool, proc: ProcessRecord, now: float, find: Find,
               estimate: Callable[[str], Optional[float]], order: Callable[[Task], tuple]) -> Optional[Task]:
        """The task ``proc`` takes next from a tag's ``queue`` (None: it leaves them all to others).

        ``ordered``: the queue iterates in its order (a deque; a heap is sorted
        here, ``SCAN`` of its entries, by ``order``). Passes over a task whose
        key another slave owns while its patience lasts (noting when it ends in
        :attr:`soonest`), and prefers, among those of the first takeable task's
        priority, a task whose key ``proc`` owns.
        """
        candidates: Iterable[Task] = itertools.islice(queue, SCAN)
        if not ordered:
            candidates = sorted(candidates, key=order)
        first: Optional[Task] = None
        for task in candidates:
            if first is not None and task.priority != first.priority:
                break
            affinity = task.affinity
            if affinity is None or task.failed_on is not None or task.suspect:
                if first is None:
                    first = task
                continue
            owner = self.owner(affinity.key, find)
            if owner is proc:
                return task   # its own key: first among its priority
            if owner is not None and owner.tags is not None and (task.tag in owner.tags or ANY_TAG in owner.tags):
                if affinity.since is None:
                    affinity.since = now   # the first slave that could have run it
                end = affinity.since + patience(estimate(task.tag))
                if now < end:
                    if end < self.soonest:
                        self.soonest = end
                    continue   # left to its owner, for now
            if first is None:
                first = task
        return first
