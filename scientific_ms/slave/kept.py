"""A slave's side of its keeper (``keeper.py``): getting one, and what it says to it.

A slave started in the main thread of a POSIX process gets a keeper: a
process that runs no user code, beats the slave's heart, and ends a handler
stuck past its time limit. A worker of ``task_manager slave -n`` already
has one (``worker_link.current()``); any other slave forks its own at
``start()`` (``keeper=False`` or SCIENTIFIC_MS_KEEPER=0 turns that off: the
slave then beats its own heart on a thread, ``heartbeat.py``, which a
handler holding the GIL can delay past the watchdog limit).

:class:`KeeperSide` tells the keeper the slave's id at the master after each
registration, and hears from it that the master revoked tasks or ended.
"""

from __future__ import annotations

import os
import threading
from typing import Callable, Optional

from .. import settings
from ..wire.client import MasterConnection
from . import keeper_start, worker_link
from .heartbeat import abandon
from .session import Session


class KeeperSide:
    """The keeper of ``slave`` (a SlaveProcess), as the slave sees it.

    Reads the slave's public ``label``, ``process_id``, ``watchdog_period``
    and ``hard_exit``; ``session()`` gives the slave's current session.
    """

    def __init__(self, slave, session: Callable[[], Session]):
        self._slave = slave
        self._session = session
        self.link: Optional[worker_link.WorkerLink] = None

    def attach(self, wanted: Optional[bool]) -> None:
        """Find this process's keeper, or fork one (``wanted``: the slave's ``keeper=``)."""
        self.link = worker_link.current()   # a worker of ``task_manager slave -n``
        if self.link is None and settings.keeper(wanted) and hasattr(os, "fork") \
                and threading.current_thread() is threading.main_thread():
            self.link = keeper_start.become_lone_keeper(self._slave.label)
        if self.link is not None:
            self.link.listen(self._news)

    @property
    def keeper_pid(self) -> Optional[int]:
        """The keeper's process id, if this process has a keeper."""
        return self.link.keeper_pid if self.link is not None else None

    @property
    def keeper_id(self) -> Optional[int]:
        """The keeper's id at the master, if it registered itself (``slave -n``)."""
        return self.link.keeper_id if self.link is not None else None

    def hello(self, connection: MasterConnection) -> None:
        """After each registration: our id, and where the master is."""
        slave = self._slave
        if self.link is not None and slave.process_id is not None:
            self.link.hello(slave.process_id, slave.watchdog_period,
                            (connection.host, connection.port, connection.secret), self._session().rejoin_grace)

    def relay_connection(self) -> Optional[MasterConnection]:
        """The connection to the master through the keeper's relay, if the keeper relays
        (``relay.py``): the worker then opens none of its own."""
        relay = self.link.relay if self.link is not None else None
        if relay is None:
            return None
        from .relayed import RelayedConnection  # (imported only by a worker whose keeper relays)
        return RelayedConnection(relay)

    def relayed(self, connection: MasterConnection) -> MasterConnection:
        """The connection for the slave's exchanges: through the keeper's relay when it has one,
        else ``connection`` itself."""
        relay = self.link.relay if self.link is not None else None
        if relay is None:
            return connection
        from .relayed import RelayedConnection
        if isinstance(connection, RelayedConnection):
            return connection
        return RelayedConnection(relay, direct=connection)

    def leaving(self) -> None:
        """About to unregister: the keeper must not take our absence at the master for a death."""
        if self.link is not None:
            self.link.leaving()

    def bye(self) -> None:
        if self.link is not None:
            self.link.bye()

    def finish(self) -> None:
        if self.link is not None:
            self.link.finish()

    def _news(self, message: tuple) -> None:
        """What the keeper learnt from the master (on the link's thread): revoked tasks, or
        the master's end; a handler still running then is abandoned after a moment."""
        slave = self._slave
        session = self._session()
        if message[0] == "poke":
            if session.feed is not None:
                session.feed.poke()
            return
        if message[0] == "terminated":
            code, text = 0, (f"the master of {slave.label!r} finished while slave {slave.process_id} was "
                             f"running task {session.current_task}; abandoning it and exiting")
        else:
            session.master_gone = text = f"slave of {slave.label!r} lost its master: {message[1]}"
            code = 1
            if session.rejoin_grace:
                return   # the main thread finishes its task, then waits for the master to come back
        if not session.main_done.wait(settings.ABANDON_GRACE_SECONDS):
            abandon(code, text, slave.hard_exit)
