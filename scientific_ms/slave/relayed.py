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

Large payloads do not go through the keeper. Every byte that crosses it is
moved twice more (worker to keeper, keeper to master, and back): with
tasks of 1 MB in and out, a keeper relaying two workers spent more CPU per
task than the master, or than both workers, and served less than half the
tasks per second of a keeper whose workers spoke to the master directly,
its links' copies already gone (``docs/reliability.md``). So a worker's
exchanges go on a connection of its own, opened at the first of them and
kept until the worker ends, while its work is large: from an exchange that
moved payloads of at least ``settings.relay_direct_bytes()`` (256 kB; its
answers and the tasks it got together) until one that got small tasks, or
none in a whole wait for work (an idle worker then waits through the
keeper again, with the others; the first tasks of a job still come through
it). The master binds the worker to that connection too
(``wire/server.py``), so that its death costs only its tasks either way.
"""

from __future__ import annotations

import itertools
import logging
import threading
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .. import settings
from ..errors import ConnectionLostError, ScientificMSError
from ..wire.client import MasterConnection
from ..wire.protocol import Answer, TaskMessage, payload_size
from .relay import CALLS
from .relay_link import Link

log = logging.getLogger(__name__)


class RelayLink:
    """The worker's end of its link to the keeper's relay, shared by all its threads.

    No thread of its own: a caller waiting for its reply reads the link while no other
    caller does, and hands on the replies of the others (most of the time there is one
    caller, the feed, and it reads its own reply).
    """

    def __init__(self, link: Link, address: Tuple[str, int, bytes],
                 connect: Optional[Callable[[], MasterConnection]] = None):
        self._link = link
        self.address = address            # the master the keeper speaks to: (host, port, secret)
        #: Opens a connection of the worker's own to that master, for exchanges that carry
        #: large payloads (None: every exchange goes through the keeper).
        self.connect = connect
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
            self._link.send((kind, number, *fields))   # the link locks its sends
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
        #: The worker's own connection for exchanges with large payloads, once one was made
        #: (see the module docstring); used by the thread that makes the exchanges.
        self.bulk: Optional[MasterConnection] = None
        self._bulk_failed = False
        self._direct_bytes = settings.relay_direct_bytes()
        #: Its work is large: its last exchange moved large payloads, and none since moved
        #: small work or waited in vain (see the module docstring).
        self._large = False
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
        """As ``MasterConnection.exchange``, through the keeper, or on the worker's own
        connection if it carries large payloads (see the module docstring)."""
        handed_in = payload_bytes(answers) if self._direct_bytes else 0
        bulk = self._bulk_for(handed_in)
        if bulk is not None:
            reply = bulk.exchange(process_id, answers, max_tasks, wait, queue_seconds, output)
        else:
            relayed = self.relay.request("exchange", process_id, list(answers), max_tasks, wait, queue_seconds,
                                         output)
            assert isinstance(relayed, tuple)
            reply = relayed
        if self._direct_bytes:
            tasks = reply[1]
            if handed_in + payload_bytes(tasks) >= self._direct_bytes:
                self._large = True
            elif tasks or wait > 0:   # small work now, or none for a whole wait: back to the keeper
                self._large = False
        return reply   # (status, tasks, revoked)

    def _bulk_for(self, handed_in: int) -> Optional[MasterConnection]:
        """The connection of the worker's own that an exchange handing in ``handed_in`` bytes
        of answers goes on, or None: through the keeper."""
        limit = self._direct_bytes
        if not limit or self._bulk_failed or not (self._large or handed_in >= limit):
            return None
        if self.bulk is None:
            connect = self.direct.duplicate if self.direct is not None else self.relay.connect
            if connect is None:
                return None
            try:
                self.bulk = connect()
            except ScientificMSError as error:   # the keeper carries them all, as it can
                log.warning("a worker could not open a connection of its own for its large payloads "
                            "(%s); they go through its keeper", error)
                self._bulk_failed = True
                return None
        return self.bulk

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
        for connection in (self.direct, self.bulk):
            if connection is not None:
                connection.claim()

    def disown(self) -> None:
        for connection in (self.direct, self.bulk):
            if connection is not None:
                connection.disown()

    def close(self) -> None:
        """Close the worker's own connections, if any; the link to the keeper outlives connections."""
        if self.direct is not None:
            self.direct.close()
        bulk, self.bulk = self.bulk, None
        if bulk is not None:
            bulk.claim()   # made by the thread that made the exchanges; closed by whichever ends
            bulk.close()


def payload_bytes(records: Sequence) -> int:
    """The bytes of the payloads of ``records`` (answers or tasks)."""
    return sum(payload_size(record.payload) for record in records)
