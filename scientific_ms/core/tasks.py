"""A task's record and the states it moves through: every legal move is here.

::

   requestTask
        |
        v         assign            answer (result)
     WAITING --------------> RUNNING --------------> FINISHED ---+
        ^                     |   |                              | retrieveResult
        +---------------------+   | answer (exception),          v
          slave left or lost      | time limit, poison       DELIVERED
          (front of the queue)    +-------------> FAILED --------^  (record dropped)

     WAITING --> FINISHED / FAILED: a late answer from a slave presumed
     dead arrives after its task was requeued (the first answer wins).

Every assignment of a task to a slave gets its own number, so an answer
from an earlier assignment (a slave presumed dead that comes back) is
recognised. The first answer wins; later ones are dropped.
"""

from __future__ import annotations

import collections
import enum
import itertools
from typing import TYPE_CHECKING, Counter, Dict, FrozenSet, List, Optional, Tuple

from ..errors import ConfigurationError
from ..wire.payload import Payload

if TYPE_CHECKING:
    from .affinity import Affinity
    from .needs import Need
    from .resources import Grant
    from .steering import Retry

#: A slave registered with this tag runs tasks of every tag (the Executor's
#: function runner, whose tasks are tagged with their function's name).
ANY_TAG = "*"


def handles(tags: FrozenSet[str], tag: str) -> bool:
    """Can a slave registered with ``tags`` run a task of ``tag``? (``ANY_TAG``: every tag.)"""
    return tag in tags or ANY_TAG in tags


class TaskState(str, enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"     # result stored, not yet retrieved
    FAILED = "failed"         # exception stored, not yet retrieved
    DELIVERED = "delivered"   # handed to the master; the record is gone

#: The states as plain module names: a member looked up on its enum class costs about 0.1 µs,
#: and a task passes a dozen such lookups on its way through the master.
WAITING, RUNNING, FINISHED, FAILED, DELIVERED = (TaskState.WAITING, TaskState.RUNNING, TaskState.FINISHED,
                                                 TaskState.FAILED, TaskState.DELIVERED)


#: The legal moves of a task; :func:`check_move` enforces them.
TRANSITIONS: Dict[TaskState, FrozenSet[TaskState]] = {
    WAITING: frozenset({RUNNING, FINISHED, FAILED}),
    RUNNING: frozenset({WAITING, FINISHED, FAILED}),
    FINISHED: frozenset({DELIVERED}),
    FAILED: frozenset({DELIVERED}),
    DELIVERED: frozenset(),
}

#: States of a task that has not been answered yet.
UNANSWERED = (WAITING, RUNNING)
#: States of a task the master still has to hear about.
OUTSTANDING = (WAITING, RUNNING, FINISHED, FAILED)


def check_move(task: Task, new: TaskState) -> None:
    """Raise AssertionError unless ``task`` may move to ``new`` (a bug, never user error)."""
    if new not in TRANSITIONS[task.state]:
        raise AssertionError(f"illegal transition of task {task.task_id}: "
                             f"{task.state.value} -> {new.value}")


def check_request(tag: object, time_limit: object) -> None:
    """Raise ConfigurationError, saying why, unless a task of ``tag`` with ``time_limit`` can be queued."""
    if not isinstance(tag, str) or not tag.isidentifier():
        raise ConfigurationError(
            f"task tag must be a Python identifier (the slave calls do_<tag>), got {tag!r}")
    if time_limit is not None and not (isinstance(time_limit, (int, float)) and time_limit > 0):
        raise ConfigurationError(f"time_limit must be a positive number of seconds or None, "
                                 f"got {time_limit!r}")


class Task:
    """One task request. Kept small: a queue may hold millions of these."""

    __slots__ = ("task_id", "tag", "payload", "state", "seq", "rescheduled",
                 "assignment", "process_id", "started", "lost_slaves", "suspect",
                 "answer", "traceback", "time_limit", "priority", "retry", "attempts", "failed_on",
                 "need", "held", "affinity")

    def __init__(self, task_id: str, tag: str, payload: Optional[Payload], seq: int,
                 time_limit: Optional[float] = None, priority: float = 0, retry: Optional[Retry] = None,
                 attempts: int = 0):
        self.task_id = task_id
        self.tag = tag
        self.payload: Optional[Payload] = payload  # pickled parameters
        self.state = WAITING
        self.seq = seq
        self.rescheduled = False
        self.assignment: Optional[int] = None
        self.process_id: Optional[int] = None
        self.started = 0.0
        self.lost_slaves: List[str] = []   # slaves that died while running it alone
        self.suspect = False               # held by a slave that died: from now on it runs alone
        self.answer: Optional[Payload] = None  # pickled result or exception
        self.traceback = ""
        self.time_limit = time_limit      # seconds, or None
        self.priority = priority          # higher goes first among waiting tasks
        self.retry = retry                # a scheduling.Retry (shared by many tasks), or None
        self.attempts = attempts          # failed attempts so far (retried ones)
        #: (process id, description) of each slave a retried attempt failed on; None before the first
        self.failed_on: Optional[List[Tuple[int, str]]] = None
        self.need: Optional[Need] = None    # resources it needs while it runs (``resources.py``)
        self.held: Optional[Grant] = None   # the resources it holds while it runs
        self.affinity: Optional[Affinity] = None   # its key, when it prefers a slave (``affinity.py``)

    @property
    def gpus(self) -> Optional[Tuple[int, ...]]:
        """The GPU ids it was given (None: it was given none); travels with it to its slave."""
        held = self.held
        return held.gpus if held is not None and held.gpus else None

    @property
    def cores(self) -> Optional[int]:
        """The cores it holds while it runs (None: it holds no resources); travels with it to its
        slave, which gives it the launcher line of an MPI program on that many (``mpi_program.py``)."""
        held = self.held
        return held.need.cores if held is not None else None


class TaskTable:
    """Every task not yet delivered, by id, with a count per state and tag.

    :meth:`move` is the one place a task changes state.
    """

    def __init__(self):
        self._tasks: Dict[str, Task] = {}
        self._counts: Dict[TaskState, Counter[str]] = {
            state: collections.Counter() for state in TaskState}
        self._numbers = itertools.count(1)

    def new(self, tag: str, payload: Optional[Payload], time_limit: Optional[float],
            priority: float = 0, retry: Optional[Retry] = None, attempts: int = 0) -> Task:
        """A new WAITING task with a fresh id, ``<tag>_<n>`` (options: see :class:`Task`)."""
        number = next(self._numbers)
        task = Task(f"{tag}_{number}", tag, payload, number, time_limit, priority, retry, attempts)
        self._tasks[task.task_id] = task
        self._counts[WAITING][tag] += 1
        return task

    def get(self, task_id: str) -> Optional[Task]:
        return self._tasks.get(task_id)

    def move(self, task: Task, new: TaskState) -> None:
        check_move(task, new)
        if task.held is not None and task.state is RUNNING:
            task.held.release()   # its resources are free again (``resources.py``)
            task.held = None
        self._counts[task.state][task.tag] -= 1
        self._counts[new][task.tag] += 1
        task.state = new
        if new is DELIVERED:
            del self._tasks[task.task_id]

    def forget(self, task: Task) -> None:
        """Drop a WAITING task that was withdrawn (cancelled): it leaves every state."""
        if task.state is not WAITING:
            raise AssertionError(f"only a waiting task can be withdrawn, not {task.task_id} ({task.state.value})")
        self._counts[WAITING][task.tag] -= 1
        del self._tasks[task.task_id]

    def running(self) -> Counter[str]:
        """Running tasks per tag (the live count: it changes as tasks move)."""
        return self._counts[RUNNING]

    def outstanding(self, tag: Optional[str] = None) -> int:
        """Tasks (with ``tag``) the master has not received yet."""
        if tag is None:
            return len(self._tasks)
        return sum(self._counts[state][tag] for state in OUTSTANDING)

    def counts(self) -> Dict[str, Dict[str, int]]:
        """{"waiting": {tag: n}, "running": ..., "finished": ..., "failed": ...}."""
        return {state.value: {tag: n for tag, n in self._counts[state].items() if n}
                for state in TaskState if state is not DELIVERED}
