"""Large buffers beside Pyro5's messages: sent as they are, right after the message that names them.

Pyro5 copies what it sends twice before the kernel sees it (marshal, then
the header joined to the data) and once more after receiving (marshal); a
task's out-of-band buffers (``payload.Pickled``) skip all three. In an
``exchange`` call the message carries, for each payload with buffers,
``(head, [(size, writable), ...])`` in place of the payload bytes, and
the buffers follow the message on the same socket, in order, with no
framing of their own::

    slave  --> [Pyro5 request: exchange(answers ...)][answer buffers ...]  --> master
    slave  <-- [Pyro5 reply: (status, tasks, revoked)][task buffers ...]   <-- master

The sender writes the message and its buffers with one ``sendmsg`` (a
gather write: the kernel copies each buffer once, from where it lies);
the receiver reads each buffer straight into the object the unpickler
returns: a ``bytes`` for a read-only buffer, a ``bytearray`` for a
writable one. A payload without buffers travels as plain bytes inside
the message, as before.
"""

from __future__ import annotations

import socket
import ssl
from typing import List, Sequence, Union

from Pyro5 import errors as pyro_errors
from Pyro5.socketutil import SocketConnection

from .limits import value_limit
from .payload import Payload, Pickled

#: At most this many buffers in one sendmsg (Linux's IOV_MAX is 1024).
_IOV_MAX = 1024


class BufferConnection(SocketConnection):
    """A Pyro5 connection that sends ``trailer`` (a list of buffers) right after its next message.

    Both ends of a master's connections are made of this class (see
    :func:`carry_buffers`); Pyro5 writes every message through ``send``.
    """

    trailer: Sequence[Union[bytes, bytearray, memoryview]] = ()

    def send(self, data: bytes) -> None:
        trailer = self.trailer
        if not trailer:
            return super().send(data)
        self.trailer = ()
        send_buffers(self.sock, [data, *trailer])


def carry_buffers(connection: SocketConnection) -> None:
    """Let a Pyro5 connection send trailers (it has no state of its own to convert)."""
    connection.__class__ = BufferConnection


# ---------------------------------------------------------------- payloads in messages

def payload_to_wire(payload: Payload, buffers: list):
    """What a message carries for ``payload``; its buffers are appended to ``buffers``."""
    if type(payload) is not Pickled:
        return payload
    buffers.extend(payload.buffers)
    return payload.head, [(len(buffer), type(buffer) is bytearray) for buffer in payload.buffers]


def payload_from_wire(value, sock: socket.socket) -> Payload:
    """The payload a message carried, its buffers read from ``sock`` (call in message order)."""
    if type(value) is not tuple:
        return value
    head, sizes = value
    return Pickled(head, [receive_buffer(sock, size, writable) for size, writable in sizes])


# ---------------------------------------------------------------- the socket

def send_buffers(sock: socket.socket, buffers: List[Union[bytes, bytearray, memoryview]]) -> None:
    """Send ``buffers`` in order, each copied once by the kernel; raises Pyro5's errors."""
    try:
        if isinstance(sock, ssl.SSLSocket):   # TLS encrypts each buffer anyway: no gather write
            for buffer in buffers:
                sock.sendall(buffer)
            return
        views = [memoryview(buffer) for buffer in buffers]
        while views:
            sent = sock.sendmsg(views[:_IOV_MAX])
            while sent:                        # drop what went out; keep the rest of a partial one
                if sent >= views[0].nbytes:
                    sent -= views.pop(0).nbytes
                else:
                    views[0], sent = views[0][sent:], 0
            while views and not views[0].nbytes:
                views.pop(0)
    except socket.timeout:
        raise pyro_errors.TimeoutError("sending: timeout") from None
    except OSError as error:
        raise pyro_errors.ConnectionClosedError(f"sending: connection lost: {error}") from None


def receive_buffer(sock: socket.socket, size: int, writable: bool) -> Union[bytes, bytearray]:
    """Read one buffer of ``size`` bytes, copied once by the kernel: a bytearray if ``writable``,
    else bytes; raises Pyro5's errors."""
    if not (isinstance(size, int) and 0 <= size <= value_limit()):
        raise pyro_errors.ProtocolError(f"invalid buffer size {size!r}")
    try:
        if not writable and not isinstance(sock, ssl.SSLSocket):
            data = sock.recv(size, socket.MSG_WAITALL)   # into a fresh bytes: no copy after
            if len(data) == size:
                return data
            buffer = bytearray(size)                       # interrupted: finish the slow way
            buffer[:len(data)] = data
            _fill(sock, memoryview(buffer)[len(data):])
            return bytes(buffer)
        buffer = bytearray(size)
        _fill(sock, memoryview(buffer))
        return buffer if writable else bytes(buffer)
    except socket.timeout:
        raise pyro_errors.TimeoutError("receiving: timeout") from None
    except OSError as error:
        raise pyro_errors.ConnectionClosedError(f"receiving: connection lost: {error}") from None


def _fill(sock: socket.socket, view: memoryview) -> None:
    while view.nbytes:
        count = sock.recv_into(view)
        if not count:
            raise pyro_errors.ConnectionClosedError("receiving: connection closed in a buffer")
        view = view[count:]
