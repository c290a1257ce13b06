"""A worker's side of its keeper's relay (``relay.py``).

A worker of a keeper that relays holds no connection of its own to the
master: :class:`RelayedConnection` has the face of a
:class:`~scientific_ms.wire.client.MasterConnection` and sends every call
to the keeper over a socket pair. Several threads of the worker may call at
once (the feed waiting for work, a goodbye, printed lines): each request
carries a number, and whichever caller reads the link hands each reply to
its own caller.

After a lost master comes back (``rejoin.py``) the worker finds it itself
and talks to it on a connection of its own again; its exchanges still go
through the keeper.
"""

from __future__ import annotations

import itertools
import threading
from typing import Dict, List, Optional, Tuple

from ..errors import ConnectionLostError
from ..wire.client import MasterConnection
from ..wire.protocol import Answer, TaskMessage
from .relay import CALLS
from .relay_link import Link


class RelayLink:
    """The worker's end of its link to the keeper's relay, shared by all its threads.

    No thread of its own: a caller waiting for its reply reads the link while no other
    caller does, and hands on the replies of the others (most of the time there is one
    caller, the feed, and it reads its own reply).
    """

    def __init__(self, link: Link, address: Tuple[str, int, bytes]):
        self._link = link
        self.address = address            # the master the keeper speaks to: (host, port, secret)
        self._send_lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._cond = threading.Condition()
        self._replies: Dict[int, tuple] = {}
        self._waiting: set = set()         # numbers of the requests still without a reply
        self._reading = False              # a caller reads the link now
        self._broken: Optional[str] = None

    def request(self, kind: str, *fields) -> object:
        """Send a request and wait for its reply; ConnectionLostError if the master is lost."""
        with self._cond:
            if self._broken is not None:
                raise ConnectionLostError(self._broken)
            number = next(self._numbers)
            self._waiting.add(number)
        try:
            with self._send_lock:
                self._link.send((kind, number, *fields))
        except OSError as error:
            self._fail(f"lost the link to this worker's keeper: {error}")
        reply = self._wait_for(number)
        if reply[0] == "failed":
            raise ConnectionLostError(reply[1])
        return reply[1]

    def _wait_for(self, number: int) -> tuple:
        with self._cond:
            while True:
                if number in self._replies:
                    self._waiting.discard(number)
                    return self._replies.pop(number)
                if self._broken is not None:
                    self._waiting.discard(number)
                    return ("failed", self._broken)
                if not self._reading:
                    break
                self._cond.wait()   # another caller reads; it hands our reply over
            self._reading = True
        while True:   # we read until our own reply comes
            try:
                received, *reply = self._link.recv()
            except (EOFError, OSError) as error:
                self._fail(f"lost the link to this worker's keeper: {error or 'it ended'}")
                with self._cond:
                    self._reading = False
                    self._cond.notify_all()
                    self._waiting.discard(number)
                return ("failed", self._broken)
            with self._cond:
                if received == number:
                    self._reading = False
                    self._waiting.discard(number)
                    self._cond.notify_all()   # another caller may read now
                    return tuple(reply)
                if received in self._waiting:
                    self._replies[received] = tuple(reply)
                    self._cond.notify_all()

    def _fail(self, message: str) -> None:
        """Every request waiting, and every later one, fails with ``message``."""
        with self._cond:
            if self._broken is None:
                self._broken = message
            self._cond.notify_all()


class RelayedConnection(MasterConnection):
    """A connection to the master through the keeper's relay (``relay``); with ``direct``,
    every call but ``exchange`` goes on that connection of the worker's own instead.

    A MasterConnection to whoever uses it, but it opens no socket itself (so it does not
    call the base class's constructor): every method that would touch one is overridden.
    """

    def __init__(self, relay: RelayLink, direct: Optional[MasterConnection] = None):
        self.relay = relay
        self.direct = direct
        if direct is not None:
            self.host, self.port, self.secret = direct.host, direct.port, direct.secret
            self.tls_context = direct.tls_context
        else:
            self.host, self.port, self.secret = relay.address
            self.tls_context = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def exchange(self, process_id: int, answers: List[Answer], max_tasks: int,
                 wait: float, queue_seconds: Optional[float] = None,
                 output: Optional[Tuple[List[str], int]] = None) -> Tuple[str, List[TaskMessage], list]:
        """As ``MasterConnection.exchange``, through the keeper."""
        reply = self.relay.request("exchange", process_id, list(answers), max_tasks, wait, queue_seconds, output)
        assert isinstance(reply, tuple)
        return reply   # (status, tasks, revoked)

    def call(self, method: str, *args, timeout: Optional[float] = None):
        if self.direct is not None:
            return self.direct.call(method, *args, timeout=timeout)
        if method not in CALLS:
            raise ValueError(f"a worker's call {method!r} does not go through its keeper's relay")
        return self.relay.request("call", method, args)

    def duplicate(self) -> RelayedConnection:
        """Another connection for another thread (the relay serves several at once)."""
        return RelayedConnection(self.relay, self.direct.duplicate() if self.direct is not None else None)

    def claim(self) -> None:
        if self.direct is not None:
            self.direct.claim()

    def disown(self) -> None:
        if self.direct is not None:
            self.direct.disown()

    def close(self) -> None:
        """Close the direct connection, if any; the link to the keeper outlives connections."""
        if self.direct is not None:
            self.direct.close()
