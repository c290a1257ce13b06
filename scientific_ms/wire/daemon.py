"""The master's Pyro5 daemon: who may connect, and the connections it holds.

``AuthenticatingDaemon`` runs the challenge-response (``auth.server_handshake``,
under TLS when asked) on each new connection before Pyro5 reads a byte of it,
bounds the connections still authenticating, keeps the set of authenticated
ones (``wait_until_closed``, ``close_connections``) and reports each that
drops. ``configure_pyro`` sizes Pyro5's thread pool and the open-file limit
for thousands of slaves. What the daemon serves is ``server.py``'s.
"""

from __future__ import annotations

import collections
import logging
import socket
import threading
from typing import Callable, Set

import Pyro5.server
from Pyro5 import config as pyro_config

from .. import settings
from . import auth, tls
from .buffers import carry_buffers

log = logging.getLogger(__name__)


class AuthenticatingDaemon(Pyro5.server.Daemon):
    """A Pyro5 daemon that runs our challenge-response instead of Pyro's handshake.

    Every connection holds a pool thread while it authenticates, so at most a
    quarter of the pool may be mid-handshake: beyond that the oldest pending
    connection is dropped. A genuine handshake takes milliseconds and is
    seldom the oldest; silent strangers cannot fill the pool and lock slaves
    out. A slave dropped all the same sees the connection close before the
    master's verdict and tries again (``client.DROPPED_RETRIES``).
    """

    def __init__(self, connection_closed: Callable[[object], None], secret: bytes, label: str, host: str,
                 port: int, tls_context=None):
        self._on_closed = connection_closed   # the service's: who spoke on the connection is gone
        self._tls_context = tls_context
        self._secret = secret
        self._label = label
        self._connections: Set[object] = set()
        self._connections_lock = threading.Lock()
        self._connection_closed = threading.Condition(self._connections_lock)
        self._pending: collections.OrderedDict[object, None] = collections.OrderedDict()
        self._pending_limit = max(8, pyro_config.THREADPOOL_SIZE // 4)
        super().__init__(host=host, port=port)
        # Pyro5 listens with a backlog of 100. Beyond it Linux drops the handshake's last
        # ACK: the slave believes it is connected while the master retransmits its SYN-ACK
        # for half a minute, so a node's keeper starting 64 workers among a few such nodes
        # waits out its authentication. The kernel caps the backlog at net.core.somaxconn.
        self.sock.listen(settings.max_connections())

    def _handshake(self, conn, denied_reason=None):
        if denied_reason:
            log.warning("refused a connection: %s", denied_reason)
            return False
        self._admit(conn)
        try:
            return self._authenticate(conn)
        finally:
            self._leave_pending(conn)

    def _leave_pending(self, conn) -> None:
        with self._connections_lock:
            self._pending.pop(conn, None)

    def _admit(self, conn) -> None:
        with self._connections_lock:
            self._pending[conn] = None
            while len(self._pending) > self._pending_limit:
                oldest, _ = self._pending.popitem(last=False)
                log.warning("too many connections still authenticating; dropping the oldest")
                _shutdown(oldest)

    def _authenticate(self, conn) -> bool:
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls_context is not None:
            try:
                conn.sock.settimeout(tls.HANDSHAKE_TIMEOUT)
                conn.sock = self._tls_context.wrap_socket(conn.sock, server_side=True)
                conn.sock.settimeout(None)
            except (OSError, ValueError) as error:
                log.info("rejected a connection whose TLS handshake failed: %s", error)
                return False
        # Out of the pending set as soon as its proof holds: a connection that
        # proved the secret is never dropped as one still authenticating.
        if not auth.server_handshake(conn.sock, self._secret, self._label,
                                     on_proved=lambda: self._leave_pending(conn)):
            log.info("rejected a connection that failed authentication")
            return False
        carry_buffers(conn)
        with self._connections_lock:
            self._connections.add(conn)
        return True

    def clientDisconnect(self, conn):
        with self._connections_lock:
            self._connections.discard(conn)
            self._connection_closed.notify_all()
        self._on_closed(conn)

    def wait_until_closed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until no client connection is left; whether none is."""
        with self._connections_lock:
            return self._connection_closed.wait_for(lambda: not self._connections, timeout)

    def close_connections(self, how: int = socket.SHUT_RDWR) -> None:
        """Shut every client connection down (``how``: as socket.shutdown), waking the
        threads that serve them."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            _shutdown(conn, how)


def _shutdown(conn, how: int = socket.SHUT_RDWR) -> None:
    """Wake the thread serving a connection by shutting its socket down."""
    try:
        conn.sock.shutdown(how)
    except (OSError, ValueError):
        pass


def configure_pyro() -> None:
    """Set Pyro5's globals for a master: a thread per connection, as many as ``settings.max_connections``."""
    # Pyro5 reads these globals when a daemon is created and whenever a
    # connection arrives; the master process needs a thread per connection.
    _raise_file_limit(settings.max_connections() + 256)
    pyro_config.SERVERTYPE = "thread"
    pyro_config.THREADPOOL_SIZE = max(pyro_config.THREADPOOL_SIZE, settings.max_connections())
    pyro_config.THREADPOOL_SIZE_MIN = max(pyro_config.THREADPOOL_SIZE_MIN, 8)


def _raise_file_limit(wanted: int) -> None:
    """Lift the soft limit on open files toward ``wanted`` (a slave holds 2-3 connections).

    The common default of 1,024 would refuse a few hundred slaves.
    """
    try:
        import resource
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as error:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, error)

