"""What an Executor's callers wait on: a Future per submit, a light slot per task of a map.

A map of 200,000 items in chunks of 64 leaves 3,125 tasks pending at
once. A ``concurrent.futures.Future`` for each would cost a lock, a
condition and two lists, all scanned by the garbage collector again and
again while they wait, and an uncontended lock round trip to complete.
A map's tasks are :class:`MapSlot` objects instead, read in order by the
map's iterator, which waits on one condition for the whole map.

Both kinds have the same two methods the Executor calls:

* ``settle(ok, value)``: the answer (result, or exception), given once by
  the collector thread, or a failure when the Executor ends without it;
* ``cancel()``: withdraw the task if no slave has started it, through the
  ``withdraw`` function the Executor gave them.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import threading
import time
from typing import Any, Callable, Deque, Iterator, List, Optional, Protocol, cast


class _ConditionLock(Protocol):
    """What ``threading.Condition`` uses of an RLock (its owner checks and save/restore on wait)."""

    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...

    def release(self) -> None: ...

    def _release_save(self) -> Any: ...

    def _acquire_restore(self, state: Any) -> None: ...

    def _is_owned(self) -> bool: ...


class _LeanCondition(threading.Condition):
    """A ``threading.Condition`` on an RLock, as a Future's, with fewer objects.

    ``Condition.__init__`` binds five methods of its lock to each instance:
    objects that the garbage collector scans again and again while a
    future is pending (measured: about a sixth of the Executor's time with
    20,000 futures pending). Here they are methods of the class.
    """

    def __init__(self) -> None:   # not Condition.__init__: see above
        # threading.Condition's protocol with its lock: an RLock has these methods (in C), its stub does not.
        self._lock = cast(_ConditionLock, threading.RLock())
        self._waiters: Deque[Any] = collections.deque()

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
_CANCELLED = concurrent.futures._base.CANCELLED


class Future(concurrent.futures.Future):
    """A ``concurrent.futures.Future`` whose ``cancel()`` withdraws its task from the farm."""

    def __init__(self, withdraw: Callable[[Any], bool], started: Callable[[str], bool]):
        # The fields of concurrent.futures.Future.__init__, set here rather than by it:
        # it builds a threading.Condition that _LeanCondition would replace at once
        # (measured: a fifth of the master's time in a map of small chunks).
        self._condition = _LeanCondition()
        self._state = _PENDING
        self._result = None
        self._exception = None
        self._waiters: List[Any] = []
        self._done_callbacks: List[Callable[[concurrent.futures.Future], object]] = []
        self._withdraw = withdraw   # withdraw(future): take the task back if no slave started it
        self._started = started     # started(task_id): has a slave taken the task?
        self.task_id: Optional[str] = None   # set once the task is queued

    def cancel(self) -> bool:
        """Cancel the call if no slave has started it; True if it is (now) cancelled."""
        with self._condition:
            if self._state == _PENDING and not self._withdraw(self):
                return False
        if not super().cancel():
            return False
        # A standard executor calls set_running_or_notify_cancel() when it reaches a cancelled
        # future: that wakes wait() and as_completed(), which count only CANCELLED_AND_NOTIFIED
        # as done. A withdrawn task never reaches a slave, so do it now.
        with self._condition:   # an RLock: set_running_or_notify_cancel takes it again
            if self._state == _CANCELLED:
                self.set_running_or_notify_cancel()
        return True

    def running(self) -> bool:
        """True while a slave runs the call (asked of the master's task manager)."""
        if super().running():
            return True
        with self._condition:
            if self._state != _PENDING or self.task_id is None:
                return False
        return self._started(self.task_id)

    def settle(self, ok: bool, value: Any) -> None:
        if self.cancelled():   # withdrawn: its answer, if any, is not for anyone
            return
        if self.set_running_or_notify_cancel():
            if ok:
                self.set_result(value)
            else:
                self.set_exception(value)


class MapSlot:
    """One task of a map: its answer, once there (``done``)."""

    __slots__ = ("task_id", "_map", "ok", "value", "done")

    def __init__(self, map_results: MapResults):
        self.task_id: Optional[str] = None   # set once the task is queued
        self._map = map_results
        self.ok = False
        self.value: Any = None
        self.done = False

    def cancel(self) -> bool:
        """Withdraw the task if no slave has started it; reading it then raises CancelledError."""
        if self.done or not self._map.withdraw(self):
            return False
        self.settle(False, concurrent.futures.CancelledError())
        return True

    def settle(self, ok: bool, value: Any) -> None:
        condition = self._map.condition
        with condition:   # the reader checks ``done`` and starts waiting under it: no wake-up lost
            if self.done:
                return
            self.ok, self.value, self.done = ok, value, True
            if self._map.reading is self:
                condition.notify()


class MapResults:
    """The slots of one map, in order, and the one condition its reader waits on."""

    def __init__(self, withdraw: Callable[[Any], bool]):
        self.withdraw = withdraw
        self.condition = threading.Condition(threading.Lock())
        self.reading: Optional[MapSlot] = None   # the slot the reader waits for
        self.slots: List[MapSlot] = []

    def new_slots(self, count: int) -> List[MapSlot]:
        slots = [MapSlot(self) for _ in range(count)]
        self.slots += slots
        return slots

    def cancel(self) -> None:
        """Withdraw every task not started (newest first: each withdrawal is then O(1))."""
        for slot in reversed(self.slots):
            slot.cancel()

    def iterator(self, end: Optional[float], chunked: bool) -> Iterator:
        """The answers in order (with ``chunked``: the items of the answers, lists)."""
        answers = MapIterator(self, end)
        self.slots = []   # the iterator holds them now
        return flatten(answers) if chunked else answers

    def wait_for(self, slot: MapSlot, end: Optional[float]) -> None:
        """Return once ``slot`` is done; TimeoutError at ``end`` (a monotonic time; None: never)."""
        with self.condition:
            self.reading = slot
            try:
                while not slot.done:
                    remaining = None if end is None else end - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise concurrent.futures.TimeoutError(
                            f"map: a result was not there within its timeout (task {slot.task_id})")
                    self.condition.wait(remaining)
            finally:
                self.reading = None


class MapIterator:
    """The answers of a map in order: the first exception is raised, TimeoutError at ``end``.

    If the caller stops early, :meth:`close` (or dropping the iterator, even
    before reading anything) withdraws the tasks not started.
    """

    def __init__(self, results: MapResults, end: Optional[float]):
        self._results = results
        self._end = end
        self._slots = results.slots[::-1]   # pop() from the end: no reference kept to answers read

    def __iter__(self) -> MapIterator:
        return self

    def __next__(self) -> Any:
        slots = self._slots
        if not slots:
            raise StopIteration
        slot = slots[-1]
        if not slot.done:
            try:
                self._results.wait_for(slot, self._end)
            except BaseException:   # a timeout, or Ctrl-C: this one is withdrawn with the rest
                self.close()
                raise
        slots.pop()
        if not slot.ok:
            self.close()
            raise slot.value
        return slot.value

    def close(self) -> None:
        """Withdraw every task not started (newest first: each withdrawal is then O(1))."""
        slots, self._slots = self._slots, []
        for slot in slots:
            slot.cancel()

    __del__ = close


class FlatMapIterator(itertools.chain):
    """The items of a chunked map's lists, taken by C code (no Python frame per item),
    with the :meth:`close` of its :class:`MapIterator`."""

    chunks: MapIterator

    def close(self) -> None:
        self.chunks.close()


def flatten(chunks: MapIterator) -> FlatMapIterator:
    flat = cast(FlatMapIterator, FlatMapIterator.from_iterable(chunks))   # a classmethod: an instance of ours
    flat.chunks = chunks
    return flat
