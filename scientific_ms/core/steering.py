"""Steering rules of the scheduler: concurrency limits per tag and retries.

Pure, as ``scheduling.py``, which applies them (with the task traffic,
``traffic.py``): :class:`ConcurrencyLimits` says which tags are full;
:func:`check_steering` checks a request's priority and retry options;
:func:`retries_again`, :func:`retry_elsewhere` and :func:`attempts_note`
decide whether a failed task runs again, where, and what its last failure
says of its attempts.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Iterable, Mapping, NamedTuple, Optional, Set, Tuple

from ..errors import ConfigurationError
from .registry import ProcessRecord
from .tasks import Task, handles


class ConcurrencyLimits(Dict[str, int]):
    """At most n tasks of a tag assigned at once across the farm (a licence, a shared
    filesystem, a database): running, or queued on a slave behind the task it runs.

    A dict, tag -> limit (its truth and ``get`` cost nothing on the hot path); change it
    through :meth:`set`, which checks the limit."""

    def set(self, tag: str, limit: Optional[int]) -> None:
        """Limit ``tag`` to ``limit`` tasks at once (None: no limit)."""
        if limit is None:
            self.pop(tag, None)
            return
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigurationError(f"limit_concurrency({tag!r}, n): n must be a whole number >= 1 "
                                     f"(or None: no limit), got {limit!r}")
        self[tag] = limit

    def full(self, running: Mapping[str, int]) -> Set[str]:
        """The limited tags that have as many tasks assigned (``running``) as their limit."""
        return {tag for tag, limit in self.items() if running.get(tag, 0) >= limit}


class Retry(NamedTuple):
    """How a task whose handler raised runs again (one object shared by the tasks of a request)."""
    retries: int                                  # more attempts after the first
    retry_on: Optional[Tuple[type, ...]] = None   # None: any exception


def check_steering(priority: object, retries: object, retry_on: object) -> Optional[Retry]:
    """Raise ConfigurationError, saying why, unless the options make sense; the Retry (None: no retries)."""
    if priority == 0 and retries == 0 and retry_on is None and type(priority) is int and type(retries) is int:
        return None   # the defaults: every task of most jobs, checked at once
    if isinstance(priority, bool) or not isinstance(priority, (int, float)) or math.isnan(priority):
        raise ConfigurationError(f"priority must be a number (higher goes first, default 0), got {priority!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigurationError(f"retries must be a whole number >= 0 (attempts after the first), got {retries!r}")
    if retry_on is None:
        return Retry(retries) if retries else None
    classes = retry_on if isinstance(retry_on, tuple) else (retry_on,)
    if not classes or not all(isinstance(c, type) and issubclass(c, BaseException) for c in classes):
        raise ConfigurationError(f"retry_on must be an exception class or a tuple of them, got {retry_on!r}")
    if not retries:
        raise ConfigurationError(f"retry_on={retry_on!r} without retries: give retries=k as well")
    return Retry(retries, classes)


def retries_again(retry: Optional[Retry], attempts: int,
                  error_of: Callable[[], Optional[BaseException]]) -> bool:
    """Does a task run again after an attempt failed (``attempts`` failed before it)?

    ``error_of()``: the exception the handler raised, None if the master cannot
    rebuild it; asked only for a ``retry_on`` other than the default (any),
    which such an exception does not match.
    """
    if retry is None or attempts >= retry.retries:
        return False
    if retry.retry_on is None:
        return True
    error = error_of()
    return error is not None and isinstance(error, retry.retry_on)


def retry_elsewhere(task: Task, proc: ProcessRecord, slaves: Iterable[ProcessRecord]) -> bool:
    """Should ``proc`` leave the retried ``task`` to another slave? Yes if an attempt
    failed on ``proc`` and another registered slave that can run it failed none."""
    if task.failed_on is None:
        return False
    failed = {process_id for process_id, _ in task.failed_on}
    return proc.process_id in failed and any(
        other.tags is not None and other.process_id not in failed and handles(other.tags, task.tag)
        for other in slaves)


def attempts_note(task: Task, retried: bool) -> str:
    """The line that goes before the traceback of a retried task's last failure (``retried``:
    it had retries left, its exception was not one of ``retry_on``)."""
    retry = task.retry
    if not isinstance(retry, Retry):
        return ""
    made, allowed = task.attempts + 1, retry.retries + 1
    if made >= allowed:
        why = f"every attempt failed (retries={retry.retries})"
    elif not retried:
        names = ", ".join(c.__name__ for c in retry.retry_on or ())
        why = f"not retried: its exception is not one of retry_on ({names})"
    else:
        why = "not retried"
    where = "; earlier attempts failed on " + ", ".join(desc for _, desc in task.failed_on) \
        if task.failed_on else ""
    return f"scientific_ms: task {task.task_id} failed on attempt {made} of {allowed}: {why}{where}\n"
