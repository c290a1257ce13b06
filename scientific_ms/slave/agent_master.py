"""The node agent's two threads that talk to the master (``agent.py``).

:class:`MasterSide` is a base of :class:`~scientific_ms.agent.NodeAgent` and
shares its lock and state. The fetch thread carries answers in and tasks out
for all the agent's slaves in one ``agent_exchange``; the watch thread
carries their heartbeats in one ``agent_watch``, which also returns at once
with news (the job ended, tasks queued here were given to idle slaves
elsewhere). Each has a connection of its own.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Optional

from .. import settings
from ..wire.client import MasterConnection
from ..errors import ConnectionLostError, ScientificMSError
from ..wire.protocol import REVOKED, TERMINATED, UNKNOWN

log = logging.getLogger("scientific_ms.agent")

#: Heartbeat period when no slave asked for one (they are registered without a watchdog).
IDLE_WATCH_SECONDS = settings.POLL_SECONDS
#: An answer waits at most this long for others to go with it (or, while the fetch
#: thread's call waits for work, for that call to end); then it goes on its own.
ANSWER_DELAY_SECONDS = 0.01
#: ... unless this many answers are waiting.
ANSWERS_PER_CALL = 64
#: Heartbeat period while some slave has not registered yet.
STARTING_WATCH_SECONDS = 0.2


class MasterSide:
    """Fetching and heartbeats for a NodeAgent (its base class)."""

    def _own_connection(self) -> Optional[MasterConnection]:
        """A connection for the calling thread alone; None (and the agent stops) if none."""
        try:
            return self._main.duplicate()
        except ScientificMSError as error:
            self._master_lost(error)
            return None

    # ------------------------------------------------------------------ fetch thread

    def _fetch_loop(self) -> None:
        connection = self._own_connection()
        if connection is None:
            return
        try:
            while True:
                with self._lock:
                    while True:
                        if self._stopping is not None:
                            return
                        wants = [(child.slave_id, child.want()) for child in self._children.values()
                                 if child.slave_id is not None]
                        asking = any(count for _, count in wants)
                        if asking or len(self._outbox) >= ANSWERS_PER_CALL:
                            break
                        if self._outbox:   # a few answers: they wait a little for company
                            late = time.monotonic() - self._outbox_since
                            if late >= ANSWER_DELAY_SECONDS:
                                break
                            self._changed.wait(ANSWER_DELAY_SECONDS - late)
                        else:
                            self._changed.wait()
                    answers, self._outbox = self._outbox, []
                    # jittered, so that many idle agents do not all call back at once
                    wait = settings.POLL_SECONDS * random.uniform(0.8, 1.2) if asking else 0.0
                    self._fetch_waiting = time.monotonic() if wait > 0 else None
                try:
                    status, tasks, revoked, unknown = connection.agent_exchange(
                        answers, wants, wait, timeout=wait + 60.0)
                except ConnectionLostError as error:
                    self._master_lost(error)
                    return
                except Exception as error:   # a bug here must not leave the slaves waiting
                    log.exception("the node agent's fetch thread failed")
                    self._master_lost(error)
                    return
                with self._lock:
                    self._fetch_waiting = None
                    self._apply(tasks, revoked, unknown)
                if status == TERMINATED:
                    self._stop("terminated", settings.ABANDON_GRACE_SECONDS, 0)
                    return
        finally:
            with self._lock:
                self._fetch_waiting = None
                answers, self._outbox = self._outbox, []
            if answers and self._stopping not in ("terminated", "lost"):
                try:   # hand in what was done before we stopped
                    connection.agent_exchange(answers, [], 0.0, timeout=5.0)
                except ScientificMSError:
                    pass
            connection.close()

    # ------------------------------------------------------------------ watch thread

    def _watch_loop(self) -> None:
        connection = self._own_connection()
        if connection is None:
            return
        try:
            while self._stopping is None:
                with self._lock:
                    children = [child for child in self._children.values() if child.slave_id is not None]
                    periods = [child.hello[2] for child in children if child.hello[2]]
                    starting = len(children) < len(self._children)
                period = min(periods, default=IDLE_WATCH_SECONDS)
                if starting:   # a slave about to register may have a short watchdog period
                    period = min(period, STARTING_WATCH_SECONDS)
                # Sampled outside the lock: a stopped slave gets no heartbeat, so the
                # master declares it dead after its watchdog limit, as any slave.
                for child in children:
                    child.stopped = not child.runnable()
                beats = [(child.slave_id, None if child.stopped else child.stats()) for child in children]
                status, unknown = connection.call("agent_watch", self.agent_id, beats,
                                                  period * random.uniform(0.75, 1.0), timeout=period + 30.0)
                if status == TERMINATED:
                    self._stop("terminated", settings.ABANDON_GRACE_SECONDS, 0)
                    return
                if status == UNKNOWN:
                    raise ConnectionLostError("the master no longer knows this agent")
                if unknown:
                    with self._lock:
                        self._apply([], [], unknown)
                if status == REVOKED:   # tasks queued here went to idle slaves elsewhere
                    with self._lock:
                        ids = [(child.slave_id, 0) for child in self._children.values()
                               if child.slave_id is not None]
                    _, _, revoked, unknown = connection.agent_exchange([], ids, 0.0, timeout=30.0)
                    with self._lock:
                        self._apply([], revoked, unknown)
        except ConnectionLostError as error:
            if self._stopping is None:
                self._master_lost(error)
        except Exception as error:   # a bug here must not leave the slaves without heartbeats
            log.exception("the node agent's watch thread failed")
            self._master_lost(error)
        finally:
            connection.close()
