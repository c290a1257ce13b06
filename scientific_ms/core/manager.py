"""The task manager: one lock over the task table, the scheduler, the registry and the results.

The facade that the master calls directly and ``server.py`` exposes to
slaves. It owns the lock, the conditions threads wait on, the table of
tasks and their state counts, and the shared data; each decision it
delegates to the module that owns it:

- ``tasks.py``: the states, their legal moves, the table of tasks;
- ``scheduling.py``: the waiting queues and who gets which task;
- ``registry.py``: the registered processes and their liveness, applied
  by ``processes.py`` (:class:`ProcessSide`, this class's base: registration,
  heartbeats, losses);
- ``results.py``: answers waiting for the master, delivered exactly once;
- ``shared_data.py``: values stored once for every slave (its own lock).

Lock rules: every public method takes ``self._lock`` once; methods whose
name starts with ``_`` expect it held. Nothing here does I/O. Threads wait
on conditions built on that lock, never by polling.

Two clocks: ``clock`` (injectable, a fake in tests) times liveness and task
ages; blocking waits always use real time.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from ..errors import ConfigurationError, NoTasksPendingError, TaskManagerTermination
from ..wire.payload import dumps_value
from .processes import TIME_LIMIT_GRACE, ProcessSide
from .registry import ProcessRecord, Registry
from .budget import MemoryBudget
from .results import Outcome, ResultStore
from .scheduling import Scheduler, Waiter, WaitingSlaves
from .status import snapshot
from .shared_data import SharedData
from .tasks import Task, TaskState, TaskTable, check_request

__all__ = ["TaskManager", "Outcome", "TIME_LIMIT_GRACE"]

log = logging.getLogger(__name__)


class TaskManager(ProcessSide):
    """Stores task requests, results, shared data and the registered processes.

    Keyword options:
        clock: time source for liveness (default ``time.monotonic``).
        missed_heartbeats: a process whose last sign of life is older than
            this many of its watchdog periods is declared dead (default 4).
        max_slave_losses: a task that lost this many slaves is answered with
            :class:`SlaveLostError` instead of being run again (default 3).
        memory_budget: bytes of parameters of waiting tasks beyond which
            :meth:`add_task` waits for slaves to take some, and of answers
            not yet retrieved beyond which slaves get no new tasks (None:
            no bound). Neither waits while the other side is over budget,
            so the two cannot wait for each other.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 missed_heartbeats: float = 4, max_slave_losses: int = 3,
                 memory_budget: Optional[int] = None):
        if missed_heartbeats <= 0:
            raise ConfigurationError(f"missed_heartbeats must be > 0, got {missed_heartbeats!r}")
        if int(max_slave_losses) < 1:
            raise ConfigurationError(f"max_slave_losses must be >= 1, got {max_slave_losses!r}")
        self.missed_heartbeats = missed_heartbeats
        self.max_slave_losses = int(max_slave_losses)
        self._clock = clock
        self._lock = threading.Lock()
        self._answer_ready = threading.Condition(self._lock)
        self._slaves_changed = threading.Condition(self._lock)
        self._terminated = False
        self._terminated_event = threading.Event()
        self._assignment_numbers = itertools.count(1)
        self._tasks = TaskTable()
        self._scheduler = Scheduler(self.max_slave_losses)
        self._registry = Registry()
        self.counters = collections.Counter()  # requested, finished, failed, delivered, ...
        self._results = ResultStore(self._tasks, self.counters)
        self._waiters = WaitingSlaves()
        self._budget = MemoryBudget(memory_budget)
        self._room = threading.Condition(self._lock)   # a request waits here for the budget
        self._room_waiting = 0
        self._task_started = threading.Condition(self._lock)   # wait_for_running waits here
        self._task_started_waiting = 0
        self._data = SharedData()
        self._started = clock()
        self.data_fetches = self._data.fetches     # label -> times retrieved
        #: Called, outside the lock, with the answers ``store_answers`` accepted:
        #: a list of (task_id, ok, payload, traceback). The master's journal sets it.
        self.on_answers: Optional[Callable[[List[Tuple[str, bool, bytes, str]]], None]] = None

    # ---------------------------------------------------------------- tasks: master

    def add_task(self, tag: str, payload: bytes, time_limit: Optional[float] = None) -> str:
        """Queue a task whose parameters are already pickled; returns its id.

        ``time_limit``: seconds its handler may run (None: no limit).
        """
        return self.add_tasks(tag, [payload], time_limit)[0]

    def add_tasks(self, tag: str, payloads: Iterable[bytes], time_limit: Optional[float] = None) -> List[str]:
        """Queue a task for each of ``payloads`` (pickled parameters), in order; returns their ids.

        One lock for all of them: an Executor's map queues its chunks so.
        """
        check_request(tag, time_limit)
        task_ids = []
        with self._lock:
            for payload in payloads:
                self._check_running()
                while self._budget.requests_wait(len(payload)):
                    self._room_waiting += 1
                    try:
                        self._room.wait()
                    finally:
                        self._room_waiting -= 1
                    self._check_running()
                task = self._tasks.new(tag, payload, time_limit)
                self._enqueue(task, front=False)
                self.counters["requested"] += 1
                task_ids.append(task.task_id)
        return task_ids

    def add_answered_task(self, tag: str, ok: bool, answer: bytes, traceback: str = "") -> str:
        """Add a task whose answer is already known (journaled); it is never run.

        It counts as requested and then finished (or failed), and
        ``get_answer`` delivers it like any other. Returns its id.
        """
        with self._lock:
            self._check_running()
            task = self._tasks.new(tag, None, None)   # never queued: WAITING -> FINISHED/FAILED
            self.counters["requested"] += 1
            self._results.settle(task, ok, answer, traceback, self._clock())
            self._budget.result_bytes += len(answer)
            self._answer_ready.notify_all()
            return task.task_id

    def cancel_task(self, task_id: str) -> bool:
        """Withdraw a task that no slave has started; False if it runs, is answered or is unknown.

        A withdrawn task is forgotten: it yields no answer, and a late answer
        for it (from a slave presumed dead) is dropped.
        """
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None or task.state is not TaskState.WAITING:
                return False
            self._scheduler.remove(task)
            self._budget.waiting_bytes -= len(task.payload or b"")
            self._tasks.forget(task)
            task.payload = None
            self.counters["cancelled"] += 1
            self._make_room()
            self._answer_ready.notify_all()   # a get_answer waiting for it alone must not wait forever
            return True

    def get_answer(self, tag: Optional[str] = None, timeout: Optional[float] = None) -> Outcome:
        """Remove and return the oldest finished or failed task (with ``tag``, if given).

        Blocks until one is there. Raises TaskManagerTermination once
        terminated, NoTasksPendingError if nothing matching is outstanding,
        TimeoutError after ``timeout`` seconds.
        """
        return self.get_answers(1, tag, timeout)[0]

    def get_answers(self, limit: int, tag: Optional[str] = None, timeout: Optional[float] = None) -> List[Outcome]:
        """Up to ``limit`` of the oldest answers, oldest first: ``get_answer`` for all there are.

        Waits (and raises) as ``get_answer`` does until there is one; then
        takes what else is there without waiting.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                budget = self._budget
                held_back = budget.results_full()
                outcomes = []
                while len(outcomes) < limit:
                    outcome = self._results.deliver(tag)
                    if outcome is None:
                        break
                    budget.result_bytes -= len(outcome.payload)
                    outcomes.append(outcome)
                if outcomes:
                    if self._room_waiting:
                        self._room.notify_all()
                    if held_back and not budget.results_full():
                        self._pass_wake_up_on(None)   # slaves held back may take tasks again
                    return outcomes
                self._check_running()
                if not self._tasks.outstanding(tag):
                    what = "no task" if tag is None else f"no task with tag {tag!r}"
                    raise NoTasksPendingError(
                        f"retrieveResult would wait forever: {what} is waiting, running or "
                        f"finished (requestTask first; {self.counters['delivered']} results "
                        f"were already retrieved)")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no result within {timeout} s")
                self._answer_ready.wait(remaining)

    def expect_duration(self, tag: str, seconds: float) -> None:
        """Tell the scheduler how long tasks of ``tag`` take until it has measured them.

        Without a hint a new tag counts as long: its tasks go one at a time
        to idle slaves until the first answers say how long they take.
        """
        if not (isinstance(seconds, (int, float)) and seconds >= 0):
            raise ConfigurationError(f"expect_duration: seconds must be a number >= 0, got {seconds!r}")
        with self._lock:
            self._scheduler.durations.expect(tag, float(seconds))

    # ----------------------------------------------------------------- tasks: slaves

    def take_tasks(self, process_id: int, max_tasks: int = 1,
                   timeout: float = 0.0) -> List[Task]:
        """Assign up to ``max_tasks`` tasks that the process can run.

        Waits up to ``timeout`` seconds for the first one. The caller reads
        each task's ``task_id``, ``assignment``, ``tag``, ``payload`` and
        ``time_limit``. Raises TaskManagerTermination, or UnknownProcessError
        if the process is unknown (declared dead: it should register again).
        """
        assigned, unknown = self.take_tasks_for([(process_id, max_tasks)], timeout)
        if unknown:
            self._live_process(process_id)   # raises the error that says why
        return assigned.get(process_id, [])

    def take_tasks_for(self, wants: Iterable[Tuple[int, int]],
                       timeout: float = 0.0) -> Tuple[Dict[int, List[Task]], List[int]]:
        """Assign tasks to several processes at once (the slaves behind a node agent).

        ``wants``: (process_id, max_tasks) pairs. Waits up to ``timeout``
        seconds until at least one of them gets a task. Returns
        ({process_id: tasks}, [ids of unknown processes]); raises
        TaskManagerTermination.
        """
        wants = [(process_id, max(1, int(count))) for process_id, count in wants]
        deadline = None
        woken = False
        with self._lock:
            try:
                while True:
                    self._check_running()
                    assigned: Dict[int, List[Task]] = {}
                    unknown: List[int] = []
                    live: List[ProcessRecord] = []
                    now = self._clock()
                    may_steal = True   # once per call: a steal scans the slaves that hold work
                    for process_id, count in wants:
                        proc = self._registry.get(process_id)
                        if proc is None:
                            unknown.append(process_id)
                            continue
                        proc.last_seen = now
                        live.append(proc)
                        if not (self._scheduler.waiting_count or may_steal):
                            continue   # nothing left to give: the rest only wait
                        tasks = self._assign(proc, count, may_steal)
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
                    # One waiter for them all: a task that any of them can run wakes us.
                    tags = live[0].tags if len(live) == 1 else frozenset().union(*(p.tags for p in live))
                    waiter = Waiter(tuple(proc.process_id for proc in live), tags, self._lock)
                    self._waiters.add(waiter)
                    for proc in live:
                        proc.waiting += 1
                    try:
                        waiter.condition.wait(deadline - now)
                    finally:
                        now = self._clock()
                        self._waiters.discard(waiter)
                        for proc in live:
                            proc.waiting -= 1
                            proc.last_seen = now
                        woken = waiter.woken
            finally:
                if woken:
                    # Woken for a task but leaving without one (its process left,
                    # it runs a suspect, time ran out): pass the wake-up on.
                    self._pass_wake_up_on(wants[0][0] if len(wants) == 1 else None)

    def store_answers(self, process_id: Optional[int], answers: Iterable) -> int:
        """Store results and exceptions; the first answer for a task wins.

        ``answers``: :class:`~scientific_ms.protocol.Answer` records (or
        tuples in that order). Answers from a process declared dead are
        still taken if they are first. Returns how many were accepted; the
        rest are dropped and logged.
        """
        return self.store_answers_of([(process_id, answers)])

    def store_answers_of(self, batches: Iterable[Tuple[Optional[int], Iterable]]) -> int:
        """:meth:`store_answers` for several processes at once (a node agent's slaves):
        ``batches`` holds (process_id, answers) pairs."""
        accepted = 0
        settled = [] if self.on_answers is not None else None
        with self._lock:
            now = self._clock()
            for process_id, answers in batches:
                proc = self._registry.get(process_id)
                if proc is not None:
                    proc.last_seen = now
                for answer in answers:
                    task_id, assignment, ok, payload, traceback = answer[:5]
                    if proc is not None:
                        proc.running.pop(assignment, None)
                    task = self._results.unanswered(task_id, assignment, process_id)
                    if task is None:
                        continue
                    if len(answer) > 5 and answer[5] is not None:   # the handler's time
                        self._scheduler.durations.record(task.tag, answer[5])
                    self._settle(task, ok, payload, traceback)
                    if proc is not None:
                        proc.tasks_done += 1
                    accepted += 1
                    if settled is not None:
                        settled.append((task_id, ok, payload, traceback))
            if accepted:
                self._answer_ready.notify_all()
        if settled:
            self.on_answers(settled)
        return accepted

    # ------------------------------------------------------------------ shared data

    def store_data(self, label: str, payload: bytes) -> None:
        self._data.store(label, payload)

    def retrieve_data(self, label: str) -> bytes:
        """The value stored under ``label``; KeyError if there is none."""
        return self._data.retrieve(label)

    def delete_data(self, label: str) -> None:
        self._data.delete(label)

    # ------------------------------------------------------------------ life cycle

    def terminate(self) -> None:
        """Wake every waiting thread; from now on every call raises TaskManagerTermination."""
        with self._lock:
            if self._terminated:
                return
            self._terminated = True
            self._terminated_event.set()
            self._waiters.wake_all()
            self._room.notify_all()
            for proc in self._registry:
                if proc.news is not None:
                    proc.news.notify_all()
            self._answer_ready.notify_all()
            self._slaves_changed.notify_all()
            self._task_started.notify_all()

    @property
    def terminated(self) -> bool:
        return self._terminated

    def wait_terminated(self, timeout: float) -> bool:
        """Block until terminated or ``timeout`` seconds pass; returns ``terminated``."""
        return self._terminated_event.wait(timeout)

    # ------------------------------------------------------------------ status

    def counts(self) -> Dict[str, Dict[str, int]]:
        """Tasks per state and tag: {"waiting": {tag: n}, "running": ..., "finished": ..., "failed": ...}."""
        with self._lock:
            return self._tasks.counts()

    def task_state(self, task_id: str) -> Optional[str]:
        """The state of a task ("waiting", "running", ...); None if unknown or delivered."""
        with self._lock:
            task = self._tasks.get(task_id)
            return None if task is None else task.state.value

    def wait_for_running(self, count: int = 1, timeout: Optional[float] = None) -> bool:
        """Block until at least ``count`` tasks are running on slaves; False on timeout."""
        with self._lock:
            self._task_started_waiting += 1
            try:
                return self._wait_until(
                    self._task_started, lambda: sum(self._tasks.counts()["running"].values()) >= count, timeout)
            finally:
                self._task_started_waiting -= 1

    def status(self) -> dict:
        """A snapshot of everything ``task_manager show`` reports (plain data)."""
        with self._lock:
            now = self._clock()
            return snapshot(now, now - self._started, self._terminated, self._registry,
                            self._tasks.counts(), dict(self.counters),
                            self._results.completion_rate.rate(now, now - self._started))

    # ------------------------------------------------------------------ internals

    def _check_running(self) -> None:
        if self._terminated:
            raise TaskManagerTermination("the task manager has been terminated")

    def _enqueue(self, task: Task, front: bool) -> None:
        self._scheduler.enqueue(task, front)
        self._budget.waiting_bytes += len(task.payload or b"")
        self._waiters.wake_one(task.tag)

    def _make_room(self) -> None:
        """Wake requests waiting for the memory budget (if any: this runs for every task)."""
        if self._room_waiting:
            self._room.notify_all()

    def _pass_wake_up_on(self, process_id: Optional[int]) -> None:
        """Wake another thread for every tag still waiting (not one of ``process_id``'s)."""
        for tag in list(self._scheduler.waiting_tags()):
            self._waiters.wake_one(tag, skip=process_id)

    def _assign(self, proc: ProcessRecord, max_tasks: int, may_steal: bool = True) -> List[Task]:
        if self._budget.hold_back_slaves():
            return []
        tasks = self._scheduler.select(proc, max_tasks, self._registry.slave_count,
                                       lambda tag: self._waiters.idle_for(tag, proc.process_id))
        for task in tasks:
            self._tasks.move(task, TaskState.RUNNING)
            self._budget.waiting_bytes -= len(task.payload or b"")
        if tasks:
            self._make_room()
            if self._task_started_waiting:
                self._task_started.notify_all()
        if not tasks and may_steal:
            stolen = self._scheduler.steal(proc, self._registry.holders(), self._clock())
            if stolen is not None:
                victim, task = stolen
                if victim.news is not None:
                    victim.news.notify_all()   # its watch tells it to drop the task
                self.counters["stolen"] += 1
                tasks = [task]
        now = self._clock()
        for task in tasks:
            task.assignment = next(self._assignment_numbers)
            task.process_id = proc.process_id
            task.started = now
            proc.running[task.assignment] = task
            if task.time_limit is not None:
                self._registry.time_limits_used = True
        if len(proc.running) > 1:
            self._registry.may_hold_unstarted(proc)
        return tasks

    def _settle(self, task: Task, ok: bool, payload: bytes, traceback: str) -> None:
        """Store a task's answer (any state before FINISHED/FAILED)."""
        if task.state is TaskState.WAITING:
            self._scheduler.remove(task)
            self._budget.waiting_bytes -= len(task.payload or b"")
            self._make_room()
        elif task.state is TaskState.RUNNING:
            holder = self._registry.get(task.process_id)
            if holder is not None:
                holder.running.pop(task.assignment, None)
        self._results.settle(task, ok, payload, traceback, self._clock())
        self._budget.result_bytes += len(payload)
        if self._budget.results_full():
            self._make_room()   # a request waiting for room must not wait for this

    def _fail(self, task: Task, error: Exception) -> None:
        self._settle(task, False, dumps_value(error), f"{type(error).__name__}: {error}\n")

    def _requeue(self, task: Task) -> None:
        self._tasks.move(task, TaskState.WAITING)
        task.assignment = None
        task.process_id = None
        task.rescheduled = True
        self.counters["rescheduled"] += 1
        self._enqueue(task, front=True)
