"""A worker's connection when its keeper relays its exchanges (``relay.py``).

The worker still opens its own connection to the master, and uses it for
what is rare: registering, shared data, its goodbye. Its ``exchange``
calls, which carry every task and answer, go to its keeper over a socket
pair, and the keeper carries them with its other workers' in one call.
"""

from __future__ import annotations

import threading
from multiprocessing.connection import Connection
from typing import List, Optional, Tuple

from ..errors import ConnectionLostError
from ..wire.client import MasterConnection
from ..wire.protocol import Answer, TaskMessage
from .relay import encode_request


class RelayedConnection:
    """A :class:`~scientific_ms.wire.client.MasterConnection` whose ``exchange`` goes
    through the keeper's relay on ``link``; every other call goes on ``direct``."""

    def __init__(self, direct: MasterConnection, link: Connection):
        self.direct = direct
        self._link = link
        self._lock = threading.Lock()   # one exchange at a time: each waits for its reply

    # What the slave reads of a connection: where the master is.
    @property
    def host(self) -> str:
        return self.direct.host

    @property
    def port(self) -> int:
        return self.direct.port

    @property
    def secret(self) -> bytes:
        return self.direct.secret

    @property
    def label(self) -> str:
        return self.direct.label

    @property
    def tls_context(self):
        return self.direct.tls_context

    @property
    def address(self) -> str:
        return self.direct.address

    def exchange(self, process_id: int, answers: List[Answer], max_tasks: int,
                 wait: float, queue_seconds: Optional[float] = None,
                 output: Optional[Tuple[List[str], int]] = None) -> Tuple[str, List[TaskMessage], list]:
        """As ``MasterConnection.exchange``, through the keeper."""
        request = encode_request(process_id, list(answers), max_tasks, wait, queue_seconds, output)
        with self._lock:
            try:
                self._link.send(request)
                reply = self._link.recv()
            except (EOFError, OSError) as error:
                raise ConnectionLostError(f"lost the link to this worker's keeper: {error}") from None
        if reply[0] == "failed":
            raise ConnectionLostError(reply[1])
        status, tasks, revoked = reply
        return status, tasks, revoked

    def call(self, method: str, *args, timeout: Optional[float] = None):
        return self.direct.call(method, *args, timeout=timeout)

    def status(self, timeout: float, wait: float = 0.0, failures: bool = False) -> dict:
        return self.direct.status(timeout, wait, failures)

    def duplicate(self) -> MasterConnection:
        """Another direct connection (for the goodbye, or printed lines while the feed waits
        for work: never behind the relayed exchange that waits)."""
        return self.direct.duplicate()

    def claim(self) -> None:
        self.direct.claim()

    def disown(self) -> None:
        self.direct.disown()

    def close(self) -> None:
        """Close the direct connection; the link to the keeper stays (it outlives connections)."""
        self.direct.close()
