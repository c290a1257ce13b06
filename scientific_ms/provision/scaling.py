"""How many slave jobs to hold: a pure function of the waiting work and the jobs held.

Work is counted in slave-seconds from the per-tag duration estimates of
``core/scheduling.py``: a tag not measured yet counts one slave per waiting
task (as the scheduler counts it long). A slave is worth adding while it has
at least ``target_seconds`` of work; running tasks keep their slaves.
Pending jobs count as held, so a queue that is slow to start never makes
the master submit more; jobs near their walltime (``ending``) do not count,
so their replacements go in ahead of time. Jobs that run are never
cancelled here (they leave on their own when idle: a job is not taken away
before it did any work); pending ones are withdrawn once no work waits.
"""

from __future__ import annotations

import math
from typing import Mapping, NamedTuple, Optional

#: Default slave-seconds of waiting work that justify one more slave.
TARGET_SECONDS = 30.0


class JobCounts(NamedTuple):
    """The jobs a master holds, by state."""
    pending: int = 0
    running: int = 0
    ending: int = 0     # running, but past their walltime warning (or about to be)


class Decision(NamedTuple):
    """What to do now: submit this many jobs, withdraw this many pending ones."""
    wanted: int
    submit: int
    cancel_pending: int


def slaves_needed(waiting: Mapping[str, int], estimates: Mapping[str, Optional[float]], running_tasks: int,
                  target_seconds: float = TARGET_SECONDS) -> int:
    """Slaves worth having: one per running task, plus those the waiting work keeps busy."""
    measured = 0.0
    unmeasured = 0
    for tag, count in waiting.items():
        estimate = estimates.get(tag)
        if estimate is None:
            unmeasured += count
        else:
            measured += count * estimate
    total_waiting = sum(waiting.values())
    for_waiting = min(total_waiting, unmeasured + math.ceil(measured / max(target_seconds, 1e-9)))
    if total_waiting and not for_waiting:
        for_waiting = 1
    return running_tasks + for_waiting


def decide(waiting: Mapping[str, int], estimates: Mapping[str, Optional[float]], running_tasks: int,
           jobs: JobCounts, slaves_per_job: int, min_jobs: int, max_jobs: int,
           target_seconds: float = TARGET_SECONDS) -> Decision:
    """How many jobs to submit and to withdraw so that the jobs held fit the work, within
    ``min_jobs``..``max_jobs``."""
    needed = slaves_needed(waiting, estimates, running_tasks, target_seconds)
    wanted = max(min_jobs, min(max_jobs, math.ceil(needed / slaves_per_job)))
    held = jobs.pending + jobs.running
    # Replacements of ending jobs may go beyond max_jobs, never beyond twice it: a walltime
    # shorter than the time a job needs to start must not make the master submit without end.
    submit = max(0, min(wanted - held, 2 * max_jobs - held - jobs.ending))
    cancel = 0
    if not any(waiting.values()) and held > wanted:
        cancel = min(jobs.pending, held - wanted)
    return Decision(wanted, submit, cancel)
