"""An Executor's per-call options: ``ex.options(priority=..., retries=...).submit(fn, x)``.

``Executor.options`` checks the options and returns a :class:`CallOptions`,
a lightweight view whose ``submit`` and ``map`` are the Executor's, with
these options (a :class:`CallSteering`) for every call they queue (as
Ray's ``.options``).
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Iterable, Iterator, NamedTuple, Optional

from ..core.needs import Need
from ..core.steering import Retry
from .futures import Future


class CallSteering(NamedTuple):
    """The options of a call, as ``MasterProcess.add_pickled_tasks`` takes them."""
    time_limit: Optional[float]
    priority: float = 0
    retry: Optional[Retry] = None
    need: Optional[Need] = None   # the resources each call holds while it runs
    affinity: Optional[Hashable] = None   # the key of each call (core/affinity.py)


class CallOptions:
    """``submit`` and ``map`` of an Executor with per-call options (see ``Executor.options``)."""

    def __init__(self, submit: Callable[..., Future], map_calls: Callable[..., Iterator],
                 steering: CallSteering):
        self._submit = submit
        self._map = map_calls
        self.steering = steering

    @property
    def time_limit(self) -> Optional[float]:
        return self.steering.time_limit

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        """``Executor.submit`` with these options."""
        return self._submit(fn, args, kwargs, self.steering)

    def map(self, fn: Callable, *iterables: Iterable, timeout: Optional[float] = None,
            chunksize: int = 1) -> Iterator:
        """``Executor.map`` with these options."""
        return self._map(fn, iterables, timeout, chunksize, self.steering)
