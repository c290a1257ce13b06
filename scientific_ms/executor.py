"""A ``concurrent.futures.Executor`` on the fault-tolerant farm.

::

    user threads                     TaskManager (in this process)     slaves
    ------------                     -----------------------------     ------
    submit(fn, *args) --add_task---> waiting queue, tag = fn's name --> FunctionSlave
        returns a Future  (stored in _slots by task id)                   runs fn
    collector thread <--retrieveResult-- answers <------------------------+
        completes the Future (set_result / set_exception)

One collector thread completes every future; submit takes no lock. A task
id and its future meet in ``_slots`` through ``dict.setdefault``, which is
atomic: whichever of submit (the future) and the collector (the answer)
comes second completes the future, so an answer that arrives before
submit has stored its future is never lost.

Cancelling a future withdraws its task from the manager's queue; that
only succeeds while no slave has started it, and a withdrawn task yields
no answer, so a cancelled future is never completed afterwards.
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures
import itertools
import logging
import os
import secrets
import threading
import time
import weakref
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from . import calls, mpi
from .errors import (ConfigurationError, NoTasksPendingError, RemoteTraceback, TaskManagerTermination,
                     TaskRaisedException)
from .master import MasterProcess

log = logging.getLogger(__name__)

#: More distinct functions than this in one Executor is probably a function made per submit.
MANY_FUNCTIONS = 1000

#: Set once rank 0 has handed the MPI ranks to an Executor (they serve one master only).
_mpi_ranks_taken = False


class _LeanCondition(threading.Condition):
    """A ``threading.Condition`` on an RLock, as a Future's, with fewer objects.

    ``Condition.__init__`` binds five methods of its lock to each instance:
    objects that the garbage collector scans again and again while a
    future is pending (measured: about a sixth of the Executor's time with
    20,000 futures pending). Here they are methods of the class.
    """

    def __init__(self):   # not Condition.__init__: see above
        self._lock = threading.RLock()
        self._waiters = collections.deque()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def _release_save(self):
        return self._lock._release_save()

    def _acquire_restore(self, state) -> None:
        self._lock._acquire_restore(state)

    def _is_owned(self) -> bool:
        return self._lock._is_owned()


_PENDING = concurrent.futures._base.PENDING


class Future(concurrent.futures.Future):
    """A ``concurrent.futures.Future`` whose ``cancel()`` withdraws its task from the farm."""

    def __init__(self, executor: "Executor"):
        # The fields of concurrent.futures.Future.__init__, set here rather than by it:
        # it builds a threading.Condition that _LeanCondition would replace at once
        # (measured: a fifth of the master's time in a map of small chunks).
        self._condition = _LeanCondition()
        self._state = _PENDING
        self._result = None
        self._exception = None
        self._waiters = []
        self._done_callbacks = []
        self._executor = executor
        self.task_id: Optional[str] = None   # set by submit

    def cancel(self) -> bool:
        """Cancel the call if no slave has started it; True if it is (now) cancelled."""
        with self._condition:
            if self._state == "PENDING" and not self._executor._withdraw(self):
                return False
        return super().cancel()


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
    ``task_time_limit``, ``tls_cert``, ``tls_key``).

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
        if isinstance(slaves, bool) or not isinstance(slaves, int) or slaves < 0:
            raise ConfigurationError(f"Executor(slaves=...): a whole number >= 0, got {slaves!r}")
        if watchdog_period is not None and not (isinstance(watchdog_period, (int, float)) and watchdog_period > 0):
            raise ConfigurationError(f"Executor(watchdog_period=...): a positive number of seconds or None, "
                                     f"got {watchdog_period!r}")
        under_mpi = mpi.runs_under_mpi()
        if under_mpi and mpi.rank() != 0:
            mpi.serve_as_function_rank(calls.serve_functions)   # a script run directly by mpiexec
        if under_mpi and _mpi_ranks_taken and not slaves:
            raise ConfigurationError(
                "under mpiexec the other ranks serve the script's first Executor only; keep one "
                "Executor for the whole script, or give this one slaves=N")
        self.label = label if label is not None else f"executor-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            self.master = MasterProcess(self.label, **options)
        except TypeError as error:
            raise ConfigurationError(f"Executor: {error} (the options are those of MasterProcess)") from None
        self._functions: Dict[Any, Tuple[Any, str, str]] = {}   # key -> (function, data label, tag)
        self._function_numbers = itertools.count(1)
        self._slots: Dict[str, Any] = {}   # task id -> Future, or an answer that came first
        self._wakeup = threading.Event()
        self._collector_idle = False
        self._shutting_down = False
        self._closed = False
        try:
            source = calls.runner_source(*calls.import_paths(), watchdog_period)
            self.master.store_slave_code(source, None, ["executor-slave"])
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
        self._collector = threading.Thread(target=self._collect, name=f"scientific_ms-collector-{self.label}",
                                           daemon=True)
        self._collector.start()
        atexit.register(_shutdown_at_exit, weakref.ref(self))
        log.info("Executor %r started (%d local slaves)", self.label, slaves)

    # ------------------------------------------------------------------ the public face

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        """Schedule ``fn(*args, **kwargs)``; returns a Future.

        An argument that cannot be pickled raises SerializationError here.
        """
        return self._submit(self._function(fn), (calls.CALL, args, kwargs), self.master.task_time_limit)

    def map(self, fn: Callable, *iterables: Iterable, timeout: Optional[float] = None,
            chunksize: int = 1) -> Iterator:
        """Like the builtin ``map``, in order; every call is submitted at once.

        ``chunksize`` > 1 sends that many calls as one task (its time limit
        covers the whole chunk). Iterating raises TimeoutError if a result
        is not there ``timeout`` seconds after this call, and the first
        exception a call raised.
        """
        return self._map(fn, iterables, timeout, chunksize, self.master.task_time_limit)

    def options(self, *, time_limit: Optional[float] = None) -> "CallOptions":
        """``submit`` and ``map`` with options: ``ex.options(time_limit=60).submit(fn, x)``.

        ``time_limit``: seconds each call (each chunk of a map) may run; a
        call that runs longer raises TaskTimeLimitError (a TimeoutError).
        """
        if time_limit is not None and not (isinstance(time_limit, (int, float)) and time_limit > 0):
            raise ConfigurationError(f"time_limit must be a positive number of seconds or None, "
                                     f"got {time_limit!r}")
        return CallOptions(self, time_limit)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Accept no more calls; the master and its slaves end once every future is done.

        ``cancel_futures``: cancel every call that no slave has started.
        ``wait``: return only when everything has ended.
        """
        self._shutting_down = True
        if cancel_futures:
            for future in reversed(list(self._slots.values())):   # newest first: each withdrawal is O(1)
                if isinstance(future, Future):
                    future.cancel()
        self._wakeup.set()
        if wait:
            self._collector.join()

    def __exit__(self, exc_type, exc_value, traceback) -> bool:
        if exc_type is None:
            self.shutdown(wait=True)
        else:
            # Leaving on an error or Ctrl-C: do not wait for calls that may run for hours.
            # The master ends now, its slaves exit, the calls not done fail.
            self.shutdown(wait=False, cancel_futures=True)
            self.master.shutdown()
            self._collector.join()
        return False

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
        label = f"{calls.FUNCTION_PREFIX}{next(self._function_numbers)}"
        self.master.task_manager.store_data(label, calls.dumps_function(fn))
        tag = calls.tag_for(fn)
        self._functions[key] = (fn, label, tag)   # holds fn, so that its id is not reused
        if len(self._functions) == MANY_FUNCTIONS:
            log.warning("Executor %r has stored %d distinct functions (each is kept until shutdown): "
                        "define functions once rather than per call", self.label, MANY_FUNCTIONS)
        return label, tag

    def _submit(self, function: Tuple[str, str], call: tuple, time_limit: Optional[float]) -> Future:
        if self._shutting_down:
            raise RuntimeError("cannot schedule new futures after shutdown")
        label, tag = function
        payload = calls.dumps_call(tag, (label, *call))
        future = Future(self)
        try:
            task_id = self.master.task_manager.add_task(tag, payload, time_limit=time_limit)
        except TaskManagerTermination:
            raise RuntimeError("cannot schedule new futures after shutdown") from None
        future.task_id = task_id
        slot = self._slots.setdefault(task_id, future)
        if slot is not future:   # its answer came first
            del self._slots[task_id]
            _settle(future, *slot)
        if self._collector_idle:
            self._wakeup.set()
        if self._closed:   # the collector ended meanwhile: nobody else will complete it
            self._fail_leftovers()
        return future

    def _map(self, fn: Callable, iterables: Tuple[Iterable, ...], timeout: Optional[float],
             chunksize: int, time_limit: Optional[float]) -> Iterator:
        if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
            raise ConfigurationError(f"map(chunksize=...): a whole number >= 1, got {chunksize!r}")
        end = None if timeout is None else time.monotonic() + timeout
        function = self._function(fn)
        tasks = ((calls.CALL, args, {}) for args in zip(*iterables)) if chunksize == 1 else \
            calls.chunks(iterables, chunksize)
        futures: List[Future] = []
        try:
            for task in tasks:
                futures.append(self._submit(function, task, time_limit))
        except BaseException:   # e.g. an item that cannot be pickled: nothing of this map runs
            for future in reversed(futures):
                future.cancel()
            raise
        if chunksize == 1:
            return _results(futures, end)
        # Items are taken from each chunk's list by C code: no Python frame per item.
        return itertools.chain.from_iterable(_results(futures, end))

    def _withdraw(self, future: Future) -> bool:
        """Take a waiting task back from the manager (called by Future.cancel)."""
        if future.task_id is None or not self.master.task_manager.cancel_task(future.task_id):
            return False
        self._slots.pop(future.task_id, None)
        return True

    # ------------------------------------------------------------------ the collector thread

    def _collect(self) -> None:
        failure: BaseException = RuntimeError("the executor was shut down before this call was done")
        try:
            self._collect_answers()
        except BaseException as error:   # a bug here must not leave futures waiting for ever
            log.exception("the collector of Executor %r failed", self.label)
            failure = error
        finally:
            try:
                self.master.shutdown()
            finally:
                self._closed = True
                self._fail_leftovers(failure)

    def _collect_answers(self) -> None:
        master, slots = self.master, self._slots
        while True:
            try:
                task_id, _, value = master.retrieveResult()
                ok = True
            except TaskRaisedException as error:
                task_id, value, ok = error.task_id, _remote(error), False
            except NoTasksPendingError:
                if self._shutting_down:
                    return
                if not self._collector_idle:
                    self._collector_idle = True   # say so, then look once more before waiting
                    continue
                log.debug("Executor %r: no calls outstanding; waiting for one", self.label)
                self._wakeup.wait()
                self._wakeup.clear()
                self._collector_idle = False
                continue
            if task_id is None:   # the task manager was terminated under us
                log.warning("the task manager of Executor %r ended; failing the calls not done", self.label)
                return
            slot = slots.setdefault(task_id, (ok, value))
            if type(slot) is not tuple:   # the future is there: complete it (else submit will)
                del slots[task_id]
                _settle(slot, ok, value)

    def _fail_leftovers(self, error: Optional[BaseException] = None) -> None:
        error = error or RuntimeError("the executor was shut down before this call was done")
        while True:
            try:
                _, slot = self._slots.popitem()
            except KeyError:
                return
            if isinstance(slot, Future) and slot.set_running_or_notify_cancel():
                slot.set_exception(error)


class CallOptions:
    """``submit`` and ``map`` of an Executor with per-call options (see ``Executor.options``)."""

    def __init__(self, executor: Executor, time_limit: Optional[float]):
        self._executor = executor
        self.time_limit = time_limit

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        executor = self._executor
        return executor._submit(executor._function(fn), (calls.CALL, args, kwargs), self.time_limit)

    def map(self, fn: Callable, *iterables: Iterable, timeout: Optional[float] = None,
            chunksize: int = 1) -> Iterator:
        return self._executor._map(fn, iterables, timeout, chunksize, self.time_limit)


def _settle(future: Future, ok: bool, value: Any) -> None:
    if future.set_running_or_notify_cancel():
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def _remote(error: TaskRaisedException) -> BaseException:
    """The exception a call raised on its slave, with the slave's traceback as its cause."""
    exception = error.exception
    exception.__cause__ = RemoteTraceback(error.traceback)
    return exception


def _results(futures: List[Future], end: Optional[float]) -> Iterator:
    """Yield the futures' results in order; cancel the rest if the caller stops early
    (or drops the iterator: the generator is closed when it is collected)."""
    try:
        futures.reverse()   # pop() from the end: no reference kept to results already yielded
        while futures:
            future = futures.pop()
            yield future.result() if end is None else future.result(end - time.monotonic())
    finally:
        for future in futures:
            future.cancel()


def _shutdown_at_exit(reference: "weakref.ref[Executor]") -> None:
    executor = reference()
    if executor is not None:
        executor.shutdown(wait=True, cancel_futures=True)
