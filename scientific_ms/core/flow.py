"""The flow policy: how much work a slave holds, how many tasks it asks for,
how long its answers wait, and how task durations are averaged.

Pure (no I/O, no clock): the slave's feed (``slave/feed.py``) and the
master's scheduler (``scheduling.py``) both decide by these numbers and
functions, so that the two sides of an ``exchange`` agree.

The rules:

- **Queued work.** While its tasks are short (under ``PREFETCH_BELOW`` s on
  average, or under its queue target when that is longer) a slave keeps
  work queued behind the task it runs: ``TARGET_QUEUE_SECONDS`` of it, or
  ``RTT_FACTOR`` round trips to its master if that is more
  (:func:`queue_target`), so that the queue never runs dry while a call is
  on its way, however far the master is. Close to the master (a round trip
  of a millisecond) the fixed target decides.
- **What the master grants.** The slave sends its target with each call
  that asks for tasks; the scheduler queues work on it while what it holds
  is under that target by the tags' estimates (:func:`queue_limit`, never
  less than ``TARGET_QUEUE_SECONDS`` nor more than ``MAX_QUEUE_SECONDS``:
  a slave cannot hoard a queue), and no task longer than that limit.
- **Answers.** An answer waits at most ``ANSWER_DELAY`` for others to
  travel with it.
- **Averages.** Every task duration (a tag's handler time at the master, a
  slave's task time) is a :class:`MovingAverage` with weight ``WEIGHT``. A
  round trip is the least of the last ``RTT_WINDOW`` calls that returned at
  once (:class:`RoundTrip`): a call that carried large payloads, or met a
  busy master, takes longer than the trip itself.
"""

from __future__ import annotations

import collections
import math
from typing import Deque, Optional

#: Tasks shorter than this on average are prefetched (also below the queue target).
PREFETCH_BELOW = 0.05
#: Least work (seconds) a prefetching slave keeps queued behind the task it runs.
TARGET_QUEUE_SECONDS = 0.02
#: A slave keeps this many round trips' worth of work queued, if that is more.
RTT_FACTOR = 2.0
#: Most work (seconds) the master queues on one slave, whatever it asks for.
MAX_QUEUE_SECONDS = 1.0
#: Most tasks asked for in one call.
MAX_BATCH = 1024
#: Longest an answer is held back so that more travel in the same call.
ANSWER_DELAY = 0.005
#: Weight of the newest measurement in every moving average.
WEIGHT = 0.2
#: A round trip is the quickest of this many recent calls.
RTT_WINDOW = 16


class MovingAverage:
    """An exponential moving average of durations; ``value`` is None before the first."""

    __slots__ = ("value",)

    def __init__(self, value: Optional[float] = None):
        self.value = value

    def add(self, seconds: float) -> float:
        """Take in a measurement; returns the new average."""
        old = self.value
        self.value = seconds if old is None else (1 - WEIGHT) * old + WEIGHT * seconds
        return self.value

    def __repr__(self) -> str:
        return f"MovingAverage({self.value!r})"


class RoundTrip:
    """A slave's round trip to its master: the quickest of its last ``RTT_WINDOW``
    calls that did not wait for work (None before the first)."""

    __slots__ = ("_recent", "value")

    def __init__(self):
        self._recent: Deque[float] = collections.deque(maxlen=RTT_WINDOW)
        self.value: Optional[float] = None

    @property
    def settled(self) -> bool:
        """Has it seen a window's worth of calls?"""
        return len(self._recent) == RTT_WINDOW

    def add(self, seconds: float) -> float:
        """Take in the wall time of one call; returns the new round trip."""
        recent = self._recent
        dropped = recent[0] if len(recent) == recent.maxlen else None
        recent.append(seconds)
        if self.value is None or seconds <= self.value:
            self.value = seconds
        elif dropped is not None and dropped <= self.value:
            self.value = min(recent)   # the quickest left the window
        return self.value


def queue_target(rtt: Optional[float]) -> float:
    """Seconds of work a slave whose round trip to its master takes ``rtt`` s
    (None: not measured yet) wants queued behind the task it runs."""
    if rtt is None:
        return TARGET_QUEUE_SECONDS
    return max(TARGET_QUEUE_SECONDS, min(MAX_QUEUE_SECONDS, RTT_FACTOR * rtt))


def prefetches(average: Optional[float], target: float = TARGET_QUEUE_SECONDS) -> bool:
    """Does a slave whose tasks take ``average`` s (None: not known yet) queue work ahead?

    Short tasks are prefetched; so are tasks shorter than the queue target
    of a slave far from its master (it would otherwise wait a round trip for each)."""
    return average is not None and average < (target if target > PREFETCH_BELOW else PREFETCH_BELOW)


def tasks_wanted(average: Optional[float], target: float = TARGET_QUEUE_SECONDS) -> int:
    """How many tasks a slave asks for: one unless it prefetches, else about
    ``target`` seconds of them (at most ``MAX_BATCH``)."""
    # (a slave asks this after every task: plain comparisons, no calls but one)
    if average is None or average >= (target if target > PREFETCH_BELOW else PREFETCH_BELOW):
        return 1
    wanted = math.ceil(target / (average if average > 1e-7 else 1e-7))
    return wanted if wanted < MAX_BATCH else MAX_BATCH


def answer_is_urgent(seconds: float) -> bool:
    """Must an answer after a task of ``seconds`` go at once when more tasks are queued?

    A task that long leaves the master's view of what the slave runs stale
    (the task queued behind it may look stealable), so its answer does not wait."""
    return seconds > TARGET_QUEUE_SECONDS


def frees_room(seconds: float) -> bool:
    """Does an answer after a task of ``seconds`` free enough of a slave's queue
    that the master may grant more at once? (Tiny tasks are not worth a call each.)"""
    return seconds * 10 >= TARGET_QUEUE_SECONDS


def queue_limit(asked: Optional[float]) -> float:
    """The queued work the master grants a slave that asked to hold ``asked`` s
    (None: a slave that did not say, which gets the fixed target)."""
    if asked is None or not asked > TARGET_QUEUE_SECONDS:   # not asked > ...: also NaN
        return TARGET_QUEUE_SECONDS
    return min(MAX_QUEUE_SECONDS, float(asked))


def may_queue(queued: float, estimate: float, limit: float) -> bool:
    """May the scheduler queue a task estimated at ``estimate`` s on a busy slave
    that holds ``queued`` s of work behind the one it runs, with ``limit`` from
    :func:`queue_limit`? (Work of a tag not measured yet is never queued.)

    Never long work (an idle slave would run it sooner), and about one
    task's worth above the limit at most."""
    return estimate <= limit and queued < limit
