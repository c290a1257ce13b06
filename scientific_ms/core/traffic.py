"""The task traffic: requests, assignment to slaves, answers, delivery to the master.

:class:`TaskTraffic` is a part that :class:`~scientific_ms.core.manager.TaskManager`
holds and calls with its lock held (``signals.py``). It owns the table of
tasks, the answers not yet delivered, the memory budget and the slave
threads waiting for work; its part ``assignment.py`` hands tasks to the
slaves that ask, and it applies what the scheduler decides
(``scheduling.py``): state moves, requeues, wake-ups. The process
side (``processes.py``) settles no task itself: what a departure or an
overrun costs reaches this class through :meth:`TaskTraffic.take_back` and
:meth:`TaskTraffic.fail_all`.
"""

from __future__ import annotations

import time
from typing import Callable, Counter, Dict, Hashable, Iterable, List, Optional, Tuple

from ..errors import NoTasksPendingError
from ..wire.payload import Payload, dumps_value, loads_answer
from ..wire.protocol import Answer
from .affinity import Affinity
from .assignment import Assignment, Want
from .budget import MemoryBudget
from .failures import RecentFailures
from .needs import Need
from .processes import Departure
from .registry import ProcessRecord, Registry
from .results import Outcome, ResultStore
from .scheduling import Scheduler
from .signals import Signals
from .steering import Retry, attempts_note, retries_again, retry_elsewhere
from .tasks import RUNNING, WAITING, Task, TaskTable
from .waiting import WaitingSlaves

#: What ``store`` hands to ``TaskManager.on_answers``: (task_id, ok, payload, traceback).
Settled = Tuple[str, bool, Payload, str]


class TaskTraffic:
    """Tasks from the master to the slaves and their answers back; every method
    expects the manager's lock held (and may wait on its conditions)."""

    def __init__(self, signals: Signals, registry: Registry, scheduler: Scheduler,
                 counters: Counter, clock: Callable[[], float], memory_budget: Optional[int]):
        self._signals = signals
        self._registry = registry
        self._scheduler = scheduler
        self._limits = scheduler.limits   # the scheduler's (a dict): read once per answer
        self._counters = counters     # the manager's, shared with the process side
        self._clock = clock
        self._tasks = TaskTable()
        self._results = ResultStore(self._tasks, counters)
        self._waiters = WaitingSlaves()
        self._budget = MemoryBudget(memory_budget)
        self._failures = RecentFailures()   # the last failures, for the dashboard
        self._assignment = Assignment(signals, registry, scheduler, self._tasks, self._budget,
                                      self._waiters, counters, clock)
        scheduler.pools.on_free = self._waiters.wake_all   # resources given back: a waiting task may fit

    # ---------------------------------------------------------------- the master's side

    def add(self, tag: str, payloads: Iterable[Payload], time_limit: Optional[float],
            priority: float = 0, retry: Optional[Retry] = None, attempts: int = 0,
            need: Optional[Need] = None, affinity: Optional[Hashable] = None) -> List[str]:
        """Queue a task for each payload, in order, each waiting for the memory budget; their ids.

        ``attempts``: failed attempts each has made already (a resumed journaled job).
        ``need``: the resources each needs (None: its tag's default, if any).
        ``affinity``: the key of each (``affinity.py``; None: no preference)."""
        if need is None and self._scheduler.default_needs:
            need = self._scheduler.default_needs.get(tag)
        task_ids = []
        for payload in payloads:
            self._signals.check_running()
            while self._budget.requests_wait(len(payload)):
                self._signals.wait_for_room()
                self._signals.check_running()
            task = self._tasks.new(tag, payload, time_limit, priority, retry, attempts)
            if need is not None:
                task.need = need
            if affinity is not None:
                task.affinity = Affinity(affinity)
            self._enqueue(task, front=False)
            self._counters["requested"] += 1
            task_ids.append(task.task_id)
        return task_ids

    def add_answered(self, tag: str, ok: bool, answer: Payload, traceback: str) -> str:
        """Add a task whose answer is known (journaled), never run; its id."""
        self._signals.check_running()
        task = self._tasks.new(tag, None, None)   # never queued: WAITING -> FINISHED/FAILED
        self._counters["requested"] += 1
        self._results.settle(task, ok, answer, traceback, self._clock())
        self._budget.add_results(len(answer))
        if not ok:
            self._failures.add(task.task_id, tag, None, None, traceback)
        self._signals.answer_ready.notify_all()
        return task.task_id

    def cancel(self, task_id: str) -> bool:
        """Withdraw and forget a task no slave has started; False if there is none such."""
        task = self._tasks.get(task_id)
        if task is None or task.state is not WAITING:
            return False
        self._scheduler.remove(task)
        self._budget.add_waiting(-len(task.payload or b""))
        self._tasks.forget(task)
        task.payload = None
        self._counters["cancelled"] += 1
        self._signals.make_room()
        self._signals.answer_ready.notify_all()   # a get_answer waiting for it alone must not wait forever
        return True

    def deliver(self, limit: int, tag: Optional[str], timeout: Optional[float]) -> List[Outcome]:
        """Up to ``limit`` of the oldest answers (with ``tag``), waiting for the first
        as ``TaskManager.get_answers`` says."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            held_back = self._budget.results_full()
            outcomes: List[Outcome] = []
            while len(outcomes) < limit:
                outcome = self._results.deliver(tag)
                if outcome is None:
                    break
                self._budget.add_results(-len(outcome.payload))
                outcomes.append(outcome)
            if outcomes:
                self._signals.make_room()
                if held_back and not self._budget.results_full():
                    self._assignment.pass_wake_up_on(None)   # slaves held back may take tasks again
                return outcomes
            self._signals.check_running()
            if not self._tasks.outstanding(tag):
                what = "no task" if tag is None else f"no task with tag {tag!r}"
                raise NoTasksPendingError(
                    f"retrieveResult would wait forever: {what} is waiting, running or "
                    f"finished (requestTask first; {self._counters['delivered']} results "
                    f"were already retrieved)")
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"no result within {timeout} s")
            self._signals.answer_ready.wait(remaining)

    # ---------------------------------------------------------------- the slaves' side

    def take(self, wants: List[Want], timeout: float) -> Tuple[Dict[int, List[Task]], List[int]]:
        """Assign tasks to processes (what each wants), waiting up to ``timeout`` seconds
        until one gets some; ({process_id: tasks}, unknown ids). See ``assignment.py``."""
        return self._assignment.take(wants, timeout)

    def store(self, batches: Iterable[Tuple[Optional[int], Iterable]],
              settled: Optional[List[Settled]], retried: Optional[List[Tuple[str, int]]] = None) -> int:
        """Store answers ((process_id, answers) pairs; the first answer for a task
        wins); returns how many were accepted, listed in ``settled`` if given.
        A failure sent back to be retried is not accepted; (task_id, attempts) goes in ``retried``."""
        accepted = 0
        now = self._clock()
        for process_id, answers in batches:
            proc = self._registry.get(process_id)
            if proc is not None:
                proc.last_seen = now
            for record in answers:
                # decoded by the wire's codec (protocol.answers_from_wire); a caller of the
                # manager itself may still pass plain tuples in the order of Answer
                answer = record if type(record) is Answer else Answer(*record)
                if proc is not None:
                    proc.running.pop(answer.assignment, None)
                task = self._results.unanswered(answer.task_id, answer.assignment, process_id)
                if task is None:
                    continue
                if answer.seconds is not None:   # how long the handler ran
                    self._scheduler.durations.record(task.tag, answer.seconds)
                traceback = answer.traceback
                if not answer.ok and task.retry is not None:
                    if self._retry(task, answer, proc):
                        if retried is not None:
                            retried.append((task.task_id, task.attempts))
                        continue
                    traceback = attempts_note(task, False) + traceback
                self._settle(task, answer.ok, answer.payload, traceback)
                if not answer.ok:
                    self._failures.add(answer.task_id, task.tag, process_id, proc, traceback)
                if proc is not None:
                    proc.tasks_done += 1
                accepted += 1
                if settled is not None:
                    settled.append((answer.task_id, answer.ok, answer.payload, traceback))
        if accepted:
            self._signals.answer_ready.notify_all()
        return accepted

    # ---------------------------------------------------------------- the process side's decisions

    def take_back(self, departure: Optional[Departure]) -> bool:
        """Apply a departure (``Processes.remove``): requeue or fail what it held.
        False if there was none (the process was unknown)."""
        if departure is None:
            return False
        self._waiters.wake_process(departure.process_id)   # first: no task's wake-up goes to it
        for task in reversed(departure.requeue):   # each goes to the front: keep their order
            self._requeue(task)
        self.fail_all(departure.fail)
        return True

    def fail_all(self, failures: List[Tuple[Task, Exception]]) -> None:
        """Answer each task with its error (a lost slave, an overrun time limit)."""
        for task, error in failures:
            traceback = f"{type(error).__name__}: {error}\n"
            self._settle(task, False, dumps_value(error), traceback)
            self._failures.add(task.task_id, task.tag, task.process_id, self._registry.get(task.process_id), traceback)
        if failures:
            self._signals.answer_ready.notify_all()

    # ---------------------------------------------------------------- what it reports

    def state_of(self, task_id: str) -> Optional[str]:
        """The state of a task ("waiting", "running", ...); None if unknown or delivered."""
        task = self._tasks.get(task_id)
        return None if task is None else task.state.value

    def counts(self) -> Dict[str, Dict[str, int]]:
        """Tasks per state and tag (see :meth:`TaskTable.counts`)."""
        return self._tasks.counts()

    def answered(self) -> Dict[str, Dict[str, int]]:
        """Answers per outcome ("finished", "failed") and tag since the start."""
        return {outcome: dict(by_tag) for outcome, by_tag in self._results.answered.items()}

    def recent_failures(self) -> List[Dict[str, object]]:
        """The last failures with their tracebacks, oldest first (``failures.py``)."""
        return self._failures.recent()

    def wait_for_running(self, count: int, timeout: Optional[float]) -> bool:
        """Wait until at least ``count`` tasks run on slaves; False on timeout."""
        return self._signals.wait_for_start(
            lambda: sum(self._tasks.counts()["running"].values()) >= count, timeout)

    def completion_rate(self, now: float, elapsed: float) -> float:
        """Answers per second lately."""
        return self._results.completion_rate.rate(now, elapsed)

    def waiting_threads(self) -> int:
        """How many slave threads wait for work right now."""
        return len(self._waiters)

    def wake_for(self, tag: str) -> None:
        """Wake a slave thread that can run ``tag`` (a limit on it was raised)."""
        self._waiters.wake_one(tag)

    def wake_all(self) -> None:
        """Wake every slave thread waiting for work (the manager terminates)."""
        self._waiters.wake_all()

    # ---------------------------------------------------------------- internals

    def _enqueue(self, task: Task, front: bool, skip: Optional[int] = None) -> None:
        if task.affinity is not None:
            self._enqueue_with_key(task, front, skip)
            return
        self._scheduler.enqueue(task, front)
        self._budget.add_waiting(len(task.payload or b""))
        self._waiters.wake_one(task.tag, skip)

    def _enqueue_with_key(self, task: Task, front: bool, skip: Optional[int]) -> None:
        """Queue a task with a key (``affinity.py``), waking the slave that owns it if it waits."""
        assert task.affinity is not None
        scheduler = self._scheduler
        scheduler.enqueue(task, front)
        self._budget.add_waiting(len(task.payload or b""))
        owner = scheduler.affinity.owner(task.affinity.key, self._registry.get) if skip is None else None
        if owner is None or not self._waiters.wake_process_for(task.tag, owner.process_id):
            self._waiters.wake_one(task.tag, skip)

    def _retry(self, task: Task, answer: Answer, proc: Optional[ProcessRecord]) -> bool:
        """Run a failed task again if its ``retry`` says so (``scheduling.retries_again``);
        whether it does. The answer's slave is noted as one it failed on."""
        if not retries_again(task.retry, task.attempts, lambda: _exception(answer)):
            return False
        task.attempts += 1
        if task.failed_on is None:
            task.failed_on = []
        task.failed_on.append((answer_process(proc), proc.describe() if proc is not None else "a slave that left"))
        self._counters["retried"] += 1
        if task.state is RUNNING and task.assignment == answer.assignment:
            self._registry.release(task)
            # wake a slave for it: another one, if another can run it (see scheduling.retry_elsewhere)
            elsewhere = proc is not None and retry_elsewhere(task, proc, self._registry)
            self._requeue(task, counter="", skip=task.process_id if elsewhere else None)
        # else an earlier assignment failed while the task waits or runs elsewhere: that attempt counts
        return True

    def _freed(self, tag: str) -> None:
        """A task of ``tag`` left its slave: under a concurrency limit, the next may start."""
        if self._limits.get(tag) is not None and self._scheduler.has_waiting(tag):
            self._waiters.wake_one(tag)


    def _settle(self, task: Task, ok: bool, payload: Payload, traceback: str) -> None:
        """Store a task's answer (any state before FINISHED/FAILED)."""
        if task.state is WAITING:
            self._scheduler.remove(task)
            self._budget.add_waiting(-len(task.payload or b""))
            self._signals.make_room()
        elif task.state is RUNNING:
            self._registry.release(task)
            if self._limits:
                self._freed(task.tag)
        self._results.settle(task, ok, payload, traceback, self._clock())
        self._budget.add_results(len(payload))
        if self._budget.results_full():
            self._signals.make_room()   # a request waiting for room must not wait for this

    def _requeue(self, task: Task, counter: str = "rescheduled", skip: Optional[int] = None) -> None:
        self._tasks.move(task, WAITING)
        task.assignment = None
        task.process_id = None
        task.rescheduled = True
        if counter:
            self._counters[counter] += 1
        self._enqueue(task, front=True, skip=skip)


def answer_process(proc: Optional[ProcessRecord]) -> int:
    """The process id an attempt failed on (0: one that left before its answer was read)."""
    return proc.process_id if proc is not None else 0


def _exception(answer: Answer) -> Optional[BaseException]:
    """The exception a failed answer carries, None if the master cannot rebuild it."""
    try:
        error = loads_answer(answer.payload, answer.task_id)
    except Exception:   # a class the master cannot import: it matches only the default retry_on
        return None
    return error if isinstance(error, BaseException) else None
