"""``multiprocessing.Pool``'s interface on the farm, built on an :class:`Executor`.

::

    Pool.map / starmap / *_async  -- chunks --> Executor.map(Runner(f), kinds, chunks)
                                                 a reader thread per map completes its MapResult
    Pool.imap / imap_unordered    -- chunks, in a feeder thread --> Executor.submit(Runner(f), MAP, chunk)
    Pool.apply / apply_async      -- one call --> Executor.submit(Runner(f), APPLY, args, kwds)
    futures' done-callbacks (the Executor's collector thread) --> AsyncResult / IMapIterator

Every task is an Executor call, so the Executor's guarantees hold: a task
whose slave dies runs again elsewhere, each result is delivered once, a
call's exception is raised in the caller with the slave's traceback as its
``__cause__``. The function goes to the slaves once (see ``runner``).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import os
import secrets
import threading
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

from ..errors import ConfigurationError
from ..executor.executor import Executor
from .results import AsyncResult, IMapIterator, MapResult
from .runner import APPLY, MAP, STARMAP, Initializer, Runner

log = logging.getLogger(__name__)

RUN, CLOSE, TERMINATE = "RUN", "CLOSE", "TERMINATE"


class Pool:
    """A ``multiprocessing.Pool`` whose worker processes are scientific_ms slaves.

    ``processes``: how many slaves to start on this machine (default:
    ``os.cpu_count()``; with a ``label``: none). ``label``: the job's
    label, so that slaves started elsewhere with ``task_manager slave
    LABEL`` serve this Pool. ``executor``: an existing :class:`Executor`
    to run on instead (the Pool then does not end it). ``options``: those
    of :class:`Executor` (``use_name_server``, ``slave_restarts``,
    ``task_time_limit``, ...).

    ``initializer(*initargs)`` runs once in each slave process, before its
    first call of this Pool. ``maxtasksperchild`` is not supported (slaves
    are long-lived); ``context`` is accepted and ignored: local slaves are
    spawned, or forked from a fork server that is a fresh interpreter, never
    from this process, as an Executor's are (``start_method`` among the
    ``options`` decides; see docs/guide/warm-start.md).

    As multiprocessing's, leaving a ``with`` block calls :meth:`terminate`;
    ``close()`` then ``join()`` waits for the work submitted.
    """

    def __init__(self, processes: Optional[int] = None, initializer: Optional[Callable] = None,
                 initargs: Sequence = (), maxtasksperchild: Optional[int] = None, context: Any = None, *,
                 label: Optional[str] = None, executor: Optional[Executor] = None, **options: Any):
        if maxtasksperchild is not None:
            raise ConfigurationError(
                "Pool(maxtasksperchild=...) is not supported: scientific_ms slaves are long-lived. "
                "Use initializer= for per-process set-up; to bound a leak, run the leaky part in a "
                "subprocess of the call, or use a fresh Pool per batch of work")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if executor is not None:
            if processes is not None or label is not None or options:
                raise ConfigurationError("Pool(executor=...) runs on that Executor's slaves: give no "
                                         "processes, label or Executor options with it")
        elif processes is None:
            processes = 0 if label is not None else (os.cpu_count() or 1)
        elif isinstance(processes, bool) or not isinstance(processes, int) or processes < (0 if label else 1):
            raise ConfigurationError(f"Pool(processes=...): a whole number >= {0 if label else 1}, "
                                     f"got {processes!r}")
        self._processes = processes or 0
        self._executor = executor if executor is not None else Executor(label, slaves=self._processes, **options)
        self._owns_executor = executor is None
        self._initializer = Initializer(secrets.token_hex(8), initializer, initargs) if initializer else None
        self._runners: Dict[Any, Tuple[Callable, Runner]] = {}
        self._pending: Set[concurrent.futures.Future] = set()   # this Pool's futures not done yet
        self._pending_lock = threading.Lock()
        # feeders of imaps, readers of maps (with the map's iterator and result)
        self._threads: List[Tuple[threading.Thread, Optional[Tuple[Any, MapResult]]]] = []
        self._state = RUN

    @property
    def label(self) -> str:
        """The job's label: ``task_manager slave LABEL`` adds slaves to this Pool."""
        return self._executor.label

    @property
    def executor(self) -> Executor:
        """The Executor this Pool runs on (its ``master`` shows the counters and the slaves)."""
        return self._executor

    def __repr__(self) -> str:
        return f"<scientific_ms.Pool state={self._state} label={self.label!r} local_slaves={self._processes}>"

    def __reduce__(self):
        raise NotImplementedError("pool objects cannot be passed between processes or pickled")

    # ------------------------------------------------------------------ calls

    def apply(self, func: Callable, args: Sequence = (), kwds: Optional[dict] = None) -> Any:
        """``func(*args, **kwds)`` on a slave; blocks until it is done."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(self, func: Callable, args: Sequence = (), kwds: Optional[dict] = None,
                    callback: Optional[Callable] = None, error_callback: Optional[Callable] = None) -> AsyncResult:
        """``func(*args, **kwds)`` on a slave; an AsyncResult."""
        self._check_running()
        result = AsyncResult(callback, error_callback)
        self._submit(func, APPLY, tuple(args), dict(kwds or {})).add_done_callback(result.settle)
        return result

    def map(self, func: Callable, iterable: Iterable, chunksize: Optional[int] = None) -> list:
        """``[func(x) for x in iterable]``, in chunks (default: about four per slave)."""
        return self._map_async(func, iterable, MAP, chunksize, None, None).get()

    def map_async(self, func: Callable, iterable: Iterable, chunksize: Optional[int] = None,
                  callback: Optional[Callable] = None, error_callback: Optional[Callable] = None) -> MapResult:
        """:meth:`map` without waiting: an AsyncResult whose ``get()`` is the list."""
        return self._map_async(func, iterable, MAP, chunksize, callback, error_callback)

    def starmap(self, func: Callable, iterable: Iterable[Iterable], chunksize: Optional[int] = None) -> list:
        """``[func(*args) for args in iterable]``, in chunks."""
        return self._map_async(func, iterable, STARMAP, chunksize, None, None).get()

    def starmap_async(self, func: Callable, iterable: Iterable[Iterable], chunksize: Optional[int] = None,
                      callback: Optional[Callable] = None, error_callback: Optional[Callable] = None) -> MapResult:
        """:meth:`starmap` without waiting."""
        return self._map_async(func, iterable, STARMAP, chunksize, callback, error_callback)

    def imap(self, func: Callable, iterable: Iterable, chunksize: int = 1) -> IMapIterator:
        """The results of ``func`` over ``iterable``, in order, as they come; the iterable is
        read by a thread of the Pool (it may be a generator)."""
        return self._imap(func, iterable, chunksize, ordered=True)

    def imap_unordered(self, func: Callable, iterable: Iterable, chunksize: int = 1) -> IMapIterator:
        """As :meth:`imap`, in the order the results come."""
        return self._imap(func, iterable, chunksize, ordered=False)

    # ------------------------------------------------------------------ the end

    def close(self) -> None:
        """Accept no more work; what was submitted still runs (then :meth:`join`)."""
        if self._state == RUN:
            self._state = CLOSE

    def terminate(self) -> None:
        """End now: the calls not done fail. An own Executor ends with its slaves; a given one
        only has this Pool's calls that no slave started withdrawn."""
        self._state = TERMINATE
        with self._pending_lock:
            pending = list(self._pending)
        for future in pending:   # a withdrawn call is done (cancelled) at once: it leaves _pending
            future.cancel()
        if self._owns_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)   # maps' waiting tasks too
            if sum(self._executor.master.task_manager.counts().get("running", {}).values()):
                self._executor.master.shutdown()   # the slaves end, and the calls they run fail
            self._executor.shutdown(wait=True)   # (else: a quiet ending)
        self._end_threads()

    def join(self) -> None:
        """Wait until the work submitted is done (after :meth:`close` or :meth:`terminate`)."""
        if self._state == RUN:
            raise ValueError("Pool is still running: call close() or terminate() before join()")
        self._join_threads()
        while True:
            with self._pending_lock:
                pending = list(self._pending)
            if not pending:
                break
            concurrent.futures.wait(pending)
        if self._owns_executor:
            self._executor.shutdown(wait=True)

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, exc_type, exc_value, traceback) -> None:
        self.terminate()

    # ------------------------------------------------------------------ inside

    def _check_running(self) -> None:
        if self._state != RUN:
            raise ValueError("Pool not running")

    def _runner(self, func: Callable) -> Runner:
        """The Runner of ``func``, made once: the Executor stores each Runner once."""
        try:
            key: Any = (func,)   # equal bound methods share one (a bound method is new at each access)
            known = self._runners.get(key)
        except TypeError:   # unhashable: by identity
            key = id(func)
            known = self._runners.get(key)
            known = known if known is not None and known[0] is func else None
        if known is None:
            if not callable(func):
                raise TypeError(f"Pool: a callable is needed, got {type(func).__name__} {func!r}")
            known = self._runners[key] = (func, Runner(func, self._initializer))
        return known[1]

    def _submit(self, func: Callable, kind: int, arguments: Sequence,
                keywords: Optional[dict] = None) -> concurrent.futures.Future:
        runner = self._runner(func)
        future = self._executor.submit(runner, kind, arguments, keywords) if keywords else \
            self._executor.submit(runner, kind, arguments)
        with self._pending_lock:
            self._pending.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: concurrent.futures.Future) -> None:
        with self._pending_lock:
            self._pending.discard(future)

    def _map_async(self, func: Callable, iterable: Iterable, kind: int, chunksize: Optional[int],
                   callback: Optional[Callable], error_callback: Optional[Callable]) -> MapResult:
        """The chunks go as one ``Executor.map`` (queued in batches, a light slot per task), read in
        order by a thread of the Pool that completes the MapResult."""
        self._check_running()
        items = iterable if hasattr(iterable, "__len__") else list(iterable)
        if chunksize is None:
            chunksize = self._default_chunksize(len(items))   # type: ignore[arg-type]
        _check_chunksize(chunksize)
        chunks = list(_chunks(items, chunksize))
        result = MapResult(callback, error_callback)
        if not chunks:
            result.finish(True, [])
            return result
        try:
            answers = self._executor.map(self._runner(func), itertools.repeat(kind, len(chunks)), chunks)
        except BaseException as error:   # e.g. an item that cannot be pickled: nothing of this map runs
            result.finish(False, error)
            raise
        self._start(self._read, answers, result, name="reader", map_of=(answers, result))
        return result

    @staticmethod
    def _read(answers: Iterator[list], result: MapResult) -> None:
        """Complete ``result`` from the map's chunks, in order (the first that failed fails it)."""
        try:
            values = [value for chunk in answers for value in chunk]
        except concurrent.futures.CancelledError:   # withdrawn by terminate()
            result.finish(False, RuntimeError("the pool was terminated before this call ran"))
        except BaseException as error:
            result.finish(False, error)
        else:
            result.finish(True, values)

    def _default_chunksize(self, count: int) -> int:
        """As multiprocessing's: about four chunks per worker (here: per local slave, else per
        slave connected now)."""
        workers = self._processes or self._executor.master.task_manager.slave_count or 1
        chunksize, extra = divmod(count, workers * 4)
        return chunksize + 1 if extra else max(chunksize, 1)

    def _imap(self, func: Callable, iterable: Iterable, chunksize: int, ordered: bool) -> IMapIterator:
        self._check_running()
        _check_chunksize(chunksize)
        self._runner(func)   # a non-callable raises here, in the caller
        results = IMapIterator(ordered)
        self._start(self._feed, func, iterable, chunksize, results, name="feeder")
        return results

    def _feed(self, func: Callable, iterable: Iterable, chunksize: int, results: IMapIterator) -> None:
        """Submit ``iterable``'s chunks as they come (a thread's work: the iterable may be slow)."""
        index = 0
        try:
            for chunk in _chunks(iterable, chunksize):
                if self._state == TERMINATE:
                    break
                results.add(index, self._submit(func, MAP, chunk))
                index += 1
        except BaseException as error:   # the iterable raised, or a chunk cannot be pickled: in its place
            results.settle(index, False, error)
            index += 1
        finally:
            results.finish(index)

    def _start(self, target: Callable, *args: Any, name: str, map_of: Optional[Tuple[Any, MapResult]] = None) -> None:
        """Run ``target(*args)`` in a thread of this Pool (``map_of``: the iterator and the
        result of the map it reads, for terminate())."""
        thread = threading.Thread(target=target, args=args, name=f"scientific_ms-pool-{name}-{self.label}",
                                  daemon=True)
        with self._pending_lock:
            self._threads = [entry for entry in self._threads if entry[0].is_alive()] + [(thread, map_of)]
        thread.start()

    def _end_threads(self) -> None:
        """terminate(): withdraw the maps' tasks that no slave has started and fail the maps; wait
        for the feeders (and for the readers, once an own Executor has ended: they end with it;
        a given Executor's slaves may still run a map's tasks, and its reader waits for them)."""
        with self._pending_lock:
            threads = list(self._threads)
        for _, map_of in threads:
            if map_of is not None:
                answers, result = map_of
                answers.close()
                result.finish(False, RuntimeError("the pool was terminated before this map was done"))
        self._join_threads([thread for thread, map_of in threads if map_of is None or self._owns_executor])

    def _join_threads(self, threads: Optional[List[threading.Thread]] = None) -> None:
        if threads is None:
            with self._pending_lock:
                threads = [thread for thread, _ in self._threads]
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join()


def _check_chunksize(chunksize: Any) -> None:
    if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
        raise ConfigurationError(f"chunksize must be a whole number >= 1, got {chunksize!r}")


def _chunks(iterable: Iterable, size: int) -> Iterator[list]:
    items = iter(iterable)
    return iter(lambda: list(itertools.islice(items, size)), [])
