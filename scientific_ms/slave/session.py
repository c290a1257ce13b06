"""What a slave process's threads share while it serves one master (``slave.py``).

The main thread (handlers), the feed thread (``feed.py``), the watch thread
(``heartbeat.py``) and the SIGTERM thread (``departure.py``) all look at
the same few things: whether the slave is leaving, whether the main thread
is done, why the master is gone, which task runs. A slave that finds its
master started again (``rejoin.py``) serves it in a fresh :class:`Session`:
new events, no cached global state (a new master numbers its own).
"""

from __future__ import annotations

import threading
from typing import Dict, Optional

from ..wire.client import MasterConnection
from ..wire.payload import loads_value
from .feed import TaskFeed


class Session:
    """One master's worth of a slave's shared state; see the module docstring."""

    def __init__(self, rejoin_grace: float = 0.0):
        self.leaving = threading.Event()     # no more heartbeats or rejoining: we are leaving
        self.main_done = threading.Event()   # the main thread stopped serving
        self.master_gone: Optional[str] = None   # why, once the watch thread lost the master
        self.rejoin_grace = rejoin_grace     # what applies to the current master (rejoin.py)
        self.watch_thread: Optional[threading.Thread] = None
        self.feed: Optional[TaskFeed] = None
        self.current_task: Optional[str] = None  # the task id a handler runs now
        self.data_connection: Optional[MasterConnection] = None   # for get_data
        self.busy_connection: Optional[MasterConnection] = None   # still waiting for work
        self.state_cache: Dict[str, object] = {}

    def fetch_state(self, label: str, main: MasterConnection) -> object:
        """A global state value, fetched from the master at most once per session, on a
        connection of its own (``main`` belongs to the feed thread; it is duplicated)."""
        try:
            return self.state_cache[label]
        except KeyError:
            pass
        if self.data_connection is None:
            self.data_connection = main.duplicate()
        found, value = self.data_connection.call("get_data", label)
        if not found:
            raise KeyError(f"global state {label!r} is not on the master: {value}")
        self.state_cache[label] = result = loads_value(value)
        return result

    def close_connections(self) -> None:
        """Close the connections opened besides the main one."""
        for connection in (self.data_connection, self.busy_connection):
            if connection is not None:
                connection.close()
        if self.feed is not None:
            self.feed.close_connections()

    def renewed(self) -> Session:
        """A fresh session for a restarted master; this one's extra connections close.

        The rejoin grace stays until the new master says otherwise: a slave
        that loses it again while registering waits for it again.
        """
        self.close_connections()
        return Session(self.rejoin_grace)
