"""A keeper's relay: the ``exchange`` calls of its workers, carried in batches.

A host of many workers (``task_manager slave LABEL -n N`` with N of at least
``settings.relay_workers()``) would give its master one busy connection,
one serving thread and one call per worker and round. With a relay, each
worker sends its exchange over a socket pair to its keeper
(``relayed.py``), and the keeper carries the exchanges of all its workers
in one ``exchange`` call of the batch form (``wire/protocol.py``): one
connection, one call and one lock round at the master for a whole host.
The keeper unpickles no payload: answers and tasks cross it as the bytes
the worker and the master made of them. Large payloads do not cross it at
all: a worker whose exchanges move them makes those on a connection of its
own (``relayed.py``).

Two threads send, each on a connection of its own:

* **now**: in batches, every request that carries answers or printed
  lines, or does not wait, asking for tasks without waiting: an answer is
  never held behind a wait;
* **wait**: the requests of idle workers (with their answers delivered,
  if they had any, and no work found), in one call that waits at the
  master until one of them gets a task, or until the first of their
  deadlines. A worker that goes idle while that call waits joins the next.
  A call that ends on that deadline with work for none of them answers
  every request it carried, each no later than its own deadline: else
  each idle worker's deadline would end a call that carries all the
  others again, and the master would serve each idle worker's poll about
  as many times as the host has idle workers (64 times for a keeper of 64:
  at 10,000 workers, more than the master's whole CPU). Answered early, a
  worker asks again at once, so its host's idle workers poll in step, in
  one call per poll period.

A third reads the workers' requests. Every request carries a number, which
its reply repeats (a worker may have a few outstanding: an exchange that
waits, a goodbye); the relay answers every request, with an error if the
master is lost. The other calls of a worker (registering, shared data, its
goodbye) are carried one by one by the **now** thread, so that a worker holds
no connection of its own to the master: a master of 10,000 workers on 160
hosts serves a few hundred connections.

On the link (``relay_link.py``: pickled tuples, their payloads' large buffers
beside them, never copied through the keeper's Python objects)::

    worker -> keeper  ("exchange", number, process_id, answers, max_tasks, wait, queue_seconds, output)
                      ("call", number, method, args)
    keeper -> worker  (number, "ok", reply)      reply: (status, tasks, revoked) for an exchange
                      (number, "failed", message) the master is lost (or the call failed)
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from multiprocessing.connection import wait as wait_for_any
from typing import Any, Callable, Dict, List, NamedTuple, Optional

from ..errors import ScientificMSError
from ..wire.client import MasterConnection
from ..wire.protocol import OK
from .relay_link import Link

log = logging.getLogger(__name__)


class Request(NamedTuple):
    """A worker's exchange, as it crossed its socket pair."""
    link: Link
    number: int            # repeated in the reply
    process_id: int
    answers: list          # protocol.Answer records
    max_tasks: int
    wait: float
    queue_seconds: Optional[float]
    output: Optional[tuple]
    deadline: float        # monotonic: when a waiting request gets its empty reply


class Call(NamedTuple):
    """Any other call of a worker (``register``, ``get_data``, ``unregister``)."""
    link: Link
    number: int
    method: str
    args: tuple


#: The calls a worker may make through the relay besides ``exchange``.
CALLS = frozenset({"register", "unregister", "get_data"})


class ExchangeRelay:
    """Carries the exchanges of a keeper's workers; see the module docstring.

    ``connect`` opens a new connection to the current master (raising
    ScientificMSError if there is none).
    """

    def __init__(self, connect: Callable[[], MasterConnection]):
        self._connect = connect
        self._cond = threading.Condition()
        self._links: Dict[Link, int] = {}      # worker link -> worker PID
        self._now: List[Request] = []
        self._calls: List[Call] = []
        self._closing: List[Link] = []   # links of ended workers, closed by the reading thread
        self._waiting: List[Request] = []
        self._connections: set = set()   # the two senders' connections to the master
        self._stopped = False
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_writer.setblocking(False)
        self._threads = [threading.Thread(target=target, name=f"scientific_ms-relay-{name}", daemon=True)
                         for name, target in (("read", self._read), ("now", self._send_now),
                                              ("wait", self._send_waiting))]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    @staticmethod
    def pair() -> tuple:
        """A new worker's link: (the keeper's end, the worker's end)."""
        return Link.pair()

    def add(self, link: Link, pid: int) -> None:
        """Carry the requests of worker ``pid`` that come on ``link`` (the keeper's end)."""
        with self._cond:
            self._links[link] = pid
        self._wake()

    def drop(self, pid: int) -> None:
        """The worker ``pid`` ended: forget its link (its requests go unanswered)."""
        with self._cond:
            for link, owner in list(self._links.items()):
                if owner == pid:
                    del self._links[link]
                    self._now = [r for r in self._now if r.link is not link]
                    self._waiting = [r for r in self._waiting if r.link is not link]
                    self._calls = [c for c in self._calls if c.link is not link]
                    self._closing.append(link)   # not closed under the reader's wait
        self._wake()

    def close_in_worker(self) -> None:
        """In a worker just forked: close the keeper's ends of the links and its connections
        (never shutting those down: the keeper still uses them)."""
        for link in list(self._links):
            link.close()
        self._links = {}
        for connection in list(self._connections):
            connection.disown()
            connection.close()
        self._connections.clear()
        for end in (self._wake_reader, self._wake_writer):
            end.close()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_writer.send(b"x")

    # ------------------------------------------------------------------ reading requests

    def _read(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                links = list(self._links)
                closing, self._closing = self._closing, []
            for link in closing:
                link.close()
            waitables: List[Any] = [self._wake_reader, *links]   # wait_for_any takes anything with a fileno()
            for ready in wait_for_any(waitables, 1.0):
                if ready is self._wake_reader:   # the wake-up socket
                    with contextlib.suppress(OSError):
                        self._wake_reader.recv(4096)
                    continue
                assert isinstance(ready, Link)
                if ready.closed:
                    continue
                try:
                    message = ready.recv()
                except (EOFError, OSError):
                    self._unlink(ready)
                    continue
                self._take(ready, message)

    def _unlink(self, link: Link) -> None:
        with self._cond:
            self._links.pop(link, None)
        link.close()

    def _take(self, link: Link, message) -> None:
        kind = message[0] if isinstance(message, tuple) and message else None
        if kind == "exchange" and len(message) == 8:
            _, number, process_id, answers, max_tasks, wait, queue_seconds, output = message
            request = Request(link, number, process_id, answers, max_tasks, wait, queue_seconds, output,
                              time.monotonic() + max(0.0, wait))
            # An idle worker with nothing to hand in waits with the others at once; anything
            # carrying answers or lines goes now, and waits afterwards if it found no work.
            idle = max_tasks > 0 and wait > 0 and not answers and not output
            with self._cond:
                (self._waiting if idle else self._now).append(request)
                self._cond.notify_all()
        elif kind == "call" and len(message) == 4 and message[2] in CALLS:
            with self._cond:
                self._calls.append(Call(link, message[1], message[2], tuple(message[3])))
                self._cond.notify_all()
        else:
            log.error("a worker sent its keeper's relay %r; expected an exchange or one of %s",
                      message if kind is None else kind, ", ".join(sorted(CALLS)))
            if isinstance(message, tuple) and len(message) > 1 and isinstance(message[1], int):
                self._reply(link, message[1], ("failed", f"the keeper's relay does not carry {kind!r}"))

    # ------------------------------------------------------------------ sending

    def _send_now(self) -> None:
        connection: Optional[MasterConnection] = None
        while True:
            with self._cond:
                while not self._now and not self._calls and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    break
                batch, self._now = self._now, []
                calls, self._calls = self._calls, []
            for call in calls:
                connection = self._call(connection, call)
            if batch:
                connection = self._carry(connection, batch, 0.0)
        self._close(connection)

    def _call(self, connection: Optional[MasterConnection], call: Call) -> Optional[MasterConnection]:
        """Carry one call of a worker; returns the connection to use next (None after a failure)."""
        try:
            connection = connection or self._open()
            reply = connection.call(call.method, *call.args, timeout=60.0)
        except ScientificMSError as error:
            self._reply(call.link, call.number, ("failed", str(error)))
            self._close(connection)
            return None
        self._reply(call.link, call.number, ("ok", reply))
        return connection

    def _open(self) -> MasterConnection:
        connection = self._connect()
        connection.claim()
        self._connections.add(connection)
        return connection

    def _close(self, connection: Optional[MasterConnection]) -> None:
        if connection is not None:
            self._connections.discard(connection)
            connection.close()

    def _send_waiting(self) -> None:
        connection: Optional[MasterConnection] = None
        while True:
            with self._cond:
                while not self._waiting and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    break
                now = time.monotonic()
                due = [r for r in self._waiting if r.deadline <= now]
                batch = [r for r in self._waiting if r.deadline > now]
                self._waiting = []
            for request in due:
                self._reply(request.link, request.number, ("ok", (OK, [], [])))
            if batch:
                wait = min(r.deadline for r in batch) - time.monotonic()
                connection = self._carry(connection, batch, max(0.0, wait), polls=True)
        self._close(connection)

    def _carry(self, connection: Optional[MasterConnection], batch: List[Request],
               wait: float, polls: bool = False) -> Optional[MasterConnection]:
        """Send ``batch`` in one call; reply to each request, or keep it waiting. Returns the
        connection to use next time (None after a failure: a new one is opened then).
        ``polls``: the batch is idle workers' requests waiting ``wait`` s for work; if none
        gets any, each is answered (none waits on)."""
        try:
            connection = connection or self._open()
            replies = connection.exchange_batch(
                [(r.process_id, r.answers, r.max_tasks, r.queue_seconds, r.output) for r in batch], wait)
        except ScientificMSError as error:
            for request in batch:
                self._reply(request.link, request.number, ("failed", str(error)))
            self._close(connection)
            return None
        # Idle workers' call that found work for none of them ended on the first deadline: every
        # request it carried is answered now, not sent again (see the module docstring).
        timed_out = polls and not any(tasks or revoked for _status, tasks, revoked in replies)
        waiting = []
        for request, reply in zip(batch, replies):
            status, tasks, revoked = reply
            if status == OK and not tasks and not revoked and request.max_tasks > 0 \
                    and not timed_out and request.deadline > time.monotonic():
                # No work for it now: it waits at the master, its answers delivered.
                waiting.append(request._replace(answers=[], output=None))
            else:
                self._reply(request.link, request.number, ("ok", reply))
        if waiting:
            with self._cond:
                self._waiting.extend(waiting)
                self._cond.notify_all()
        return connection

    @staticmethod
    def _reply(link: Link, number: int, reply: tuple) -> None:
        try:
            link.send((number, *reply))
        except OSError:
            pass   # the worker is gone: the keeper reports its end, its tasks go elsewhere
