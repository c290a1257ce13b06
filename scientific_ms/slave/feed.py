"""A slave's supply of tasks: network calls on their own thread, off the handler's path.

::

    main thread                      feed thread (owns the connection)
    -----------                      --------------------------------
    next_task()  <-- inbox <-------  exchange(answers, want) --> master
    run handler
    put_answer() --> outbox ------>  (sent with the next exchange)

The policy is ``core/flow.py``'s. While tasks are short the feed keeps
work queued: ``flow.TARGET_QUEUE_SECONDS`` of it, or two round trips to
the master if that is more (it times its calls that do not wait for work),
so the handler never waits for a round trip and one call carries many
answers; each call that asks for tasks tells the master how much work it
wants queued. Long tasks are fetched one at a time, only when the slave is
idle: a slave never sits on a long task that another, idle slave could
run. An answer waits at most ``flow.ANSWER_DELAY`` for others to travel
with it: the master, or a reader of results in order, is never kept
waiting for a whole queue's worth.

The two threads wake each other only when the other has something to do:
not once per task.

What the handlers print (``output.py``) goes with the next call; a line
waits at most ``output.DELAY`` for one, as an answer waits for others. While
the slave waits at the master for work, no call can go: lines that threads
of the handlers' write then go on a connection of their own (``output_flush.py``).
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from typing import Callable, Deque, List, Optional

from .. import settings
from ..core import flow
from ..errors import ConnectionLostError
from ..wire.client import MasterConnection
from ..wire.protocol import TERMINATED, UNKNOWN, Answer, TaskMessage
from .output import OutputBuffer
from .output_flush import WaitingFlush

log = logging.getLogger(__name__)

END = object()
#: What ``next_task`` returns once :meth:`TaskFeed.leave` was called and no task is left.
LEAVE = object()


class TaskFeed:
    """Fetches tasks and returns answers for one slave; see the module docstring."""

    def __init__(self, connection: MasterConnection, process_id: int,
                 rejoin: Callable[[int, MasterConnection], int], output: Optional[OutputBuffer] = None):
        self._connection = connection
        self._output = output   # lines for the master, if they are forwarded
        self._output_flush: Optional[WaitingFlush] = None   # sends them while we wait for work
        self.process_id = process_id
        self._rejoin = rejoin
        self._cond = threading.Condition()
        self._inbox: Deque[TaskMessage] = collections.deque()
        self._outbox: List[Answer] = []
        self._main_idle = False       # the main thread waits in next_task
        self._feed_idle = False       # the feed thread waits for something to do
        self._answers_since = 0.0     # when the oldest answer in the outbox came
        self._server_drained = False  # the last fetch found nothing
        self._stopping = False
        self._leaving = False         # leave() was called: fetch nothing, start nothing more
        self._poked = False           # the master has news (revoked tasks): call it now
        self._flush = False           # an answer the master should have at once
        self._waiting_for_work = False   # in a blocking exchange, every answer handed in
        self._ended: Optional[str] = None
        self._error: Optional[BaseException] = None
        self._seconds_per_task = flow.MovingAverage()
        self._round_trip = flow.RoundTrip()   # of the calls that did not wait for work
        self._target = flow.TARGET_QUEUE_SECONDS   # work to keep queued (flow.queue_target)
        # What the policy says for the current average and target, worked out when either
        # changes (asked several times per task): flow.tasks_wanted, flow.prefetches.
        self._wanted = 1
        self._prefetch = False
        self._thread = threading.Thread(target=self._run, name="scientific_ms-feed", daemon=True)

    def start(self) -> None:
        if self._output is not None:
            self._output.on_first = self._output_waits
        self._thread.start()

    def _output_waits(self) -> None:
        """A line waits for the master (any thread, inside a print or a logging handler's
        lock): the feed thread times its call. Not forever for the lock: a thread holding it
        may be logging too, and then times the call itself before it waits again."""
        if self._cond.acquire(timeout=0.2):
            try:
                if self._feed_idle:
                    self._cond.notify_all()
                elif self._waiting_for_work and self._output is not None:
                    if self._output_flush is None:
                        self._output_flush = WaitingFlush(self._connection, self._output,
                                                          lambda: self._waiting_for_work,
                                                          lambda: self.process_id, self._drop_revoked)
                    self._output_flush.poke()
            finally:
                self._cond.release()

    def _drop_revoked(self, revoked: List[int]) -> None:
        """Another slave runs these assignments now: drop those held and not started."""
        with self._cond:
            dropped = set(revoked)
            self._inbox = collections.deque(task for task in self._inbox if task.assignment not in dropped)

    def close_connections(self) -> None:
        """Close the connection the output took while we waited for work (after the goodbye)."""
        if self._output_flush is not None:
            self._output_flush.close()

    # ------------------------------------------------------------------ main thread

    def next_task(self, timeout: float):
        """The next task, END when the master finished, LEAVE after :meth:`leave`,
        None after ``timeout`` s."""
        with self._cond:
            self._main_idle = True
            self._cond.notify_all()
            try:
                if not self._inbox and self._ended is None and not self._leaving:
                    self._cond.wait(timeout)
            finally:
                self._main_idle = False
            if self._inbox:
                task = self._inbox.popleft()
                if self._feed_idle and self._should_call():
                    self._cond.notify_all()   # the queue shrank: time to fetch
                return task
            if self._error is not None:
                raise self._error
            if self._ended is not None:
                return END
            return LEAVE if self._leaving else None

    def leave(self) -> int:
        """Fetch no more tasks and drop those held but not started (any thread).

        The master still counts the dropped tasks as this slave's: the goodbye
        (``unregister``) puts them back at the front of its queue. The main
        thread's ``next_task`` returns LEAVE at once, or after the running
        handler. Returns how many tasks were dropped.
        """
        with self._cond:
            self._leaving = True
            dropped = len(self._inbox)
            self._inbox.clear()
            self._cond.notify_all()
            return dropped

    def put_answer(self, answer: Answer) -> None:
        seconds = answer.seconds or 0.0
        with self._cond:
            if not self._outbox:
                self._answers_since = time.monotonic()
                self._cond.notify_all()   # the feed thread sends it within ANSWER_DELAY
            self._outbox.append(answer)
            if flow.frees_room(seconds):
                # We hold one task less: the master, which caps queued work by time, may
                # give more now. (Tiny tasks are never capped that way: no call per answer.)
                self._server_drained = False
            self._seconds_per_task.add(seconds)
            self._follow_policy()
            if flow.answer_is_urgent(seconds) and self._inbox:
                # A long task ended with more queued: tell the master now, so that it
                # knows which task runs and never hands the next one to another slave.
                self._flush = True
                self._cond.notify_all()
            elif self._prefetching() and len(self._outbox) >= self._want():
                self._cond.notify_all()

    def poke(self) -> None:
        """Call the master soon even with nothing to say: it revoked some of our tasks."""
        with self._cond:
            self._poked = True
            self._cond.notify_all()

    def stop(self, timeout: float) -> bool:
        """Send the answers still held and end the feed thread; True if it ended in time.

        A feed thread still blocked after ``timeout`` is waiting for work,
        which it only does once every answer has been handed in.
        """
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            if self._waiting_for_work and self._ended is None:
                return False
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def ended(self) -> Optional[str]:
        return self._ended

    # ------------------------------------------------------------------ feed thread

    def _follow_policy(self) -> None:
        """Work out how many tasks to ask for (the average task time or the target changed)."""
        average = self._seconds_per_task.value
        self._wanted = flow.tasks_wanted(average, self._target)
        self._prefetch = flow.prefetches(average, self._target)

    def _want(self) -> int:
        return self._wanted

    def _prefetching(self) -> bool:
        return self._prefetch

    def _should_call(self) -> bool:
        if self._stopping or self._poked or self._flush:
            return True
        if self._leaving:
            return False         # the answers go with stop(), which follows
        idle = self._main_idle and not self._inbox
        if idle:
            return True          # hand in answers, fetch the next work (waiting for it if none came last)
        if self._outbox and time.monotonic() >= self._answers_since + flow.ANSWER_DELAY:
            return True          # answers held long enough
        if self._output is not None and self._output.due_in() == 0.0:
            return True          # printed lines held long enough
        if not self._prefetching():
            return False         # long tasks: answer and fetch together, once idle
        if not self._server_drained and len(self._inbox) < self._want():
            return True          # top up the queue while the handler runs
        return len(self._outbox) >= self._want()

    def _answers_due_in(self) -> Optional[float]:
        """Seconds until the held answers or lines must go (None: none held, or they go with the goodbye)."""
        if self._leaving:
            return None
        due = [] if self._output is None else [self._output.due_in()]
        if self._outbox:
            due.append(max(0.0, self._answers_since + flow.ANSWER_DELAY - time.monotonic()))
        return min((seconds for seconds in due if seconds is not None), default=None)

    def _run(self) -> None:
        try:
            self._connection.claim()     # this thread makes every call from now on
            while True:
                with self._cond:
                    while not self._should_call():
                        self._feed_idle = True
                        self._cond.wait(self._answers_due_in())
                    self._feed_idle = False
                    answers, self._outbox = self._outbox, []
                    self._poked = self._flush = False
                    stopping = self._stopping
                    idle = self._main_idle and not self._inbox
                    want = 0 if (stopping or self._leaving) else (self._want() if (idle or self._prefetching()) else 0)
                    # An idle slave waits for work at the master, except while its round trip
                    # is still being learned and the master had work last time: a call that
                    # returns at once times the trip, which decides how much work to hold (a
                    # slave that never prefetches, its tasks being long, would otherwise never
                    # measure it). Jittered, so that a thousand idle slaves do not all call
                    # back at once.
                    block = idle and want and (self._server_drained or self._round_trip.settled)
                    wait = settings.POLL_SECONDS * random.uniform(0.8, 1.2) if block else 0.0
                    self._waiting_for_work = wait > 0
                process_id = self.process_id
                # the queue this slave wants, said only when it holds more than the fixed target
                hold = self._target if want and self._target > flow.TARGET_QUEUE_SECONDS else None
                began = time.monotonic()
                output = self._output.take() if self._output is not None else None
                if output is None:
                    status, tasks, revoked = self._connection.exchange(process_id, answers, want, wait, hold)
                else:
                    status, tasks, revoked = self._connection.exchange(process_id, answers, want, wait, hold,
                                                                       output=output)
                took = time.monotonic() - began
                with self._cond:
                    self._waiting_for_work = False
                    if not wait:   # a call that did not wait for work: one round trip
                        target = flow.queue_target(self._round_trip.add(took))
                        if target != self._target:
                            self._target = target
                            self._follow_policy()
                    if status == TERMINATED:
                        self._ended = "terminated"
                    elif status == UNKNOWN and self._stopping:
                        self._ended = "stopped"         # we said goodbye: do not come back
                    elif status == UNKNOWN:
                        self.process_id = self._rejoin(process_id, self._connection)
                    if revoked:   # another slave runs them now: drop those not started
                        self._drop_revoked(revoked)
                    if not self._leaving:   # else the goodbye gives them back
                        self._inbox.extend(tasks)
                    self._server_drained = want > 0 and not tasks
                    if stopping and not self._outbox:
                        self._ended = self._ended or "stopped"
                    self._cond.notify_all()
                    if self._ended is not None:
                        return
        except ConnectionLostError as error:
            with self._cond:
                self._waiting_for_work = False
                self._error = error
                self._ended = "lost"
                self._cond.notify_all()
        except BaseException as error:  # a bug here must not leave the main thread waiting
            log.exception("the task feed failed")
            with self._cond:
                self._waiting_for_work = False
                self._error = error
                self._ended = "failed"
                self._cond.notify_all()
