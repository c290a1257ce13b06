"""How the node agent (``agent.py``) talks to the master.

:class:`MainCalls` are the main thread's calls on the agent's first
connection (registering slaves, their deaths and goodbyes, answers that
cannot wait). :class:`MasterSide` runs the two threads that carry the bulk:
the fetch thread carries answers in and tasks out for all the agent's
slaves in one ``agent_exchange``; the watch thread carries their heartbeats
in one ``agent_watch``, which also returns at once with news (the job
ended, tasks queued here were given to idle slaves elsewhere). Each thread
has a connection of its own. All of them share the agent's state
(``agent_state.py``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Callable, List, Optional, Sequence

from .. import settings
from ..wire.client import MasterConnection
from ..errors import ConnectionLostError, ScientificMSError
from ..wire.protocol import REVOKED, TERMINATED, UNKNOWN
from . import departure
from .agent_state import AgentState

log = logging.getLogger(__name__)

#: Heartbeat period when no slave asked for one (they are registered without a watchdog).
IDLE_WATCH_SECONDS = settings.POLL_SECONDS
#: An answer waits at most this long for others to go with it (or, while the fetch
#: thread's call waits for work, for that call to end); then it goes on its own.
ANSWER_DELAY_SECONDS = 0.01
#: ... unless this many answers are waiting.
ANSWERS_PER_CALL = 64
#: Heartbeat period while some slave has not registered yet.
STARTING_WATCH_SECONDS = 0.2


class MainCalls:
    """The main thread's calls on the agent's first connection."""

    def __init__(self, connection: MasterConnection, state: AgentState):
        self.connection = connection
        self._state = state

    def call(self, method: str, *args):
        return self.connection.call(method, *args)

    def quietly(self, method: str, *args) -> None:
        """A call whose failure does not matter (the agent is ending anyway)."""
        try:
            self.connection.call(method, *args, timeout=5.0)
        except ScientificMSError:
            pass

    def deliver(self, answers: List[tuple], wants: Sequence[tuple] = ()) -> None:
        """Answers that cannot wait for the fetch thread; takes in what comes back."""
        status, tasks, revoked, unknown = self.connection.agent_exchange(answers, list(wants), 0.0)
        with self._state.lock:
            self._state.apply(tasks, revoked, unknown)
        if status == TERMINATED:
            self._state.stop("terminated", settings.ABANDON_GRACE_SECONDS, 0)

    def goodbye(self, slave_id: int) -> None:
        """Unregister a slave as the agent stops: what it held goes back unblamed
        (the walltime or the user stopped it, not its task), with the reason."""
        stopping = self._state.stopping
        reason = stopping if stopping in departure.REASONS else None
        self.quietly("unregister", slave_id, [], reason)


class MasterSide:
    """The fetch and watch threads of a node agent.

    ``connection``: the agent's first connection (each thread opens its own
    from it); ``on_lost(error)``: called when the master cannot be reached
    (the agent then stops).
    """

    def __init__(self, state: AgentState, connection: MasterConnection, agent_id: int,
                 on_lost: Callable[[Exception], None]):
        self._state = state
        self._connection = connection
        self._agent_id = agent_id
        self._on_lost = on_lost
        self._threads = [threading.Thread(target=self._fetch_loop, name="scientific_ms-agent-fetch", daemon=True),
                         threading.Thread(target=self._watch_loop, name="scientific_ms-agent-watch", daemon=True)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self, timeout: float) -> None:
        """Wait for each thread that was started (after the agent stopped) up to ``timeout``."""
        for thread in self._threads:
            if thread.ident is not None:
                thread.join(timeout=timeout)

    def _own_connection(self) -> Optional[MasterConnection]:
        """A connection for the calling thread alone; None (and the agent stops) if none."""
        try:
            return self._connection.duplicate()
        except ScientificMSError as error:
            self._on_lost(error)
            return None

    # ------------------------------------------------------------------ fetch thread

    def _fetch_loop(self) -> None:
        state = self._state
        connection = self._own_connection()
        if connection is None:
            return
        try:
            while True:
                with state.lock:
                    while True:
                        if state.stopping is not None:
                            return
                        wants = state.wants()
                        asking = any(count for _, count in wants)
                        if asking or len(state.outbox) >= ANSWERS_PER_CALL:
                            break
                        if state.outbox:   # a few answers: they wait a little for company
                            late = time.monotonic() - state.outbox_since
                            if late >= ANSWER_DELAY_SECONDS:
                                break
                            state.changed.wait(ANSWER_DELAY_SECONDS - late)
                        else:
                            state.changed.wait()
                    answers = state.take_answers()
                    # jittered, so that many idle agents do not all call back at once
                    wait = settings.POLL_SECONDS * random.uniform(0.8, 1.2) if asking else 0.0
                    state.fetch_waiting = time.monotonic() if wait > 0 else None
                try:
                    status, tasks, revoked, unknown = connection.agent_exchange(
                        answers, wants, wait, timeout=wait + 60.0)
                except ConnectionLostError as error:
                    self._on_lost(error)
                    return
                except Exception as error:   # a bug here must not leave the slaves waiting
                    log.exception("the node agent's fetch thread failed")
                    self._on_lost(error)
                    return
                with state.lock:
                    state.fetch_waiting = None
                    state.apply(tasks, revoked, unknown)
                if status == TERMINATED:
                    state.stop("terminated", settings.ABANDON_GRACE_SECONDS, 0)
                    return
        finally:
            with state.lock:
                state.fetch_waiting = None
                answers = state.take_answers()
            if answers and state.says_goodbye:
                try:   # hand in what was done before we stopped
                    connection.agent_exchange(answers, [], 0.0, timeout=5.0)
                except ScientificMSError:
                    pass
            connection.close()

    # ------------------------------------------------------------------ watch thread

    def _watch_loop(self) -> None:
        state = self._state
        connection = self._own_connection()
        if connection is None:
            return
        try:
            while state.stopping is None:
                with state.lock:
                    children = state.registered()
                    periods = [child.hello[2] for child in children if child.hello[2]]
                    starting = len(children) < len(state.children)
                period = min(periods, default=IDLE_WATCH_SECONDS)
                if starting:   # a slave about to register may have a short watchdog period
                    period = min(period, STARTING_WATCH_SECONDS)
                # Sampled outside the lock: a stopped slave gets no heartbeat, so the
                # master declares it dead after its watchdog limit, as any slave.
                for child in children:
                    child.stopped = not child.runnable()
                beats = [(child.slave_id, None if child.stopped else child.stats()) for child in children]
                status, unknown = connection.call("agent_watch", self._agent_id, beats,
                                                  period * random.uniform(0.75, 1.0), timeout=period + 30.0)
                if status == TERMINATED:
                    state.stop("terminated", settings.ABANDON_GRACE_SECONDS, 0)
                    return
                if status == UNKNOWN:
                    raise ConnectionLostError("the master no longer knows this agent")
                if unknown:
                    with state.lock:
                        state.apply([], [], unknown)
                if status == REVOKED:   # tasks queued here went to idle slaves elsewhere
                    with state.lock:
                        ids = [(child.slave_id, 0) for child in state.registered()]
                    _, _, revoked, unknown = connection.agent_exchange([], ids, 0.0, timeout=30.0)
                    with state.lock:
                        state.apply([], revoked, unknown)
        except ConnectionLostError as error:
            if state.stopping is None:
                self._on_lost(error)
        except Exception as error:   # a bug here must not leave the slaves without heartbeats
            log.exception("the node agent's watch thread failed")
            self._on_lost(error)
        finally:
            connection.close()
