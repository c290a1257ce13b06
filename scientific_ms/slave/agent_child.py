"""A slave process behind a node agent, as the agent sees it (``agent.py``)."""

from __future__ import annotations

import collections
import math
import subprocess
from multiprocessing.connection import Connection
from typing import Deque, List, Optional

import psutil

from .feed import MAX_BATCH, PREFETCH_BELOW, TARGET_QUEUE_SECONDS
from ..machine import ResourceSampler

#: Short tasks without time limits sent to a slave before it answered the first ...
SEND_AHEAD = 4
#: ... as long as their parameters together stay this small.
SEND_AHEAD_BYTES = 32 * 1024
#: Process states in which a slave cannot be vouched for (it would not answer).
NOT_RUNNING = frozenset({psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP,
                         psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD})


class Child:
    """One slave process behind the agent, as the agent sees it."""

    def __init__(self, process: subprocess.Popen, conn: Connection, restarts_left: int):
        self.process = process
        self.conn = conn
        self.restarts_left = restarts_left
        self.hello: Optional[tuple] = None     # (info, tags, watchdog_period) once it said hello
        self.slave_id: Optional[int] = None    # its id at the master (None: not registered now)
        self.queue: Deque[tuple] = collections.deque()   # fetched for it, not started
        self.sent: Deque[tuple] = collections.deque()   # sent to it, not answered: it runs the first
        self.started = 0.0                     # when the first of them started
        self.average: Optional[float] = None   # seconds per task
        self.held: List[tuple] = []            # answers waiting for a slave id
        self.leaving = False                   # it said it leaves; do not replace it
        self.stopped = False                   # not runnable at the last heartbeat
        self.sampler: Optional[ResourceSampler] = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> Optional[tuple]:
        """The task it runs (TaskMessage fields), or None when idle."""
        return self.sent[0] if self.sent else None

    def ahead(self) -> int:
        """How many tasks it may hold at once: a few while its tasks are short, small and
        have no time limit (the round trip through the agent is then hidden), else one.

        Small, so that they always fit in the socket's buffer: the agent must never
        block writing to a slave that is itself blocked writing an answer to the agent.
        """
        short = self.average is not None and self.average < PREFETCH_BELOW
        if not short or not self.queue:
            return 1
        held = list(self.sent) + [self.queue[0]]
        if all(task[4] is None for task in held) and sum(len(task[3]) for task in held) <= SEND_AHEAD_BYTES:
            return SEND_AHEAD
        return 1

    def want(self) -> int:
        """How many tasks to ask for it now (the rules of the slave's own feed)."""
        if self.slave_id is None or self.leaving or self.stopped:
            return 0   # (a stopped slave waiting for work would count as alive at the master)
        average = self.average
        if average is None or average >= PREFETCH_BELOW:
            return 1 if not self.sent and not self.queue else 0
        target = max(1, min(MAX_BATCH, math.ceil(TARGET_QUEUE_SECONDS / max(average, 1e-7))))
        if len(self.queue) > target // 2:
            return 0   # refill at half: one call per half a queue, not one per task run
        return target - len(self.queue)

    def runnable(self) -> bool:
        """Alive and not stopped: running, sleeping, or busy in C code."""
        try:
            return psutil.Process(self.pid).status() not in NOT_RUNNING
        except psutil.Error:
            return False

    def stats(self) -> dict:
        if self.sampler is None:
            self.sampler = ResourceSampler(self.pid)
        return self.sampler.sample()
