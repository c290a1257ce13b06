"""Authenticated connections from slaves and the command line to a master."""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import time
from typing import List, Optional, Tuple

import Pyro5.client
import Pyro5.errors

from ..errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectionDroppedError,
    ConnectionLostError,
    MasterNotFoundError,
)
from . import auth, discovery, tls
from .buffers import carry_buffers
from .protocol import (
    CALLS,
    PACKED_CALLS,
    Answer,
    TaskMessage,
    answers_to_wire,
    object_name,
    pack,
    tasks_from_wire,
    unpack,
)

log = logging.getLogger(__name__)

#: How often a slave that waits for its master says so in its log.
WAIT_NOTE_SECONDS = 300.0
#: Times a connection is tried again that the master closed before its verdict on our
#: secret: a master drops the oldest of too many connections still authenticating.
DROPPED_RETRIES = 3


class MasterConnection:
    """One authenticated connection; use it from the thread that made it."""

    def __init__(self, host: str, port: int, secret: bytes, label: str, timeout: float = 5.0,
                 tls_context: Optional[ssl.SSLContext] = None):
        self.host, self.port, self.secret, self.label = host, port, secret, label
        self.tls_context = tls_context
        pause = 0.05
        for attempt in range(DROPPED_RETRIES + 1):
            try:
                self._proxy = self._open(timeout)
                break
            except ConnectionDroppedError as error:
                if attempt == DROPPED_RETRIES:
                    raise
                log.info("%s; trying again", error)
                time.sleep(pause)   # a busy master: give it a moment
                pause *= 2
        self._proxy._pyroSerializer = "marshal"
        self._proxy._pyroMethods = set(CALLS)
        carry_buffers(self._proxy._pyroConnection)

    def _open(self, timeout: float) -> Pyro5.client.Proxy:
        where = self.address
        try:
            sock = socket.create_connection((self.host, self.port), timeout=timeout)
        except OSError as error:
            failure = MasterNotFoundError(f"cannot connect to {where}: {error.strerror or error}")
            failure.refused = isinstance(error, ConnectionRefusedError)   # nobody listens there now
            raise failure from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls_context is not None:
                try:
                    sock = self.tls_context.wrap_socket(sock)
                except ssl.SSLCertVerificationError as error:
                    raise AuthenticationError(f"the master at {where} presented a TLS certificate that "
                                              f"SCIENTIFIC_MS_TLS_CA does not vouch for: "
                                              f"{error.verify_message}") from None
                except (OSError, ssl.SSLError) as error:
                    raise MasterNotFoundError(f"TLS handshake with {where} failed ({error}); "
                                              f"does the master use TLS?") from None
            auth.client_handshake(sock, self.secret, self.label, where, timeout)
            sock.settimeout(None)
            try:
                return Pyro5.client.Proxy(object_name(self.label), connected_socket=sock)
            except Pyro5.errors.CommunicationError as error:
                raise ConnectionDroppedError(f"{where} closed the connection right after "
                                             f"authentication (it ended, or died): {error}") from None
        except BaseException:
            sock.close()
            raise

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def duplicate(self) -> MasterConnection:
        """A second connection to the same master (each thread needs its own)."""
        return MasterConnection(self.host, self.port, self.secret, self.label, tls_context=self.tls_context)

    def claim(self) -> None:
        """Let the calling thread use this connection from now on."""
        self._proxy._pyroClaimOwnership()

    def call(self, method: str, *args, timeout: Optional[float] = None):
        """Call a TaskManagerService method; a broken connection raises ConnectionLostError."""
        if getattr(self._proxy, "_pyroConnection", None) is None:
            # Released by an earlier failure (or closed): lost for good. Pyro5 would try to
            # connect again, to the address of a proxy made from a connected socket: none.
            raise ConnectionLostError(f"the connection to the master at {self.address} was closed")
        self._proxy._pyroTimeout = timeout
        packed = method in PACKED_CALLS
        if packed:
            args = (pack(args),)
        try:
            reply = getattr(self._proxy, method)(*args)
            return unpack(reply) if packed else reply
        except Pyro5.errors.TimeoutError:
            raise ConnectionLostError(f"the master at {self.address} did not answer within {timeout:g} s") from None
        except Pyro5.errors.ConnectionClosedError:
            raise ConnectionLostError(f"the master at {self.address} closed the connection "
                                      f"(it ended, or died)") from None
        except (Pyro5.errors.CommunicationError, OSError) as error:
            raise ConnectionLostError(f"lost the connection to the master at {self.address}: {error}") from None

    def exchange(self, process_id: int, answers: List[Answer], max_tasks: int,
                 wait: float, queue_seconds: Optional[float] = None,
                 output: Optional[Tuple[List[str], int]] = None) -> Tuple[str, List[TaskMessage], list]:
        """The ``exchange`` call: answers in, tasks out, their large buffers beside the messages.

        ``queue_seconds``: the work this slave wants queued behind the task it runs
        (``core/flow.py``; None: the master's fixed target). ``output``: (lines,
        dropped) that the slave's handlers wrote (``slave/output.py``). Returns
        (status, tasks, revoked assignments).
        """
        records, buffers = answers_to_wire(answers)
        connection = self._proxy._pyroConnection
        if connection is None:   # released by an earlier failure
            raise ConnectionLostError(f"the connection to the master at {self.address} was closed")
        arguments: tuple = (process_id, records, max_tasks, wait)
        if output is not None:
            arguments += (queue_seconds, output)
        elif queue_seconds is not None:
            arguments += (queue_seconds,)
        connection.trailer = buffers   # sent right after the request
        try:
            status, records, revoked = self.call("exchange", *arguments)
        finally:
            connection.trailer = ()    # not sent if the call failed before sending
        try:
            tasks = tasks_from_wire(records, connection.sock)
        except Pyro5.errors.CommunicationError as error:
            self.close()   # the rest of a buffer may still come: this socket is done
            raise ConnectionLostError(f"lost the connection to the master at {self.address}: {error}") from None
        return status, tasks, revoked

    def exchange_batch(self, parts: List[tuple], wait: float) -> List[Tuple[str, List[TaskMessage], list]]:
        """The ``exchange`` call of a keeper's relay, for several workers at once (``slave/relay.py``).

        ``parts``: (process_id, answers, max_tasks, queue_seconds, output), one per worker, as
        :meth:`exchange` takes them. ``wait`` > 0: the master waits until one of them gets a
        task. Returns (status, tasks, revoked assignments) for each part, in order.
        """
        connection = self._proxy._pyroConnection
        if connection is None:   # released by an earlier failure
            raise ConnectionLostError(f"the connection to the master at {self.address} was closed")
        buffers: list = []
        wire_parts = []
        for process_id, answers, max_tasks, queue_seconds, output in parts:
            records, more = answers_to_wire(answers)
            buffers.extend(more)   # in part order, as the master reads them
            wire_parts.append((process_id, records, max_tasks, queue_seconds, output))
        connection.trailer = buffers
        try:
            replies = self.call("exchange", wire_parts, wait)
        finally:
            connection.trailer = ()
        try:
            return [(status, tasks_from_wire(records, connection.sock), revoked)
                    for status, records, revoked in replies]
        except Pyro5.errors.CommunicationError as error:
            self.close()
            raise ConnectionLostError(f"lost the connection to the master at {self.address}: {error}") from None

    def status(self, timeout: float, wait: float = 0.0, failures: bool = False) -> dict:
        """The master's status; ``wait`` > 0: answered when the job ends, or after ``wait`` s;
        ``failures``: with the last failed tasks and their tracebacks (``core/failures.py``)."""
        if failures:
            return self.call("status", wait, True, timeout=timeout + max(wait, 0.0))
        if wait > 0:
            return self.call("status", wait, timeout=timeout + wait)
        return self.call("status", timeout=timeout)

    def disown(self) -> None:
        """In a process forked from the one that opened this connection: never shut the socket
        down (a shutdown acts on the socket both processes share; a close only on our copy)."""
        connection = getattr(self._proxy, "_pyroConnection", None)   # None once closed
        if connection is not None:
            connection.keep_open = True

    def close_copy(self) -> None:
        """In a process forked from the one that opened this connection: close our copy of
        the socket only (the other process goes on using it)."""
        self.disown()
        connection = getattr(self._proxy, "_pyroConnection", None)
        if connection is not None:
            with contextlib.suppress(OSError):
                connection.sock.close()

    def close(self) -> None:
        try:
            self._proxy._pyroRelease()
        except Exception:
            pass


def _listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2.0).close()
        return True
    except OSError:
        return False


#: A connection the command line opened and handed on to the slave code it runs (its
#: label, and the key file and master address it was found with): see :func:`hand_over`.
_handed_over: Optional[Tuple[MasterConnection, str, Optional[str], Optional[str]]] = None


def hand_over(connection: MasterConnection, master_host: Optional[str], key_file: Optional[str]) -> None:
    """Keep ``connection`` for the next :func:`connect` to its master in this process.

    ``task_manager slave`` connects to fetch the stored slave code, then runs
    it; the slave in it connects to the same master at once. Handing the
    connection on spares the master a second connection and handshake per
    slave started (the start-up of every spawned slave).
    """
    global _handed_over
    _handed_over = (connection, connection.label, master_host, key_file)


def forget_handed_over() -> None:
    """In a process forked while a connection was handed over: let go of it (see
    :meth:`MasterConnection.disown`), so that only the process that made it uses it."""
    global _handed_over
    if _handed_over is not None:
        _handed_over[0].close_copy()
        _handed_over = None


def _take_handed_over(label: str, master_host: Optional[str], key_file: Optional[str]) -> Optional[MasterConnection]:
    global _handed_over
    if _handed_over is None:
        return None
    connection, handed_label, handed_host, handed_key = _handed_over
    _handed_over = None
    if (label, key_file) == (handed_label, handed_key) and master_host in (None, handed_host):
        connection.claim()   # whichever thread of the slave code asks first uses it from now on
        return connection
    connection.close()   # a slave of another master, or found otherwise: connect as usual
    return None


def connect(label: str, master_host: Optional[str] = None, *, key_file: Optional[str] = None,
            wait: bool = False, wait_timeout: Optional[float] = None) -> MasterConnection:
    """Find the master of ``label`` and connect to it.

    With ``wait``, keep looking until the master appears (or ``wait_timeout``
    seconds pass). A wrong secret fails at once: waiting would not fix it.
    The connection the command line handed over (:func:`hand_over`) is taken first.
    """
    handed = _take_handed_over(label, master_host, key_file)
    if handed is not None:
        return handed
    deadline = None if wait_timeout is None else time.monotonic() + wait_timeout
    delay = 0.1
    tls_context = tls.client_context()
    next_note = time.monotonic()   # a wait that may last forever says why, now and then
    while True:
        tried: List[str] = []
        candidates, notes = discovery.candidates(label, master_host, key_file)
        for candidate in candidates:
            if candidate.secret is None:
                # Only an address where something listens is "found"; a dead one is a miss.
                if not any(_listening(host, candidate.port) for host in candidate.hosts):
                    tried.append(f"{candidate.source}: nothing listens at "
                                 f"{'/'.join(candidate.hosts)}:{candidate.port}")
                    continue
                raise ConfigurationError(
                    f"found the master of {label!r} through {candidate.source} but no secret: set "
                    f"SCIENTIFIC_MS_SECRET or SCIENTIFIC_MS_KEY_FILE (or --key-file) to the master's secret")
            if candidate.tls and tls_context is None:
                raise ConfigurationError(
                    f"the master of {label!r} ({candidate.source}) uses TLS: set SCIENTIFIC_MS_TLS_CA to "
                    f"its certificate (or the CA that signed it)")
            for host in candidate.hosts:
                try:
                    connection = MasterConnection(host, candidate.port, candidate.secret, label,
                                                  tls_context=tls_context)
                    log.debug("connected to %s via %s", connection.address, candidate.source)
                    return connection
                except AuthenticationError:
                    raise
                except MasterNotFoundError as error:
                    tried.append(f"{candidate.source}: {error}")
        looked = "\n".join(f"  - {place}" for place in tried + notes)   # the short news first
        if not wait or (deadline is not None and time.monotonic() >= deadline):
            hint = "start the master first, pass the master's HOST:PORT,\n  or wait for it (-w / wait=True)"
            raise MasterNotFoundError(f"no master found for label {label!r}\n  {hint}\n  looked at:\n{looked}")
        if time.monotonic() >= next_note:
            log.warning("waiting for a master of %r to start (asked to wait); looked at:\n%s", label, looked)
            next_note = time.monotonic() + WAIT_NOTE_SECONDS
        time.sleep(delay)  # polling for a master that does not exist yet
        delay = min(1.0, delay * 2)
