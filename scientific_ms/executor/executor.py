"""A ``concurrent.futures.Executor`` on the fault-tolerant farm.

::

    user threads                          MasterProcess (in this process)   slaves
    ------------                          -------------------------------   ------
    submit(fn, *args) --add_pickled_tasks--> waiting queue, tag = fn's name --> FunctionSlave
        returns a Future  (stored in _slots by task id)                        runs fn
    map(fn, items): the same, in batches, a MapSlot per task
    collector thread <--take_answers----------- answers <-----------------------+
        settles the Future or MapSlot (result or exception)

One collector thread (``collector.py``) completes every future (a map's
tasks have lighter slots: see ``futures``); submit takes no lock. A task id
and its slot meet in ``_slots`` through ``dict.setdefault``, which is
atomic: whichever of submit (the slot) and the collector (the answer) comes
second settles the slot, so an answer that arrives before submit has stored
its slot is never lost.

The Executor reaches the task manager only through its MasterProcess.
Cancelling a future withdraws its task from the manager's queue; that
only succeeds while no slave has started it, and a withdrawn task yields
no answer, so a cancelled future is never completed afterwards.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import hashlib
import itertools
import logging
import os
import secrets
import time
import weakref
from typing import Any, Callable, Dict, Iterable, Iterator, List, Literal, Optional, Tuple

from .. import mpi, settings
from ..core.affinity import check_affinity
from ..core.needs import parse_need
from ..core.steering import check_steering
from ..errors import ConfigurationError, TaskManagerTermination
from ..master import forkserver
from ..master.ending import ended_by_sigterm, exit_on_sigterm
from ..master.master import MasterProcess
from ..provision import is_slave_jobs
from . import by_value, calls
from .call_options import CallOptions, CallSteering
from .collector import Collector
from .futures import Future, MapResults

log = logging.getLogger(__name__)

#: More distinct functions than this in one Executor is probably a function made per submit.
MANY_FUNCTIONS = 1000

#: A map queues its tasks in batches of 1, 2, 4, ... up to this many: the first
#: reach the slaves at once, the rest cost one lock of the task manager per batch.
MAP_BATCH = 64

#: Set once rank 0 has handed the MPI ranks to an Executor (they serve one master only).
_mpi_ranks_taken = False


class Executor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` whose calls run on scientific_ms slaves.

    ``label``: the job's label (None: a fresh unique one; see ``label``).
    ``slaves``: how many slaves to start on this machine (supervised: one
    that dies is replaced). More can join at any time from anywhere with
    ``task_manager slave LABEL``; under mpiexec, the other ranks serve.
    ``watchdog_period``: the slaves' heartbeat interval in seconds (see
    :class:`SlaveProcess`; ranks under mpiexec keep the default).
    ``options``: those of :class:`MasterProcess` (``use_name_server``,
    ``host``, ``port``, ``secret``, ``missed_heartbeats``,
    ``max_slave_losses``, ``progress``, ``slave_restarts``,
    ``task_time_limit``, ``tls_cert``, ``tls_key``, ``journal``,
    ``keep_journal``, ``dashboard``, ``start_method``, ``preload``). The
    ``slaves`` are forked from a warm template when that pays (modules to
    preload, or more slaves than cores: :func:`default_start_method`), else
    spawned; ``start_method`` (or SCIENTIFIC_MS_START_METHOD) decides
    instead when given (docs/guide/warm-start.md). With a journal, an Executor killed and started again
    delivers the calls answered before from it, without running them (a
    call matches by its function's pickle and its arguments); without a
    ``label``, it takes one named after the journal file.

    Each distinct function is pickled once (cloudpickle: by reference when
    importable, by value when defined in ``__main__``, a lambda or a
    closure) and fetched once by each slave; later changes to it (or to the
    ``__main__`` globals it uses, or to a callable object's attributes) do
    not reach the slaves: pass what changes as arguments. Per-call options
    go through :meth:`options`.
    """

    def __init__(self, label: Optional[str] = None, slaves: int = 0, *,
                 watchdog_period: Optional[float] = 120.0, **options: Any):
        global _mpi_ranks_taken
        whole = isinstance(slaves, int) and not isinstance(slaves, bool)
        if not (whole and slaves >= 0) and not is_slave_jobs(slaves):
            raise ConfigurationError(f"Executor(slaves=...): a whole number >= 0, SlurmSlaves(...) or "
                                     f"LocalSlaves(...), got {slaves!r}")
        if watchdog_period is not None and not (isinstance(watchdog_period, (int, float)) and watchdog_period > 0):
            raise ConfigurationError(f"Executor(watchdog_period=...): a positive number of seconds or None, "
                                     f"got {watchdog_period!r}")
        under_mpi = mpi.runs_under_mpi()
        if under_mpi and mpi.rank() != 0:
            from .function_slave import serve_functions
            mpi.serve_as_function_rank(serve_functions)   # a script run directly by mpiexec
        if under_mpi and _mpi_ranks_taken and not slaves:
            raise ConfigurationError(
                "under mpiexec the other ranks serve the script's first Executor only; keep one "
                "Executor for the whole script, or give this one slaves=N")
        self.label = label if label is not None else _fresh_label(settings.journal(options.get("journal")))
        options["start_method"] = settings.start_method(options.get("start_method"),
                                                        default_start_method(slaves, options.get("preload")))
        try:
            self.master = MasterProcess(self.label, **options)
        except TypeError as error:
            raise ConfigurationError(f"Executor: {error} (the options are those of MasterProcess)") from None
        self._functions: Dict[Any, Tuple[Any, str, str]] = {}   # key -> (function, data label, tag)
        self._slots: Dict[str, Any] = {}   # task id -> Future, or an answer that came first
        self._shutting_down = False
        try:
            source = calls.runner_source(*calls.import_paths(), watchdog_period)
            self.master.store_slave_code(source, None, ["executor-slave"])
            # The collector before the slaves: its thread's start waits for a core, which the
            # slaves starting up keep busy.
            self._collector = Collector(self.master, self.label, self._slots)
            if slaves:
                self.master.launchSlaveJobs(slaves)
            served_by_ranks = under_mpi and not _mpi_ranks_taken and mpi.size() > 1
            if under_mpi and not _mpi_ranks_taken:
                _mpi_ranks_taken = True
                mpi.announce_master(self.master)
            if not slaves and not served_by_ranks:
                log.warning("Executor %r has no slaves yet: its calls wait until one joins "
                            "(task_manager slave %s, or Executor(slaves=N))", self.label, self.label)
        except BaseException:
            self.master.shutdown()
            raise
        atexit.register(_shutdown_at_exit, weakref.ref(self))
        exit_on_sigterm()
        log.info("Executor %r started (slaves: %r)", self.label, slaves)

    # ------------------------------------------------------------------ the public face

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        """Schedule ``fn(*args, **kwargs)``; returns a Future.

        An argument that cannot be pickled raises SerializationError here.
        """
        return self._submit_call(fn, args, kwargs, None)

    def map(self, fn: Callable, *iterables: Iterable, timeout: Optional[float] = None,
            chunksize: int = 1) -> Iterator:
        """Like the builtin ``map``, in order; every call is submitted at once.

        ``chunksize`` > 1 sends that many calls as one task (its time limit
        covers the whole chunk). Iterating raises TimeoutError if a result
        is not there ``timeout`` seconds after this call, and the first
        exception a call raised. The iterator's ``close()`` (or dropping
        it, or either error) withdraws the calls no slave has started.
        """
        return self._map(fn, iterables, timeout, chunksize, None)

    def options(self, *, time_limit: Optional[float] = None, priority: float = 0, retries: int = 0,
                retry_on: Any = None, resources: Any = None, affinity: Any = None) -> CallOptions:
        """``submit`` and ``map`` with options: ``ex.options(time_limit=60).submit(fn, x)``.

        ``time_limit``: seconds each call (each chunk of a map) may run; a
        call that runs longer raises TaskTimeLimitError (a TimeoutError);
        default: the Executor's ``task_time_limit``. ``priority``: waiting calls
        with a higher one run first (default 0). ``retries``: a call that
        raised (one of ``retry_on``, an exception class or a tuple of them;
        default any) runs again, on another slave when there is one, up to
        this many more times. See docs/guide/scheduling.md. ``resources``: what
        each call holds while it runs, ``{"gpu": 1, "memory": "8G", "cores": 4}``
        (docs/guide/resources.md). ``affinity``: a key (a name, a path) for what
        the calls load: each goes preferably to the slave that last ran a call
        with that key (docs/guide/scheduling.md).
        """
        if time_limit is not None and not (isinstance(time_limit, (int, float)) and time_limit > 0):
            raise ConfigurationError(f"time_limit must be a positive number of seconds or None, "
                                     f"got {time_limit!r}")
        retry = check_steering(priority, retries, retry_on)
        limit = self.master.task_time_limit if time_limit is None else time_limit
        need = parse_need(resources)
        key = None if affinity is None else check_affinity(affinity)
        return CallOptions(self._submit_call, self._map, CallSteering(limit, priority, retry, need, key))

    def limit_concurrency(self, fn: Any, n: Optional[int]) -> None:
        """At most ``n`` calls of ``fn`` (a function, or its tag: its name) run at once (None: no limit)."""
        self.master.limit_concurrency(fn if isinstance(fn, str) else calls.tag_for(fn), n)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Accept no more calls; the master and its slaves end once every future is done.

        ``cancel_futures``: cancel every call that no slave has started.
        ``wait``: return only when everything has ended.
        """
        self._shutting_down = True
        self._collector.stop_when_done()
        if cancel_futures:
            for slot in reversed(list(self._slots.values())):   # newest first: each withdrawal is O(1)
                if type(slot) is not tuple:   # not an answer waiting for its slot
                    slot.cancel()
        self._collector.wake()
        if wait:
            self._collector.join()

    def __exit__(self, exc_type, exc_value, traceback) -> Literal[False]:
        # Leaving on an error or Ctrl-C (also while waiting for the calls): do not wait for
        # calls that may run for hours. The master ends now, its slaves exit, the calls not
        # done fail, nothing is left behind.
        try:
            if exc_type is None:
                self.shutdown(wait=True)
                return False
        except BaseException:
            self._end_now()
            raise
        self._end_now()
        return False

    def _end_now(self) -> None:
        self.shutdown(wait=False, cancel_futures=True)
        self.master.shutdown()
        self._collector.join()

    # ------------------------------------------------------------------ submitting

    def _function(self, fn: Callable) -> Tuple[str, str]:
        """(data label, tag) of ``fn``, storing it on the first call."""
        known = self._functions.get(id(fn))
        if known is not None and known[0] is fn:
            return known[1], known[2]
        if not callable(fn):
            raise TypeError(f"submit/map need a callable, got {type(fn).__name__} {fn!r}")
        # A bound method is a new object at each attribute access: know it by its object and function.
        own = getattr(fn, "__self__", None)
        key = (id(own), id(fn.__func__)) if own is not None and hasattr(fn, "__func__") else id(fn)
        known = self._functions.get(key)
        if known is not None:
            return known[1], known[2]
        pickled = calls.dumps_function(fn)
        by_value.warn_if_large(fn, len(pickled), MasterProcess.LARGE_PARAMETERS, self.label)
        # Named by its pickle, the same in every run: a journal then matches its calls again.
        label = f"{calls.FUNCTION_PREFIX}{hashlib.blake2b(pickled, digest_size=8).hexdigest()}"
        self.master.store_data(label, pickled)
        tag = calls.tag_for(fn)
        self._functions[key] = (fn, label, tag)   # holds fn, so that its id is not reused
        if len(self._functions) == MANY_FUNCTIONS:
            log.warning("Executor %r has stored %d distinct functions (each is kept until shutdown): "
                        "define functions once rather than per call", self.label, MANY_FUNCTIONS)
        return label, tag

    def _submit_call(self, fn: Callable, args: tuple, kwargs: dict, steering: Optional[CallSteering]) -> Future:
        if self._shutting_down:   # before pickling: after shutdown, that is the error to see
            raise RuntimeError("cannot schedule new futures after shutdown")
        label, tag = self._function(fn)
        call = (calls.CALL, args, kwargs)
        future = Future(self._withdraw, self._started)
        self._queue(tag, [calls.dumps_call(tag, (label, *call))], [future], steering)
        return future

    def _map(self, fn: Callable, iterables: Tuple[Iterable, ...], timeout: Optional[float],
             chunksize: int, steering: Optional[CallSteering]) -> Iterator:
        if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
            raise ConfigurationError(f"map(chunksize=...): a whole number >= 1, got {chunksize!r}")
        end = None if timeout is None else time.monotonic() + timeout
        label, tag = self._function(fn)
        tasks: Iterator[tuple] = ((calls.CALL, args, {}) for args in zip(*iterables)) if chunksize == 1 else \
            calls.chunks(iterables, chunksize)
        results = MapResults(self._withdraw)
        try:
            for batch in _batches(tasks, MAP_BATCH):
                payloads = [calls.dumps_call(tag, (label, *task)) for task in batch]
                self._queue(tag, payloads, results.new_slots(len(payloads)), steering)
        except BaseException:   # e.g. an item that cannot be pickled: nothing of this map runs
            results.cancel()
            raise
        return results.iterator(end, chunked=chunksize > 1)

    def _queue(self, tag: str, payloads: List[bytes], slots: list, steering: Optional[CallSteering]) -> None:
        """Queue a task for each payload, to be answered to the slot (Future or MapSlot) beside it
        (``steering``: its options, from ``options``; None: the Executor's own, the usual case)."""
        if self._shutting_down:
            raise RuntimeError("cannot schedule new futures after shutdown")
        try:
            task_ids = self.master.add_pickled_tasks(tag, payloads, self.master.task_time_limit) \
                if steering is None else self.master.add_pickled_tasks(tag, payloads, *steering)
        except TaskManagerTermination:
            raise RuntimeError("cannot schedule new futures after shutdown") from None
        table = self._slots
        for task_id, slot in zip(task_ids, slots):
            slot.task_id = task_id
            early = table.setdefault(task_id, slot)
            if early is not slot:   # its answer came first
                del table[task_id]
                slot.settle(*early)
        self._collector.queued()   # wakes it; or, if it ended meanwhile, fails them: nobody else will settle them

    def _withdraw(self, slot) -> bool:
        """Take a waiting task back from the manager (called by a slot's ``cancel``)."""
        if slot.task_id is None or not self.master.cancel_task(slot.task_id):
            return False
        self._slots.pop(slot.task_id, None)
        return True

    def _started(self, task_id: str) -> bool:
        """True if a slave has taken the task (called by a Future's ``running``)."""
        return self.master.task_state(task_id) == "running"


def default_start_method(slaves, preload) -> str:
    """How an Executor starts its local slaves unless told: forked from a template when that
    pays, else spawned.

    A template imports scientific_ms (and ``preload``) once, then forks; spawned slaves
    each import it themselves, side by side. With modules to preload (``preload=``, a
    :func:`warm_start`, or installed packages that ``__main__`` uses: numpy, emcee, ...)
    or more slaves than cores, the template wins by seconds or by the imports it saves;
    with neither, the slaves' imports run in parallel anyway and spawning gives the first
    result sooner (the template's start comes first on that path).
    """
    if not isinstance(slaves, int) or isinstance(slaves, bool) or slaves <= 0:
        return "spawn"   # no local slave to start
    if settings.preload(preload) or forkserver.shared_for(()) is not None or forkserver.main_modules() \
            or slaves > (os.cpu_count() or 1):
        return "forkserver"
    return "spawn"


def _fresh_label(journal: Optional[str]) -> str:
    """A label of its own; with a journal, the same one each run (a journal belongs to one label)."""
    if journal is None:
        return f"executor-{os.getpid()}-{secrets.token_hex(4)}"
    path = os.path.abspath(journal)
    return f"executor-{hashlib.blake2b(path.encode(), digest_size=4).hexdigest()}"


def _batches(items: Iterator, largest: int) -> Iterator[list]:
    """Lists of 1, 2, 4, ... up to ``largest`` items from ``items``."""
    size = 1
    while True:
        batch = list(itertools.islice(items, size))
        if not batch:
            return
        yield batch
        size = min(2 * size, largest)


def _shutdown_at_exit(reference: weakref.ref[Executor]) -> None:
    executor = reference()
    if executor is None:
        return
    if ended_by_sigterm():   # SIGTERM: end now, as on an error; the calls still running are not waited for
        executor.__exit__(SystemExit, None, None)
    else:
        executor.shutdown(wait=True, cancel_futures=True)
