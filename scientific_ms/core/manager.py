"""The task manager: one facade, one lock, over the task traffic and the process side.

The master calls it directly and ``server.py`` exposes it to slaves. It
makes the shared parts and holds the parts that act on them; each
decision is taken by the module that owns it. Its public methods about
processes (registration, heartbeats, liveness, time limits, the waits for
slaves) are those of its base class, in ``manager_processes.py``.

- ``signals.py``: the lock, the conditions threads wait on, the end;
- ``traffic.py`` (:class:`TaskTraffic`): requests, assignment (its part
  ``assignment.py``), answers and their delivery, over the table of tasks
  (``tasks.py``), the results (``results.py``), the memory budget
  (``budget.py``) and the slave threads waiting for work;
- ``processes.py`` (:class:`Processes`): registration, heartbeats,
  liveness, time limits, losses. It settles no task: it reports what a
  departure or an overrun costs, and this class hands that to the traffic;
- ``scheduling.py`` and ``registry.py``: the queues and the rules of
  assignment, the registered processes; shared by both parts;
- ``shared_data.py``: values stored once for every slave (its own lock);
- ``output.py``: the last lines each slave printed (its own lock).

Lock rules: ``self._lock`` (``Signals.lock``) protects everything above but
the shared data. Every public method here takes it once and calls the
parts with it held; the parts never take it, but may wait on conditions
built on it (which release it while they wait). The few reads without it
say why they are safe. Nothing here does I/O.

Two clocks: ``clock`` (injectable, a fake in tests) times liveness and task
ages; blocking waits always use real time.
"""

from __future__ import annotations

import collections
import time
import typing
from typing import Callable, Dict, Hashable, Iterable, List, Optional, Tuple

from ..errors import ConfigurationError
from ..wire.payload import Payload
from .assignment import Want
from .manager_processes import ProcessCalls
from .needs import Need
from .output import SlaveOutput
from .processes import TIME_LIMIT_GRACE, Processes
from .registry import Registry
from .resources import unmet
from .results import Outcome
from .scheduling import Scheduler
from .shared_data import SharedData
from .signals import Signals
from .status import snapshot
from .steering import Retry
from .tasks import Task, check_request
from .traffic import Settled, TaskTraffic

__all__ = ["TaskManager", "Outcome", "TIME_LIMIT_GRACE"]


def check_options(missed_heartbeats: float, max_slave_losses: int) -> None:
    """Raise ConfigurationError, saying why, unless the manager's options make sense."""
    if missed_heartbeats <= 0:
        raise ConfigurationError(f"missed_heartbeats must be > 0, got {missed_heartbeats!r}")
    if int(max_slave_losses) < 1:
        raise ConfigurationError(f"max_slave_losses must be >= 1, got {max_slave_losses!r}")


def check_duration(seconds: object) -> None:
    """Raise ConfigurationError unless ``seconds`` can be an expected task duration."""
    if not (isinstance(seconds, (int, float)) and seconds >= 0):
        raise ConfigurationError(f"expect_duration: seconds must be a number >= 0, got {seconds!r}")


class TaskManager(ProcessCalls):
    """Stores task requests, results, shared data and the registered processes.

    Keyword options:
        clock: time source for liveness (default ``time.monotonic``).
        missed_heartbeats: a process whose last sign of life is older than this many of its
            watchdog periods is declared dead (default 4).
        max_slave_losses: a task that lost this many slaves is answered with
            :class:`SlaveLostError` instead of being run again (default 3).
        memory_budget: bytes of parameters of waiting tasks beyond which :meth:`add_task` waits
            for slaves to take some, and of answers not yet retrieved beyond which slaves get no
            new tasks (None: no bound). Neither waits while the other side is over budget, so
            the two cannot wait for each other.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 missed_heartbeats: float = 4, max_slave_losses: int = 3,
                 memory_budget: Optional[int] = None):
        check_options(missed_heartbeats, max_slave_losses)
        self.missed_heartbeats = missed_heartbeats
        self.max_slave_losses = int(max_slave_losses)
        self._clock = clock
        self._started = clock()
        self._signals = Signals()
        self._lock = self._signals.lock                   # see "Lock rules" above
        self._answer_ready = self._signals.answer_ready   # get_answer waits here (tests watch it)
        self.counters: typing.Counter[str] = collections.Counter()  # requested, finished, failed, delivered, ...
        self._registry = Registry()
        self._scheduler = Scheduler(self.max_slave_losses)
        self._traffic = TaskTraffic(self._signals, self._registry, self._scheduler, self.counters,
                                    clock, memory_budget)
        self._processes = Processes(self._signals, self._registry, self._scheduler, self.counters,
                                    clock, missed_heartbeats)
        self._data = SharedData()
        self.data_fetches = self._data.fetches     # label -> times retrieved
        self.output = SlaveOutput()   # its ``sink`` prints what slaves write (the master sets it)
        #: Called, outside the lock, with the answers ``store_answers`` accepted:
        #: a list of (task_id, ok, payload, traceback). The master's journal sets it.
        self.on_answers: Optional[Callable[[List[Settled]], None]] = None
        #: Called, outside the lock, with the failed attempts ``store_answers`` sent back to be
        #: retried: a list of (task_id, failed attempts so far). The master's journal sets it.
        self.on_retries: Optional[Callable[[List[Tuple[str, int]]], None]] = None

    # ---------------------------------------------------------------- tasks: master

    def add_task(self, tag: str, payload: Payload, time_limit: Optional[float] = None, *,
                 priority: float = 0, retry: Optional[Retry] = None, attempts: int = 0,
                 need: Optional[Need] = None, affinity: Optional[Hashable] = None) -> str:
        """Queue a task whose parameters are already pickled; returns its id.

        ``time_limit``: seconds its handler may run (None: no limit). ``priority``: higher goes first.
        ``retry``: how it runs again after its handler raised (``scheduling.check_steering``);
        ``attempts``: failed attempts it made already. ``need``: the resources it holds while it
        runs (``needs.parse_need``; None: its tag's default, :meth:`set_resources`).
        ``affinity``: a key; the task goes preferably to the slave that last got one with that key
        (``affinity.py``)."""
        check_request(tag, time_limit)
        with self._lock:
            return self._traffic.add(tag, (payload,), time_limit, priority, retry, attempts, need, affinity)[0]

    def add_tasks(self, tag: str, payloads: Iterable[Payload], time_limit: Optional[float] = None, *,
                  priority: float = 0, retry: Optional[Retry] = None, attempts: int = 0,
                  need: Optional[Need] = None, affinity: Optional[Hashable] = None) -> List[str]:
        """Queue a task for each of ``payloads`` (pickled parameters), in order; returns their ids.

        One lock for all of them: an Executor's map queues its chunks so.
        Each waits while the memory budget is exceeded. Options: see :meth:`add_task`.
        """
        check_request(tag, time_limit)
        with self._lock:
            return self._traffic.add(tag, payloads, time_limit, priority, retry, attempts, need, affinity)

    def set_resources(self, tag: str, need: Optional[Need]) -> None:
        """What tasks of ``tag`` need unless their request says (None: nothing); for tasks
        requested from now on."""
        with self._lock:
            if need is None:
                self._scheduler.default_needs.pop(tag, None)
            else:
                self._scheduler.default_needs[tag] = need

    def limit_concurrency(self, tag: str, limit: Optional[int]) -> None:
        """At most ``limit`` tasks of ``tag`` assigned to slaves at once (None: no limit).
        Tasks already assigned stay; a lower limit holds back new ones until enough have ended."""
        with self._lock:
            self._scheduler.limits.set(tag, limit)
            if self._scheduler.has_waiting(tag):
                self._traffic.wake_for(tag)   # a higher limit may let one start now

    def add_answered_task(self, tag: str, ok: bool, answer: Payload, traceback: str = "") -> str:
        """Add a task whose answer is already known (journaled); it is never run.

        It counts as requested and then finished (or failed), and ``get_answer`` delivers it like
        any other. Returns its id.
        """
        with self._lock:
            return self._traffic.add_answered(tag, ok, answer, traceback)

    def cancel_task(self, task_id: str) -> bool:
        """Withdraw a task that no slave has started; False if it runs, is answered or is unknown.

        A withdrawn task is forgotten: it yields no answer, and a late answer for it (from a slave
        presumed dead) is dropped.
        """
        with self._lock:
            return self._traffic.cancel(task_id)

    def get_answer(self, tag: Optional[str] = None, timeout: Optional[float] = None) -> Outcome:
        """Remove and return the oldest finished or failed task (with ``tag``, if given).

        Blocks until one is there. Raises TaskManagerTermination once terminated,
        NoTasksPendingError if nothing matching is outstanding, TimeoutError after ``timeout`` seconds.
        """
        return self.get_answers(1, tag, timeout)[0]

    def get_answers(self, limit: int, tag: Optional[str] = None, timeout: Optional[float] = None) -> List[Outcome]:
        """Up to ``limit`` of the oldest answers, oldest first: ``get_answer`` for all there are.

        Waits (and raises) as ``get_answer`` does until there is one; then takes what else is there
        without waiting.
        """
        with self._lock:
            return self._traffic.deliver(limit, tag, timeout)

    def expect_duration(self, tag: str, seconds: float) -> None:
        """Tell the scheduler how long tasks of ``tag`` take until it has measured them.

        Without a hint a new tag counts as long: its tasks go one at a time to idle slaves until
        the first answers say how long they take.
        """
        check_duration(seconds)
        with self._lock:
            self._scheduler.durations.expect(tag, float(seconds))

    # ----------------------------------------------------------------- tasks: slaves

    def take_tasks(self, process_id: int, max_tasks: int = 1,
                   timeout: float = 0.0, queue_seconds: Optional[float] = None) -> List[Task]:
        """Assign up to ``max_tasks`` tasks that the process can run.

        Waits up to ``timeout`` seconds for the first one. ``queue_seconds``: the work the
        slave wants queued behind the task it runs (``flow.py``; None: the fixed target).
        The caller reads each task's ``task_id``,
        ``assignment``, ``tag``, ``payload`` and ``time_limit``. Raises TaskManagerTermination,
        or UnknownProcessError if the process is unknown (declared dead: it should register again).
        """
        want = Want(process_id, max(1, int(max_tasks)), queue_seconds)
        with self._lock:
            assigned, unknown = self._traffic.take([want], timeout)
        if unknown:
            with self._lock:
                self._processes.live(process_id)   # raises the error that says why
        return assigned.get(process_id, [])

    def take_tasks_for(self, wants: Iterable[tuple],
                       timeout: float = 0.0) -> Tuple[Dict[int, List[Task]], List[int]]:
        """Assign tasks to several processes at once (:meth:`take_tasks` asks for one).

        ``wants``: (process_id, max_tasks[, queue_seconds]) tuples. Waits up to ``timeout``
        seconds until at least one of them gets a task. Returns ({process_id: tasks}, [ids of
        unknown processes]); raises TaskManagerTermination.
        """
        asked = [Want(want[0], max(1, int(want[1])), want[2] if len(want) > 2 else None) for want in wants]
        with self._lock:
            return self._traffic.take(asked, timeout)

    def store_answers(self, process_id: Optional[int], answers: Iterable) -> int:
        """Store results and exceptions; the first answer for a task wins.

        ``answers``: :class:`~scientific_ms.wire.protocol.Answer` records (or tuples in that order).
        Answers from a process declared dead are still taken if they are first. Returns how many
        were accepted; the rest are dropped and logged.
        """
        return self.store_answers_of([(process_id, answers)])

    def store_answers_of(self, batches: Iterable[Tuple[Optional[int], Iterable]]) -> int:
        """:meth:`store_answers` for several processes at once:
        ``batches`` holds (process_id, answers) pairs."""
        on_answers, on_retries = self.on_answers, self.on_retries
        settled: Optional[List[Settled]] = [] if on_answers is not None else None
        retried: Optional[List[Tuple[str, int]]] = [] if on_retries is not None else None
        with self._lock:
            accepted = self._traffic.store(batches, settled, retried)
        if on_answers is not None and settled:
            on_answers(settled)
        if on_retries is not None and retried:
            on_retries(retried)
        return accepted

    # ------------------------------------------------------------------ shared data (its own lock)

    def store_data(self, label: str, payload: bytes) -> None:
        """Store ``payload`` (pickled) under ``label`` for every slave."""
        self._data.store(label, payload)

    def retrieve_data(self, label: str) -> bytes:
        """The value stored under ``label``; KeyError if there is none."""
        return self._data.retrieve(label)

    def delete_data(self, label: str) -> None:
        """Forget the value stored under ``label`` (if any)."""
        self._data.delete(label)

    def count_relayed(self, exchanges: int, payload_bytes: int = 0) -> None:
        """A keeper's relay carried ``exchanges`` of its workers' exchanges in one call
        (``slave/relay.py``), with ``payload_bytes`` of answers and tasks: counted in the
        status as ``relayed_exchanges`` and ``relayed_bytes``."""
        with self._lock:
            self.counters["relayed_exchanges"] += exchanges
            self.counters["relayed_bytes"] += payload_bytes

    def slave_output(self, process_id: int, lines: object, dropped: object = 0) -> None:
        """Lines a slave's handlers printed or logged, and how many it dropped (``output.py``)."""
        with self._lock:
            proc = self._registry.get(process_id)
            host = proc.info.get("host") if proc is not None else None
        self.output.add(process_id, host if isinstance(host, str) else None, lines, dropped)

    # ------------------------------------------------------------------ life cycle and status

    def terminate(self) -> None:
        """Wake every waiting thread; from now on every call raises TaskManagerTermination."""
        with self._lock:
            if self._signals.terminate():
                self._traffic.wake_all()
                self._processes.wake_watchers()

    @property
    def terminated(self) -> bool:
        """Was :meth:`terminate` called? (One flag, read without the lock.)"""
        return self._signals.terminated

    def wait_terminated(self, timeout: float) -> bool:
        """Block until terminated or ``timeout`` seconds pass; returns ``terminated``."""
        return self._signals.wait_terminated(timeout)

    def counts(self) -> Dict[str, Dict[str, int]]:
        """Tasks per state and tag: {"waiting": {tag: n}, "running": ..., "finished": ..., "failed": ...}."""
        with self._lock:
            return self._traffic.counts()

    def waiting_estimates(self) -> Dict[str, Optional[float]]:
        """Seconds per task of each tag with waiting tasks; None while not measured."""
        with self._lock:
            return {tag: self._scheduler.durations.estimate(tag) for tag in self._scheduler.waiting_tags()}

    def task_state(self, task_id: str) -> Optional[str]:
        """The state of a task ("waiting", "running", ...); None if unknown or delivered."""
        with self._lock:
            return self._traffic.state_of(task_id)

    def wait_for_running(self, count: int = 1, timeout: Optional[float] = None) -> bool:
        """Block until at least ``count`` tasks are running on slaves; False on timeout."""
        with self._lock:
            return self._traffic.wait_for_running(count, timeout)

    def status(self, failures: bool = False) -> dict:
        """A snapshot of everything ``task_manager show`` reports (plain data).

        ``failures``: also the last failed tasks with their tracebacks (``failures.py``), under
        ``"failures"``, oldest first (for the dashboard; only turned into data when asked).
        """
        with self._lock:
            now = self._clock()
            elapsed = now - self._started
            status = snapshot(now, elapsed, self._signals.terminated, self._registry, self._traffic.counts(),
                              dict(self.counters), self._traffic.completion_rate(now, elapsed),
                              self._traffic.answered())
            if failures:
                status["failures"] = self._traffic.recent_failures()
            if self._scheduler.needy_tags:
                status["unmet_needs"] = unmet(self._scheduler.waiting_needs(), self._scheduler.pools)
        status["slave_output"] = self.output.last_lines()
        return status
