"""The keeper's watch thread (``keeper.py``): every worker's heartbeat in one long poll.

It calls ``agent_watch(keeper_id, beats, timeout)`` on a connection of its
own, at the shortest watchdog period of the workers. A lone keeper is not
registered itself (the slave it keeps is all the master needs to know): it
calls ``agent_watch(worker_id, [(worker_id, stats)], timeout)``, and not at
all while its worker is stopped. A beat comes from the
keeper, which runs no user code, so a handler holding the GIL or stuck in C
keeps its heartbeats; a stopped worker (SIGSTOP, ``psutil`` status
``stopped``) gets none, so the master declares it dead at its watchdog
limit. The call also returns at once with news; the thread hands each to
the keeper's main thread as an event (``post``):

* ``("terminated",)``: the job is over;
* ``("unknown", ids)``: the master declared these workers dead;
* ``("revoked",)``: tasks a worker holds went to an idle slave elsewhere;
* ``("lost", message)``: the master cannot be reached (after trying again
  for the heartbeat limit: a cut link may heal);
* ``("forgotten",)``: the master no longer knows the keeper (it was started
  again): the keeper registers again.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Callable, List, Optional, Tuple

from .. import settings
from ..errors import ConnectionLostError, MasterNotFoundError, ScientificMSError
from ..wire.client import MasterConnection
from ..wire.protocol import REVOKED, TERMINATED, UNKNOWN
from .heartbeat import RECONNECT_QUIET_SECONDS
from .keeper_workers import Worker

log = logging.getLogger(__name__)

#: The long poll's length when no worker asked for heartbeats.
IDLE_WATCH_SECONDS = settings.POLL_SECONDS
#: ... and while a worker is starting: it may ask for a short watchdog period.
STARTING_WATCH_SECONDS = 0.1
#: After REVOKED, the worker needs a moment to collect its news before the next poll.
REVOKED_PAUSE_SECONDS = 0.02


class KeeperWatch:
    """The watch thread for one registration of a keeper at one master.

    ``open_connection()`` opens the thread's own connection to the master (again
    after a loss); ``targets()`` returns (the workers to beat for, whether one is
    still starting); ``post(event)`` hands news to the main thread.
    """

    def __init__(self, open_connection: Callable[[], MasterConnection], keeper_id: Optional[int],
                 targets: Callable[[], Tuple[List[Worker], bool]], post: Callable[[tuple], None]):
        self._open_connection = open_connection
        self._keeper_id = keeper_id
        self._targets = targets
        self._post = post
        self._stop = threading.Event()
        self.connection: Optional[MasterConnection] = None   # the thread's own, once open
        self._thread = threading.Thread(target=self._run, name="scientific_ms-keeper-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop at the end of the current poll (it is not waited for)."""
        self._stop.set()

    def _run(self) -> None:
        connection: Optional[MasterConnection] = self._own_connection()
        self.connection = connection
        try:
            while connection is not None and not self._stop.is_set():
                try:
                    if not self._poll(connection):
                        return
                except ConnectionLostError as error:
                    connection.close()
                    connection = self._reconnect(str(error))
                    self.connection = connection
        except Exception as error:   # a bug here must not leave the workers without heartbeats
            log.exception("the keeper's watch thread failed")
            self._post(("lost", f"the keeper's watch thread failed: {error}"))
        finally:
            if connection is not None:
                connection.close()

    def _poll(self, connection: MasterConnection) -> bool:
        """One long poll; False once the thread is done."""
        workers, starting = self._targets()
        periods = [worker.period for worker in workers if worker.period]
        period = min(periods, default=IDLE_WATCH_SECONDS)
        if starting:
            period = min(period, STARTING_WATCH_SECONDS)
        beats = [(worker.process_id, worker.stats() if worker.runnable() else None) for worker in workers]
        watcher = self._keeper_id
        if watcher is None:   # a lone keeper: under the worker's own id (no beat while it is stopped)
            beats = [beat for beat in beats if beat[0] is not None]
            if not beats:
                self._stop.wait(min(period, STARTING_WATCH_SECONDS))
                return True
            watcher = beats[0][0]
        # A little early and jittered: a heartbeat at least every period, not all at once.
        status, unknown = connection.call("agent_watch", watcher, beats,
                                          period * random.uniform(0.75, 1.0), timeout=period + 30.0)
        if self._stop.is_set():
            return False
        if status == TERMINATED:
            self._post(("terminated",))
            return False
        if status == UNKNOWN and self._keeper_id is None:
            self._post(("unknown", [watcher]))
            return True
        if status == UNKNOWN:
            self._post(("forgotten",))
            return False
        if unknown:
            self._post(("unknown", list(unknown)))
        if status == REVOKED:
            self._post(("revoked",))
            self._stop.wait(REVOKED_PAUSE_SECONDS)
        return True

    def _own_connection(self) -> Optional[MasterConnection]:
        try:
            return self._open_connection()
        except ScientificMSError as error:
            self._post(("lost", f"cannot open the heartbeat connection\n  {error}"))
            return None

    def _reconnect(self, reason: str) -> Optional[MasterConnection]:
        """Reach the master again within the heartbeat limit, or say it is lost."""
        workers, _ = self._targets()
        period = min((worker.period for worker in workers if worker.period), default=1.0)
        limit = max(5.0, 4 * period)
        deadline = time.monotonic() + limit
        pause = 0.1   # a dying master may still accept a connection or two: retry soon at first
        warn_at: Optional[float] = time.monotonic() + RECONNECT_QUIET_SECONDS   # a master plainly gone: one message
        while not self._stop.is_set():
            try:
                return self._open_connection()
            except MasterNotFoundError as error:
                if getattr(error, "refused", False) or time.monotonic() >= deadline:
                    self._post(("lost", f"the master is gone\n  {reason}\n  last try: {error}"))
                    return None
            except ScientificMSError as error:
                self._post(("lost", f"{error}\n  {reason}"))
                return None
            if warn_at is not None and time.monotonic() >= warn_at:
                who = f"keeper {self._keeper_id}" if self._keeper_id is not None else "the keeper of a slave"
                log.warning("%s: the master does not answer; trying again for up to %.0f s\n  %s", who, limit, reason)
                warn_at = None
            self._stop.wait(pause)
            pause = min(1.0, 2 * pause)
        return None
