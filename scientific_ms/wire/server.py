"""Serve a TaskManager over Pyro5: the calls slaves make, disconnects, the reaper.

Slave traffic is a few coarse calls (``protocol.CALLS``): one
``exchange`` carries a batch of answers in and a batch of tasks out (their
large buffers right behind the message, ``buffers.py``), and a keeper's
``agent_watch`` long-poll carries the heartbeats of its workers and returns
at once when the master finished. Payloads are pickled bytes carried by
Pyro5's marshal serializer, which passes bytes through without base64.

Each connection runs in its own thread of Pyro5's thread-pool server, sized
for thousands of slaves rather than Pyro5's default 80. A connection is
authenticated (``auth.server_handshake``) before Pyro5 reads anything from
it: the daemon that does so, and holds the connections, is ``daemon.py``'s.
When a connection that a slave used drops, the slave is declared dead at
once unless it said goodbye first; so are the workers of a keeper whose
registering connection drops.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Dict, List, Optional, Set, Tuple

import Pyro5.core
import Pyro5.server
from Pyro5.callcontext import current_context

from .. import settings
from ..core.manager import TaskManager
from ..core.unserved import UnservedTags
from ..errors import ConfigurationError, TaskManagerTermination, UnknownProcessError
from .daemon import AuthenticatingDaemon, configure_pyro
from .protocol import (
    OK,
    REVOKED,
    TERMINATED,
    UNKNOWN,
    answers_from_wire,
    object_name,
    pack,
    payload_size,
    tasks_to_wire,
    unpack,
)

log = logging.getLogger(__name__)

#: Seconds a closing master waits for its clients to close their connections before it cuts them.
CLOSE_GRACE_SECONDS = 1.0

class TaskManagerService:
    """The remote face of a TaskManager; every caller is already authenticated."""

    def __init__(self, manager: TaskManager):
        self._manager = manager
        self._lock = threading.Lock()
        self._processes_by_connection: Dict[object, Set[int]] = {}
        self._keeper_connections: Dict[int, object] = {}   # keeper id -> the connection it registered on
        self._status_waits = 0        # status(wait=) calls not yet answered
        self._status_waits_done = threading.Condition(self._lock)

    # -- bookkeeping of which connection speaks for which process

    def _bind(self, process_id: int, keeper: Optional[int] = None) -> None:
        """Declare ``process_id`` dead when the current connection drops, and when
        the one its ``keeper`` registered on does (a killed keeper's workers die with it)."""
        connection = current_context.client
        if connection is None:
            return
        with self._lock:
            self._processes_by_connection.setdefault(connection, set()).add(process_id)
            keeper_connection = self._keeper_connections.get(keeper) if keeper is not None else None
            if keeper_connection is not None and keeper_connection in self._processes_by_connection:
                self._processes_by_connection[keeper_connection].add(process_id)

    def _forget(self, process_id: int) -> None:
        with self._lock:
            for process_ids in self._processes_by_connection.values():
                process_ids.discard(process_id)
            self._keeper_connections.pop(process_id, None)

    def connection_closed(self, connection) -> None:
        with self._lock:
            process_ids = self._processes_by_connection.pop(connection, ())
            for process_id in process_ids:
                self._keeper_connections.pop(process_id, None)
        for process_id in process_ids:
            if self._manager.process_lost(process_id, "its connection dropped"):
                log.debug("process %s declared dead: connection closed", process_id)

    # -- the exposed calls

    @Pyro5.server.expose
    def register(self, role: str, info: dict, tags: List[str],
                 watchdog_period: Optional[float]) -> Tuple[str, int]:
        try:
            process_id = self._manager.register_process(role, info, tags, watchdog_period)
        except TaskManagerTermination:
            return TERMINATED, 0
        keeper = info.get("agent") if isinstance(info, dict) else None
        self._bind(process_id, keeper if isinstance(keeper, int) else None)
        if role == "agent" and current_context.client is not None:
            with self._lock:
                self._keeper_connections[process_id] = current_context.client
        return OK, process_id

    @Pyro5.server.expose
    def unregister(self, process_id: int, abandoned: Optional[List[int]] = None,
                   reason: Optional[str] = None) -> None:
        """Goodbye; ``abandoned``: assignments the slave had started and gives up (a loss each);
        ``reason``: why a slave leaves on its own (``protocol.LEAVE_REASONS``), counted in the status."""
        with self._lock:
            for process_ids in self._processes_by_connection.values():
                process_ids.discard(process_id)
        self._manager.unregister_process(process_id, abandoned=abandoned or (), reason=reason)

    @Pyro5.server.expose
    def exchange(self, packed: bytes) -> bytes:
        """Store answers, then hand out up to ``max_tasks`` tasks (waiting up to ``wait`` s).

        ``packed``: (process_id, answers, max_tasks, wait[, queue_seconds[, output]]); the reply, packed
        too (see ``protocol.PACKED_CALLS``): (status, tasks, revoked assignments).
        Large buffers of answers follow the request on the socket, those of
        tasks follow the reply (``buffers.py``).
        """
        arguments = unpack(packed)
        if arguments and isinstance(arguments[0], list):
            return pack(tuple(self._exchange_relayed(*arguments)))
        return pack(self._exchange(*arguments))

    def _exchange(self, process_id: int, answers: list, max_tasks: int, wait: float,
                  queue_seconds: Optional[float] = None, output: Optional[tuple] = None) -> Tuple[str, list, list]:
        connection = current_context.client
        if answers:   # first of all: the buffers wait on the socket
            answers = answers_from_wire(answers, connection.sock if connection is not None else None)
        if output and isinstance(output, (list, tuple)) and len(output) == 2:
            # what its handlers printed: shown before the results they printed it for are delivered
            self._manager.slave_output(process_id, *output)
        if answers:
            self._manager.store_answers(process_id, answers)
        if answers or max_tasks > 0:
            # Bound to the connections it works on; not to one that only carries its output
            # while it waits for work (output_flush.py): that one's close says nothing of it.
            self._bind(process_id)
        tasks = []
        if max_tasks > 0:
            if not isinstance(queue_seconds, (int, float)):
                queue_seconds = None   # not said (or nonsense): the fixed target
            try:
                tasks = self._manager.take_tasks(process_id, max_tasks, wait, queue_seconds)
            except TaskManagerTermination:
                return TERMINATED, [], []
            except UnknownProcessError:
                return UNKNOWN, [], []
        records, buffers = tasks_to_wire(tasks)
        if buffers:
            connection.trailer = buffers   # sent right after the reply (wire.BufferConnection)
        return OK, records, self._manager.take_revoked(process_id)

    def _exchange_relayed(self, parts: list, wait: float) -> list:
        """The batch form of ``exchange``, a keeper's relay's (``slave/relay.py``): ``parts``
        are (process_id, answers, max_tasks, queue_seconds, output), one per worker; with
        ``wait`` > 0 the call returns once one of them gets a task. Replies (status, tasks,
        revoked) per part, in order; the tasks' buffers follow, in the same order."""
        connection = current_context.client
        sock = connection.sock if connection is not None else None
        stored = []
        wants = []
        for process_id, answers, max_tasks, queue_seconds, output in parts:
            if answers:   # read in part order: the buffers wait on the socket in that order
                stored.append((process_id, answers_from_wire(answers, sock)))
            if output and isinstance(output, (list, tuple)) and len(output) == 2:
                self._manager.slave_output(process_id, *output)
            if answers or max_tasks > 0:
                self._bind(process_id)
            if max_tasks > 0:
                wants.append((process_id, max_tasks,
                              queue_seconds if isinstance(queue_seconds, (int, float)) else None))
        if stored:
            self._manager.store_answers_of(stored)
        try:
            assigned, unknown = self._manager.take_tasks_for(wants, wait) if wants else ({}, [])
        except TaskManagerTermination:
            self._manager.count_relayed(len(parts))
            return [(TERMINATED, [], []) for _ in parts]
        replies: List[tuple] = []
        buffers: list = []
        unknown_ids = set(unknown)
        carried = sum(payload_size(answer.payload) for _process_id, answers in stored for answer in answers)
        for process_id, _answers, _max_tasks, _queue_seconds, _output in parts:
            if process_id in unknown_ids:
                replies.append((UNKNOWN, [], []))
                continue
            tasks = assigned.get(process_id, ())
            carried += sum(payload_size(task.payload) for task in tasks)
            records, more = tasks_to_wire(tasks)
            buffers.extend(more)
            replies.append((OK, records, self._manager.take_revoked(process_id)))
        self._manager.count_relayed(len(parts), carried)
        if buffers:
            connection.trailer = buffers
        return replies

    # -- a keeper speaks for the workers it keeps (slave/keeper.py)

    @Pyro5.server.expose
    def agent_watch(self, packed: bytes) -> bytes:
        """A keeper's heartbeats; ``packed``: (agent_id, beats, timeout), the reply packed
        too (see ``protocol.PACKED_CALLS``): (status, [unknown process ids])."""
        return pack(self._agent_watch(*unpack(packed)))

    def _agent_watch(self, agent_id: int, beats: list, timeout: float) -> Tuple[str, list]:
        """A keeper's heartbeats: ``beats`` are (process_id, stats or None) pairs (None:
        the keeper cannot vouch for that worker now, e.g. it is stopped); ``agent_id``
        is the keeper's id (a lone keeper, not registered, gives its worker's). Then
        waits up to ``timeout`` s for the end of the job, a revocation, or one of them
        leaving. Returns (status, [unknown process ids]); status UNKNOWN: ``agent_id`` is."""
        if self._manager.terminated:
            return TERMINATED, []
        # Not bound to this connection: the keeper and its workers are bound to the one
        # the keeper registered on, which it closes last, after saying goodbye.
        beats = [tuple(beat) for beat in beats]
        # The keeper's own beat, unless it speaks for itself among its beats (a lone keeper
        # watches under its worker's id, and cannot vouch for it while it is stopped).
        own: List[tuple] = [] if any(process_id == agent_id for process_id, _ in beats) else [(agent_id, {})]
        unknown = self._manager.heartbeats(own + beats)
        if agent_id in unknown:
            return UNKNOWN, unknown
        if unknown:
            return OK, unknown
        ids = [agent_id] + [process_id for process_id, _ in beats]
        terminated, revoked = self._manager.wait_for_news_of(ids, max(0.0, min(timeout, 3600.0)))
        return (TERMINATED if terminated else REVOKED if revoked else OK), []

    @Pyro5.server.expose
    def lost(self, process_id: int, reason: str, running: Optional[List[int]] = None) -> bool:
        """A keeper reports that one of its workers died; ``running``: the assignment
        it had started, if known (only that one is blamed)."""
        self._forget(process_id)
        return self._manager.process_lost(process_id, reason, running or ())

    @Pyro5.server.expose
    def get_data(self, label: str) -> Tuple[bool, object]:
        try:
            return True, self._manager.retrieve_data(label)
        except KeyError as error:
            return False, str(error.args[0])

    @Pyro5.server.expose
    def status(self, wait: float = 0.0, failures: bool = False) -> dict:
        """The manager's status; with ``wait`` > 0, after waiting up to that many seconds
        for the job to end, so that a watcher reads the final state, not the one before it.
        ``failures``: with the last failed tasks and their tracebacks (the dashboard's)."""
        failures = bool(failures)
        if wait <= 0:
            return self._manager.status(failures)
        with self._lock:
            self._status_waits += 1
        try:
            self._manager.wait_terminated(min(float(wait), 60.0))
            return self._manager.status(failures)
        finally:
            with self._lock:
                self._status_waits -= 1
                self._status_waits_done.notify_all()

    def answer_status_waits(self, timeout: float) -> None:
        """Let the status(wait=) calls woken by the end of the job return before their
        connections close (Pyro5's shutdown then leaves their replies time to go out)."""
        with self._lock:
            self._status_waits_done.wait_for(lambda: not self._status_waits, timeout)


class MasterServer:
    """Runs the daemon and the liveness reaper for one TaskManager."""

    def __init__(self, manager: TaskManager, label: str, secret: bytes,
                 host: str, port: Optional[int], reaper_interval: float = 0.25, tls_context=None):
        configure_pyro()
        self.manager = manager
        self.service = TaskManagerService(manager)
        self._tls_context = tls_context
        self.daemon = self._bind(host, port, label, secret)
        self.daemon.register(self.service, object_name(label))
        self.port = self.daemon.sock.getsockname()[1]
        self.host = host
        self._stop = threading.Event()
        self._reaper_interval = reaper_interval
        self._unserved = UnservedTags(label)   # warns in the master's log about tasks no slave can run
        self._threads = [
            threading.Thread(target=self.daemon.requestLoop, name=f"scientific_ms-daemon-{label}", daemon=True),
            threading.Thread(target=self._reap, name=f"scientific_ms-reaper-{label}", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _bind(self, host: str, port: Optional[int], label: str, secret: bytes) -> AuthenticatingDaemon:
        closed = self.service.connection_closed
        if port is not None:
            try:
                return AuthenticatingDaemon(closed, secret, label, host, port, self._tls_context)
            except OSError as error:
                raise ConfigurationError(f"cannot listen on {host}:{port}: {error.strerror}") from None
        try:
            return AuthenticatingDaemon(closed, secret, label, host, settings.DEFAULT_PORT, self._tls_context)
        except OSError:
            return AuthenticatingDaemon(closed, secret, label, host, 0, self._tls_context)

    def _reap(self) -> None:
        while not self._stop.wait(self._reaper_interval):
            try:
                self.manager.check_liveness(expected_interval=self._reaper_interval)
                self.manager.check_time_limits()
                self._unserved.check(self.manager.status)
            except Exception:  # never let the reaper die silently
                log.exception("liveness check failed")

    def close(self) -> None:
        self._stop.set()
        self.service.answer_status_waits(1.0)   # watchers get the final state
        # Slaves told of the end close their connections themselves; until they do, their
        # calls are still answered (a keeper's last watch, a goodbye). Then Pyro5's shutdown
        # would join each thread still serving a connection for up to 0.1 s (half a minute
        # for 300 connections left open): ending their reads first lets those threads go at
        # once, their replies on the way still going out.
        self.daemon.wait_until_closed(CLOSE_GRACE_SECONDS)
        self.daemon.close_connections(socket.SHUT_RD)
        self.daemon.shutdown()
        self.daemon.close_connections()
        for thread in self._threads:
            thread.join(timeout=5)
