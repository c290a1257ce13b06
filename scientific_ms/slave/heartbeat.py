"""A slave process's watch thread (``slave.py``): heartbeats, and the master's end.

Used only by a slave without a keeper (``keeper.py``): one started in a
thread, or with ``keeper=False`` / SCIENTIFIC_MS_KEEPER=0; a handler holding
the GIL delays its heartbeats. It long-polls ``agent_watch`` with its own
id (as a keeper of itself), which is the heartbeat, brings the CPU and memory
samples, and returns at once when the master finishes. If the main thread
is then still inside a handler, the slave gives it a moment and exits
anyway, so no slave outlives its master by more than about a second. A
broken connection means the master died: the thread tries to reach it
again within the heartbeat limit (a cut link may heal) and then gives up:
the slave exits, unless its master keeps a journal (``rejoin.py``), in
which case the main thread finishes its task and waits for it to return.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import threading
import time
from typing import Callable, Optional

from .. import settings
from ..errors import ConnectionLostError, MasterNotFoundError, ScientificMSError
from ..machine import ResourceSampler
from ..wire.client import MasterConnection
from ..wire.protocol import REVOKED, TERMINATED, UNKNOWN
from . import output
from .session import Session

log = logging.getLogger(__name__)

#: A slave that lost its master says it retries only if the master is still silent after this
#: long: a master that is plainly gone (its port refuses) gets one message, not two.
RECONNECT_QUIET_SECONDS = 1.0


class Heartbeat:
    """The watch thread of ``slave`` (a SlaveProcess) for one session.

    Reads the slave's public ``process_id``, ``label``, ``watchdog_period``
    and ``hard_exit``; ``connection``: the main connection (the thread opens
    its own from it); ``rejoin(process_id, connection)``: register again
    after the master declared the slave dead, returning the current id.
    """

    def __init__(self, slave, session: Session, connection: MasterConnection,
                 rejoin: Callable[[int, MasterConnection], int]):
        self._slave = slave
        self._session = session
        self._connection = connection
        self._rejoin = rejoin

    def start(self) -> None:
        thread = threading.Thread(target=self._run, name="scientific_ms-watch", daemon=True)
        self._session.watch_thread = thread
        thread.start()

    def _run(self) -> None:
        slave, session = self._slave, self._session
        period = slave.watchdog_period
        sampler = ResourceSampler()
        connection: Optional[MasterConnection]
        try:
            connection = self._connection.duplicate()
        except ScientificMSError as error:
            self._master_lost(f"cannot open the heartbeat connection: {error}")
            return
        while not session.leaving.is_set():
            process_id = slave.process_id
            try:
                # A little early and jittered: a heartbeat at least every period, not all at once.
                status, _ = connection.call("agent_watch", process_id, [(process_id, sampler.sample())],
                                            period * random.uniform(0.75, 1.0), timeout=period + 30.0)
            except ConnectionLostError as error:
                if session.leaving.is_set():
                    break
                connection.close()
                connection = self._reconnect(str(error))
                if connection is None:
                    return
                continue
            if status == TERMINATED:
                self._master_finished()
                break
            if status == UNKNOWN:
                self._rejoin(process_id, connection)
            elif status == REVOKED and session.feed is not None:
                session.feed.poke()
        connection.close()

    def _reconnect(self, reason: str) -> Optional[MasterConnection]:
        """Reach the master again within the heartbeat limit, or give up and exit."""
        limit = max(5.0, 4 * self._slave.watchdog_period)
        deadline = time.monotonic() + limit
        pause = 0.1   # a dying master may still accept a connection or two: retry soon at first
        warn_at: Optional[float] = time.monotonic() + RECONNECT_QUIET_SECONDS   # a master plainly gone: one message
        while not self._session.leaving.is_set():
            try:
                return self._connection.duplicate()
            except MasterNotFoundError as error:
                if getattr(error, "refused", False) or time.monotonic() >= deadline:
                    self._master_lost(f"the master is gone\n  {reason}\n  last try: {error}")
                    return None
            except ScientificMSError as error:
                self._master_lost(f"{error}\n  {reason}")
                return None
            if warn_at is not None and time.monotonic() >= warn_at:
                log.warning("slave %s: the master does not answer; trying again for up to %.0f s\n  %s",
                            self._slave.process_id, limit, reason)
                warn_at = None
            self._session.leaving.wait(pause)
            pause = min(1.0, 2 * pause)
        return None

    def _master_finished(self) -> None:
        if self._session.main_done.wait(settings.ABANDON_GRACE_SECONDS):
            return
        slave = self._slave
        abandon(0, f"the master of {slave.label!r} finished while slave {slave.process_id} was "
                   f"running task {self._session.current_task}; abandoning it and exiting", slave.hard_exit)

    def _master_lost(self, message: str) -> None:
        session = self._session
        session.master_gone = f"slave of {self._slave.label!r} lost its master: {message}"
        if session.rejoin_grace:
            return   # the main thread finishes its task, then waits for the master to come back
        if session.main_done.wait(settings.ABANDON_GRACE_SECONDS):
            return
        abandon(1, session.master_gone, self._slave.hard_exit)


def abandon(code: int, message: str, hard_exit: bool) -> None:
    """Log why the slave gives up its running handler; with ``hard_exit``, exit at once."""
    if code:
        log.error("%s", message)
    else:
        log.info("%s", message)
    if hard_exit:
        output.release()   # the lines the master never got, and these last words, where we run
        sys.stderr.write(f"scientific_ms: {message}\n")
        sys.stderr.flush()
        os._exit(code)
