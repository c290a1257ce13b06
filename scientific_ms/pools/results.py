"""What a Pool's callers wait on, as multiprocessing.pool's: AsyncResult, MapResult, IMapIterator.

An AsyncResult and an IMapIterator are fed by the Executor's futures (one
per call, or per chunk of an imap) through their done-callbacks, on the
Executor's collector thread; a MapResult by the Pool's thread that reads
the map's answers in order. As in multiprocessing, a result's
``callback`` or ``error_callback`` runs on that thread, before ``get()``
returns: it should be quick and must not wait for other results of the
same Pool.
"""

from __future__ import annotations

import builtins
import collections
import concurrent.futures
import logging
import multiprocessing
import threading
import time
from typing import Any, Callable, Deque, Dict, Optional, Tuple

log = logging.getLogger(__name__)


class TimeoutError(multiprocessing.TimeoutError, builtins.TimeoutError):
    """A result not there in time: both ``multiprocessing.TimeoutError`` and the builtin TimeoutError."""


def outcome(future: concurrent.futures.Future) -> Tuple[bool, Any]:
    """(True, result) or (False, exception) of a done future; a withdrawn task failed."""
    if future.cancelled():
        return False, RuntimeError("the pool was terminated before this call ran")
    error = future.exception()
    return (False, error) if error is not None else (True, future.result())


class AsyncResult:
    """The result of ``apply_async`` (and the base of ``map_async``'s), as ``multiprocessing.pool``'s."""

    def __init__(self, callback: Optional[Callable[[Any], Any]] = None,
                 error_callback: Optional[Callable[[BaseException], Any]] = None):
        self._event = threading.Event()
        self._callback = callback
        self._error_callback = error_callback
        self._success = False
        self._value: Any = None

    def ready(self) -> bool:
        """True once the call has completed (returned or raised)."""
        return self._event.is_set()

    def successful(self) -> bool:
        """True if the call returned; ValueError while it is not ready."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._success

    def wait(self, timeout: Optional[float] = None) -> None:
        """Wait until the result is there, or ``timeout`` seconds have passed."""
        self._event.wait(timeout)

    def get(self, timeout: Optional[float] = None) -> Any:
        """The result; the call's exception (the remote traceback as its ``__cause__``);
        TimeoutError (multiprocessing's) if not there within ``timeout`` seconds."""
        self.wait(timeout)
        if not self.ready():
            raise TimeoutError(f"the result was not there within {timeout} s")
        if self._success:
            return self._value
        raise self._value

    def _set(self, success: bool, value: Any) -> None:
        self._success, self._value = success, value
        callback = self._callback if success else self._error_callback
        try:
            if callback is not None:
                callback(value)
        except Exception:   # the collector thread must go on (multiprocessing's result thread would die)
            log.exception("the %s of a Pool result raised", "callback" if success else "error_callback")
        finally:
            self._event.set()

    def settle(self, future: concurrent.futures.Future) -> None:
        """Take the outcome of the call's future (a done-callback the Pool adds)."""
        self._set(*outcome(future))


class MapResult(AsyncResult):
    """The result of ``map_async`` and ``starmap_async``: the list of every chunk's results
    (the first chunk that failed, in order, fails it)."""

    def finish(self, success: bool, value: Any) -> None:
        """The map's outcome, given once by the thread that reads its chunks (or by the map
        that failed while submitting them)."""
        if not self.ready():
            self._set(success, value)


class IMapIterator:
    """The results of ``imap`` (in order) or ``imap_unordered`` (as they come).

    ``next(timeout)`` raises TimeoutError (multiprocessing's) if the next
    result is not there in time. A chunk's results come together; a chunk
    that failed raises its exception once, in its place.
    """

    def __init__(self, ordered: bool):
        self._ordered = ordered
        self._condition = threading.Condition(threading.Lock())
        self._done: Dict[int, Tuple[bool, Any]] = {}    # ordered: chunk index -> outcome
        self._arrived: Deque[Tuple[bool, Any]] = collections.deque()   # unordered: outcomes
        self._items: Deque[Any] = collections.deque()   # the rest of the chunk being read
        self._next = 0          # chunks given to the reader
        self._total: Optional[int] = None   # chunks in all, once the feeder has seen the end

    def __iter__(self) -> IMapIterator:
        return self

    def next(self, timeout: Optional[float] = None) -> Any:
        """The next result; TimeoutError after ``timeout`` seconds without one."""
        if self._items:
            return self._items.popleft()
        end = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while True:
                taken = self._take()
                if taken is not None:
                    break
                if self._total is not None and self._next >= self._total:
                    raise StopIteration
                remaining = None if end is None else end - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"the next result was not there within {timeout} s")
                self._condition.wait(remaining)
        ok, value = taken
        if not ok:
            raise value
        self._items.extend(value)
        if not self._items:   # an empty chunk (a chunk is never empty; kept for safety)
            return self.next(timeout)
        return self._items.popleft()

    __next__ = next

    def _take(self) -> Optional[Tuple[bool, Any]]:
        if self._ordered:
            taken = self._done.pop(self._next, None)
        else:
            taken = self._arrived.popleft() if self._arrived else None
        if taken is not None:
            self._next += 1
        return taken

    # ---------------------------------------------------------------- fed by the Pool

    def add(self, index: int, future: concurrent.futures.Future) -> None:
        """Chunk ``index`` was submitted as ``future``."""
        future.add_done_callback(lambda done: self.settle(index, *outcome(done)))

    def settle(self, index: int, ok: bool, value: Any) -> None:
        """Chunk ``index`` has its outcome (a list of results, or an exception)."""
        with self._condition:
            if self._ordered:
                self._done[index] = (ok, value)
            else:
                self._arrived.append((ok, value))
            self._condition.notify()

    def finish(self, total: int) -> None:
        """The feeder is done: ``total`` chunks in all."""
        with self._condition:
            self._total = total
            self._condition.notify()
