"""The task manager: task queues, results, shared data and the process registry.

Pure logic, no network code. One lock guards all state; threads wait on
conditions built on that lock, never by polling. The Pyro5 adapter in
``server.py`` exposes this object to slaves; the master calls it directly.

Lock rules: every public method takes ``self._lock`` once; methods whose
name starts with ``_`` expect it held. Nothing here does I/O while holding it.

Two clocks: ``clock`` (injectable, a fake in tests) times liveness and task
ages; blocking waits always use real time.
"""

from __future__ import annotations

import collections
import itertools
import logging
import pickle
import threading
import time
from typing import Callable, Deque, Dict, FrozenSet, Iterable, List, NamedTuple, Optional, Tuple

from .errors import (ConfigurationError, NoTasksPendingError, SlaveLostError,
                     TaskManagerTermination, TaskTimeLimitError, UnknownProcessError)
from .tasks import ANY_TAG, ProcessRecord, Task, TaskState

log = logging.getLogger(__name__)

#: Legal moves of a task; everything goes through ``TaskManager._move``.
_TRANSITIONS = {
    TaskState.WAITING: {TaskState.RUNNING, TaskState.FINISHED, TaskState.FAILED},
    TaskState.RUNNING: {TaskState.WAITING, TaskState.FINISHED, TaskState.FAILED},
    TaskState.FINISHED: {TaskState.DELIVERED},
    TaskState.FAILED: {TaskState.DELIVERED},
    TaskState.DELIVERED: set(),
}

#: An answer from a slave: (task_id, assignment, ok, pickled result or exception, traceback text)
Answer = Tuple[str, int, bool, bytes, str]


class Outcome(NamedTuple):
    """A finished task as handed to the master."""
    task_id: str
    tag: str
    ok: bool          # False: ``payload`` is a pickled exception
    payload: bytes
    traceback: str

#: The slave interrupts a handler at its time limit; the master reports the
#: task itself only this much later, if the slave has not answered by then.
TIME_LIMIT_GRACE = 5.0

#: A batch is cut once its parameters reach this size, so that a slave asking
#: for many small tasks does not also hoard a queue of large ones.
BATCH_PAYLOAD_LIMIT = 4 * 1024 * 1024


class _Waiter:
    """A slave thread blocked in take_tasks, woken when a task it can run arrives."""

    __slots__ = ("process_id", "tags", "condition")

    def __init__(self, process_id: int, tags: FrozenSet[str], lock: threading.Lock):
        self.process_id = process_id
        self.tags = tags
        self.condition = threading.Condition(lock)


class RateMeter:
    """Events per second over a sliding window, in one-second buckets."""

    def __init__(self, window: float = 60.0):
        self.window = int(window)
        self._buckets: Deque[List[int]] = collections.deque()

    def add(self, now: float, count: int = 1) -> None:
        second = int(now)
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += count
        else:
            self._buckets.append([second, count])
            self._trim(second)

    def rate(self, now: float, elapsed: float) -> float:
        self._trim(int(now))
        span = min(float(self.window), max(elapsed, 1e-9))
        return sum(count for _, count in self._buckets) / span

    def _trim(self, second: int) -> None:
        while self._buckets and self._buckets[0][0] <= second - self.window:
            self._buckets.popleft()


#: Counters that ``status()`` always reports (0 until they first move).
STATUS_COUNTERS = ("requested", "finished", "failed", "delivered", "rescheduled",
                   "duplicates_dropped", "processes_lost")


class TaskManager:
    """Stores task requests, results, shared data and the registered processes.

    Keyword options:
        clock: time source for liveness (default ``time.monotonic``).
        missed_heartbeats: a process whose last sign of life is older than
            this many of its watchdog periods is declared dead (default 4).
        max_slave_losses: a task that lost this many slaves is answered with
            :class:`SlaveLostError` instead of being run again (default 3).
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 missed_heartbeats: float = 4, max_slave_losses: int = 3):
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
        self._task_numbers = itertools.count(1)
        self._assignment_numbers = itertools.count(1)
        self._process_numbers = itertools.count(1)
        self._tasks: Dict[str, Task] = {}                  # every task not yet delivered
        self._waiting: Dict[str, Deque[Task]] = {}         # tag -> queue; only non-empty queues
        self._waiting_count = 0
        self._answers: Deque[Task] = collections.deque()   # completion order (lazy deletion)
        self._answers_by_tag: Dict[str, Deque[Task]] = {}
        self._counts = {state: collections.Counter() for state in TaskState}
        self._processes: Dict[int, ProcessRecord] = {}
        self._slave_count = 0
        self._waiters: Dict[_Waiter, None] = {}            # insertion-ordered set
        self._data: Dict[str, bytes] = {}
        self._started = clock()
        self._last_liveness_check: Optional[float] = None
        self._completion_rate = RateMeter()
        self.counters = collections.Counter()  # requested, finished, failed, delivered, ...
        self.data_fetches = collections.Counter()  # label -> times retrieved

    # ------------------------------------------------------------------ processes

    def register_process(self, role: str = "slave", info: Optional[dict] = None,
                         tags: Optional[Iterable[str]] = None,
                         watchdog_period: Optional[float] = None) -> int:
        """Register a process; returns its id. ``tags``: the tasks it can run."""
        if watchdog_period is not None and watchdog_period <= 0:
            raise ConfigurationError(f"watchdog_period must be > 0 or None, got {watchdog_period!r}")
        with self._lock:
            if self._terminated:
                raise TaskManagerTermination("the task manager has been terminated")
            process_id = next(self._process_numbers)
            tagset = frozenset(tags) if tags is not None else None
            self._processes[process_id] = ProcessRecord(
                process_id, role, dict(info or {}), tagset, watchdog_period, self._clock())
            if tagset is not None:
                self._slave_count += 1
                self._slaves_changed.notify_all()
            log.debug("registered %s %s, tags %s", role, process_id, sorted(tagset or ()))
            return process_id

    def unregister_process(self, process_id: int) -> None:
        """A process leaves cleanly; tasks it still holds go back to the queue front."""
        with self._lock:
            self._remove_process(process_id, reason=None)

    def process_lost(self, process_id: int, reason: str) -> bool:
        """Declare a process dead (connection dropped, missed heartbeats).

        Its running tasks go back to the front of the queue, or fail once they
        have lost ``max_slave_losses`` slaves. Returns False if it was unknown.
        """
        with self._lock:
            return self._remove_process(process_id, reason=reason)

    def heartbeat(self, process_id: int, stats: Optional[dict] = None) -> bool:
        """Record a sign of life; False if the process is unknown (declared dead)."""
        with self._lock:
            proc = self._processes.get(process_id)
            if proc is None:
                return False
            proc.last_seen = self._clock()
            if stats:
                proc.stats = dict(stats)
            return True

    def check_liveness(self, expected_interval: Optional[float] = None) -> List[int]:
        """Declare dead every process that missed too many heartbeats; returns their ids.

        ``expected_interval``: how often the caller runs this. If it ran late,
        the master itself was stalled (its threads starved, the machine
        swapping): the heartbeats then wait unread in its sockets, so the
        delay is credited to every process instead of counted as silence.
        """
        with self._lock:
            now = self._clock()
            previous, self._last_liveness_check = self._last_liveness_check, now
            if expected_interval is not None and previous is not None:
                late = now - previous - expected_interval
                if late > expected_interval:
                    log.info("the master stalled for %.1f s; not counted against its slaves", late)
                    for proc in self._processes.values():
                        proc.last_seen = min(now, proc.last_seen + late)
            lost = []
            for proc in list(self._processes.values()):
                period = proc.watchdog_period
                if period is None or proc.waiting:
                    continue   # a slave waiting for work is alive, and holds nothing to reschedule
                silence = now - proc.last_seen
                if silence > self.missed_heartbeats * period:
                    lost.append(proc.process_id)
                    self._remove_process(
                        proc.process_id,
                        reason=f"no heartbeat for {silence:.1f} s (watchdog period {period:g} s)")
            return lost

    def check_time_limits(self) -> List[str]:
        """Report every task that ran ``TIME_LIMIT_GRACE`` s past its limit; returns their ids.

        Normally the slave interrupts the handler at the limit and answers
        first; this catches slaves that cannot (a handler stuck in C code, a
        hung slave). The slave stays registered; a later answer is dropped.
        """
        with self._lock:
            now = self._clock()
            expired = []
            for proc in self._processes.values():
                for task in list(proc.running.values()):
                    limit = task.time_limit
                    if limit is not None and task.state is TaskState.RUNNING and \
                            now - task.started > limit + TIME_LIMIT_GRACE:
                        expired.append(task.task_id)
                        self._fail(task, TaskTimeLimitError(
                            f"task {task.task_id} ran longer than its time limit of {limit:g} s "
                            f"on {proc.describe()}, which did not stop it"))
            if expired:
                self._answer_ready.notify_all()
            return expired

    def wait_for_slaves(self, count: int, timeout: Optional[float] = None) -> bool:
        """Block until at least ``count`` slaves are registered; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._slave_count < count:
                if self._terminated:
                    raise TaskManagerTermination("the task manager has been terminated")
                if deadline is None:
                    self._slaves_changed.wait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._slaves_changed.wait(remaining)
            return True

    def wait_until_no_slaves(self, timeout: float) -> bool:
        """Block until every slave has left; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._slave_count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._slaves_changed.wait(remaining)
            return True

    # ---------------------------------------------------------------- tasks: master

    def add_task(self, tag: str, payload: bytes, time_limit: Optional[float] = None) -> str:
        """Queue a task whose parameters are already pickled; returns its id.

        ``time_limit``: seconds its handler may run (None: no limit).
        """
        if not isinstance(tag, str) or not tag.isidentifier():
            raise ConfigurationError(
                f"task tag must be a Python identifier (the slave calls do_<tag>), got {tag!r}")
        if time_limit is not None and not (isinstance(time_limit, (int, float)) and time_limit > 0):
            raise ConfigurationError(f"time_limit must be a positive number of seconds or None, "
                                     f"got {time_limit!r}")
        with self._lock:
            if self._terminated:
                raise TaskManagerTermination("the task manager has been terminated")
            number = next(self._task_numbers)
            task = Task(f"{tag}_{number}", tag, payload, number, time_limit)
            self._tasks[task.task_id] = task
            self._counts[TaskState.WAITING][tag] += 1
            self._enqueue(task, front=False)
            self.counters["requested"] += 1
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
            self._unqueue(task)
            self._counts[TaskState.WAITING][task.tag] -= 1   # it leaves every state: no _move
            del self._tasks[task_id]
            task.payload = None
            self.counters["cancelled"] += 1
            self._answer_ready.notify_all()   # a get_answer waiting for it alone must not wait forever
            return True

    def get_answer(self, tag: Optional[str] = None, timeout: Optional[float] = None) -> Outcome:
        """Remove and return the oldest finished or failed task (with ``tag``, if given).

        Blocks until one is there. Raises TaskManagerTermination once
        terminated, NoTasksPendingError if nothing matching is outstanding,
        TimeoutError after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                task = self._pop_answer(tag)
                if task is not None:
                    outcome = Outcome(task.task_id, task.tag, task.state is TaskState.FINISHED,
                                      task.answer, task.traceback)
                    self._move(task, TaskState.DELIVERED)
                    task.answer = None
                    del self._tasks[task.task_id]
                    self.counters["delivered"] += 1
                    return outcome
                if self._terminated:
                    raise TaskManagerTermination("the task manager has been terminated")
                if not self._outstanding(tag):
                    what = "no task" if tag is None else f"no task with tag {tag!r}"
                    raise NoTasksPendingError(
                        f"retrieveResult would wait forever: {what} is waiting, running or "
                        f"finished (requestTask first; {self.counters['delivered']} results "
                        f"were already retrieved)")
                if deadline is None:
                    self._answer_ready.wait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(f"no result within {timeout} s")
                    self._answer_ready.wait(remaining)

    # ----------------------------------------------------------------- tasks: slaves

    def take_tasks(self, process_id: int, max_tasks: int = 1,
                   timeout: float = 0.0) -> List[Task]:
        """Assign up to ``max_tasks`` tasks that the process can run.

        Waits up to ``timeout`` seconds for the first one. The caller reads
        each task's ``task_id``, ``assignment``, ``tag`` and ``payload``.
        Raises TaskManagerTermination, or UnknownProcessError if the process
        is unknown (declared dead: it should register again).
        """
        deadline = None
        with self._lock:
            while True:
                proc = self._live_process(process_id)
                proc.last_seen = self._clock()
                tasks = self._assign(proc, max(1, int(max_tasks)))
                if tasks or timeout <= 0:
                    return tasks
                now = time.monotonic()
                if deadline is None:
                    deadline = now + timeout
                if now >= deadline:
                    return []
                waiter = _Waiter(process_id, proc.tags, self._lock)
                self._waiters[waiter] = None
                proc.waiting += 1
                try:
                    waiter.condition.wait(deadline - now)
                finally:
                    self._waiters.pop(waiter, None)
                    proc.waiting -= 1
                    proc.last_seen = self._clock()

    def store_answers(self, process_id: Optional[int], answers: Iterable[Answer]) -> int:
        """Store results and exceptions; the first answer for a task wins.

        Answers from a process declared dead are still taken if they are
        first. Returns how many were accepted; the rest are dropped and logged.
        """
        accepted = 0
        with self._lock:
            proc = self._processes.get(process_id) if process_id is not None else None
            if proc is not None:
                proc.last_seen = self._clock()
            for task_id, assignment, ok, payload, traceback in answers:
                if proc is not None:
                    proc.running.pop(assignment, None)
                task = self._tasks.get(task_id)
                if task is None or task.state not in (TaskState.WAITING, TaskState.RUNNING):
                    self.counters["duplicates_dropped"] += 1
                    log.info("dropped a second answer for task %s (assignment %s from process %s)",
                             task_id, assignment, process_id)
                    continue
                if task.assignment != assignment:
                    log.info("task %s: late answer from an earlier assignment accepted (first wins)",
                             task_id)
                self._settle(task, ok, payload, traceback)
                if proc is not None:
                    proc.tasks_done += 1
                accepted += 1
            if accepted:
                self._answer_ready.notify_all()
        return accepted

    def return_tasks(self, process_id: int, assignments: Iterable[int]) -> None:
        """A slave gives tasks back unrun (e.g. it has no handler after all)."""
        with self._lock:
            proc = self._processes.get(process_id)
            if proc is None:
                return
            for assignment in assignments:
                task = proc.running.pop(assignment, None)
                if task is not None and task.assignment == assignment:
                    self._requeue(task)

    # ------------------------------------------------------------------ shared data

    def store_data(self, label: str, payload: bytes) -> None:
        with self._lock:
            self._data[label] = payload

    def retrieve_data(self, label: str) -> bytes:
        with self._lock:
            try:
                data = self._data[label]
                self.data_fetches[label] += 1
                return data
            except KeyError:
                raise KeyError(f"no data stored under {label!r} (deleted, or never stored)") from None

    def delete_data(self, label: str) -> None:
        with self._lock:
            self._data.pop(label, None)

    # ------------------------------------------------------------------ life cycle

    def terminate(self) -> None:
        """Wake every waiting thread; from now on every call raises TaskManagerTermination."""
        with self._lock:
            if self._terminated:
                return
            self._terminated = True
            self._terminated_event.set()
            for waiter in list(self._waiters):
                waiter.condition.notify()
            self._answer_ready.notify_all()
            self._slaves_changed.notify_all()

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
            return {state.value: {tag: n for tag, n in self._counts[state].items() if n}
                    for state in TaskState if state is not TaskState.DELIVERED}

    def status(self) -> dict:
        """A snapshot of everything ``task_manager show`` reports (plain data)."""
        with self._lock:
            now = self._clock()
            elapsed = now - self._started
            processes = []
            served: set = set()
            for proc in self._processes.values():
                if proc.tags is not None:
                    served |= proc.tags
                running = [{"task_id": t.task_id, "tag": t.tag, "seconds": round(now - t.started, 3)}
                           for t in proc.running.values()]
                processes.append({
                    "id": proc.process_id, "role": proc.role,
                    "host": proc.info.get("host"), "pid": proc.info.get("pid"),
                    "tags": sorted(proc.tags) if proc.tags is not None else None,
                    "tasks_done": proc.tasks_done, "running": running,
                    "watchdog_period": proc.watchdog_period,
                    "seconds_since_heartbeat": round(now - proc.last_seen, 3),
                    "connected_seconds": round(now - proc.registered, 3),
                    "cpu_percent": proc.stats.get("cpu_percent"),
                    "rss_bytes": proc.stats.get("rss_bytes"),
                })
            waiting = {tag: n for tag, n in self._counts[TaskState.WAITING].items() if n}
            return {
                "terminated": self._terminated,
                "elapsed_seconds": round(elapsed, 3),
                "started_at": round(time.time() - elapsed, 3),  # Unix time; the clock may be a fake
                "processes": processes,
                "tasks": {state.value: {tag: n for tag, n in self._counts[state].items() if n}
                          for state in TaskState if state is not TaskState.DELIVERED},
                "unserved_tags": [] if ANY_TAG in served else sorted(tag for tag in waiting if tag not in served),
                "counters": dict(dict.fromkeys(STATUS_COUNTERS, 0), **self.counters),
                "throughput_per_second": round(self._completion_rate.rate(now, elapsed), 3),
            }

    # ------------------------------------------------------------------ internals

    def _move(self, task: Task, new: TaskState) -> None:
        old = task.state
        if new not in _TRANSITIONS[old]:
            raise AssertionError(f"illegal transition of task {task.task_id}: {old.value} -> {new.value}")
        self._counts[old][task.tag] -= 1
        self._counts[new][task.tag] += 1
        task.state = new

    def _live_process(self, process_id: int) -> ProcessRecord:
        if self._terminated:
            raise TaskManagerTermination("the task manager has been terminated")
        proc = self._processes.get(process_id)
        if proc is None:
            raise UnknownProcessError(
                f"process {process_id} is not registered (it left, or was declared dead)")
        return proc

    def _outstanding(self, tag: Optional[str]) -> int:
        if tag is None:
            return len(self._tasks)
        return sum(self._counts[state][tag] for state in
                   (TaskState.WAITING, TaskState.RUNNING, TaskState.FINISHED, TaskState.FAILED))

    def _enqueue(self, task: Task, front: bool) -> None:
        queue = self._waiting.get(task.tag)
        if queue is None:
            queue = self._waiting[task.tag] = collections.deque()
        if front:
            queue.appendleft(task)
        else:
            queue.append(task)
        self._waiting_count += 1
        for waiter in self._waiters:
            if task.tag in waiter.tags or ANY_TAG in waiter.tags:
                del self._waiters[waiter]
                waiter.condition.notify()
                break

    def _best_queue(self, tags: FrozenSet[str]) -> Optional[Deque[Task]]:
        best = None
        every = ANY_TAG in tags
        for tag, queue in self._waiting.items():
            if (every or tag in tags) and (best is None or queue[0].queue_key < best[0].queue_key):
                best = queue
        return best

    def _assign(self, proc: ProcessRecord, max_tasks: int) -> List[Task]:
        if proc.tags is None or not self._waiting_count:
            return []
        if any(task.suspect for task in proc.running.values()):
            return []   # a suspect runs alone, so that a death can be blamed on it
        if max_tasks > 1:
            # Fair share: never take more than this slave's part of what is left,
            # so the end of a run is spread over every slave.
            max_tasks = min(max_tasks, max(1, self._waiting_count // max(1, self._slave_count)))
        now = self._clock()
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
                del self._waiting[task.tag]
            self._waiting_count -= 1
            self._move(task, TaskState.RUNNING)
            task.assignment = next(self._assignment_numbers)
            task.process_id = proc.process_id
            task.started = now
            proc.running[task.assignment] = task
            tasks.append(task)
            size += len(task.payload or b"")
            if task.suspect:
                break
        return tasks

    def _unqueue(self, task: Task) -> None:
        queue = self._waiting[task.tag]
        if queue[-1] is task:   # the usual case of cancel_task: cancelling the newest first is O(1)
            queue.pop()
        else:
            queue.remove(task)
        if not queue:
            del self._waiting[task.tag]
        self._waiting_count -= 1

    def _settle(self, task: Task, ok: bool, payload: bytes, traceback: str) -> None:
        """Store a task's answer (any state before FINISHED/FAILED)."""
        if task.state is TaskState.WAITING:
            self._unqueue(task)
        elif task.state is TaskState.RUNNING:
            holder = self._processes.get(task.process_id)
            if holder is not None:
                holder.running.pop(task.assignment, None)
        self._move(task, TaskState.FINISHED if ok else TaskState.FAILED)
        task.payload = None
        task.assignment = None
        task.answer = payload
        task.traceback = traceback
        self.counters["finished" if ok else "failed"] += 1
        self._completion_rate.add(self._clock())
        self._answers.append(task)
        queue = self._answers_by_tag.get(task.tag)
        if queue is None:
            queue = self._answers_by_tag[task.tag] = collections.deque()
        queue.append(task)

    def _fail(self, task: Task, error: Exception) -> None:
        self._settle(task, False, pickle.dumps(error, protocol=5), f"{type(error).__name__}: {error}\n")

    def _requeue(self, task: Task) -> None:
        self._move(task, TaskState.WAITING)
        task.assignment = None
        task.process_id = None
        task.rescheduled = True
        self.counters["rescheduled"] += 1
        self._enqueue(task, front=True)

    def _pop_answer(self, tag: Optional[str]) -> Optional[Task]:
        queue = self._answers if tag is None else self._answers_by_tag.get(tag)
        while queue:
            task = queue.popleft()
            if task.state is not TaskState.DELIVERED:
                # Both queues hold it in completion order: it is usually at the other's head too.
                other = self._answers_by_tag.get(task.tag) if tag is None else self._answers
                if other and other[0] is task:
                    other.popleft()
                self._compact_answers()
                return task
        return None

    def _compact_answers(self) -> None:
        # A task delivered through one queue lingers in the other; drop such
        # records once they outnumber the live ones, so memory stays bounded.
        live = self._counts_total(TaskState.FINISHED) + self._counts_total(TaskState.FAILED)
        if len(self._answers) > 2 * live + 1024:
            self._answers = collections.deque(t for t in self._answers if t.state is not TaskState.DELIVERED)
            for tag, queue in list(self._answers_by_tag.items()):
                kept = collections.deque(t for t in queue if t.state is not TaskState.DELIVERED)
                if kept:
                    self._answers_by_tag[tag] = kept
                else:
                    del self._answers_by_tag[tag]

    def _counts_total(self, state: TaskState) -> int:
        return sum(self._counts[state].values())

    def _remove_process(self, process_id: int, reason: Optional[str]) -> bool:
        proc = self._processes.pop(process_id, None)
        if proc is None:
            return False
        proc.lost = reason is not None
        if proc.tags is not None:
            self._slave_count -= 1
        requeued = failed = 0
        held = [task for assignment, task in proc.running.items()
                if task.state is TaskState.RUNNING and task.assignment == assignment]
        for task in reversed(held):   # each goes to the front: keep their order
            if reason is None:
                self._requeue(task)
                requeued += 1
                continue
            task.suspect = True
            if len(held) > 1:
                # It died holding a batch: which one was running is unknown, so none
                # is blamed; each will run alone from now on.
                self._requeue(task)
                requeued += 1
                continue
            task.lost_slaves.append(proc.describe())
            if len(task.lost_slaves) >= self.max_slave_losses:
                self._fail(task, SlaveLostError(
                    f"task {task.task_id} lost its slave {len(task.lost_slaves)} times "
                    f"({'; '.join(task.lost_slaves)}); giving up on it"))
                failed += 1
            else:
                self._requeue(task)
                requeued += 1
        proc.running.clear()
        for waiter in list(self._waiters):
            if waiter.process_id == process_id:
                waiter.condition.notify()
        if failed:
            self._answer_ready.notify_all()
        self._slaves_changed.notify_all()
        if reason is None or self._terminated:
            log.debug("%s left (%s); %d task(s) returned to the queue",
                      proc.describe(), reason or "goodbye", requeued)
        else:
            self.counters["processes_lost"] += 1
            log.warning("%s lost: %s; %d task(s) rescheduled, %d failed after too many losses",
                        proc.describe(), reason, requeued, failed)
        return True
