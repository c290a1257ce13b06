"""How long each tag's tasks take, as the scheduler learns it from the slaves.

Read by the assignment rules (``scheduling.py``) under the manager's lock.
"""

from __future__ import annotations

import itertools
from typing import Dict, Optional

from . import flow
from .registry import ProcessRecord


class Durations:
    """How long each tag's handler takes, learned from the slaves' measurements
    (a :class:`~scientific_ms.core.flow.MovingAverage` per tag)."""

    def __init__(self):
        self._averages: Dict[str, flow.MovingAverage] = {}
        self._seconds: Dict[str, float] = {}   # each average's value, read once per held task

    def record(self, tag: str, seconds: float) -> None:
        average = self._averages.get(tag)
        if average is None:
            average = self._averages[tag] = flow.MovingAverage()
        self._seconds[tag] = average.add(seconds)

    def expect(self, tag: str, seconds: float) -> None:
        """A hint for a tag not measured yet; the measurements take over."""
        if tag not in self._averages:
            self._averages[tag] = flow.MovingAverage(seconds)
            self._seconds[tag] = seconds

    def estimate(self, tag: str) -> Optional[float]:
        """Seconds per task of ``tag``; None while not measured (then it counts as long)."""
        return self._seconds.get(tag)

    #: ``queued`` looks at this many held tasks at most and scales up (a slave may hold thousands).
    SAMPLE = 32

    def queued(self, proc: ProcessRecord) -> float:
        """Estimated work ``proc`` holds beyond the task it runs (its oldest); inf if unknown."""
        behind = len(proc.running) - 1
        if behind <= 0:
            return 0.0
        total = 0.0
        for task in itertools.islice(proc.running.values(), 1, 1 + self.SAMPLE):
            estimate = self._seconds.get(task.tag)
            if estimate is None:
                return float("inf")
            total += estimate
        return total * behind / min(behind, self.SAMPLE)
