"""The link between a keeper's relay and one of its workers: a socket pair that carries
pickled messages, the large buffers of their payloads beside them.

A relayed worker's answers, and the tasks the keeper brings it, hold their
payloads' large buffers (``wire/payload.py``'s ``Pickled``). Pickled into one
string with ``multiprocessing.connection``, a 1 MB buffer was copied several
times on its way across the link (into the pickle, in the rest of each
partial write, into the reading buffer, out of the pickle): about half of
what a relaying keeper lost with 1 MB tasks (``docs/reliability.md``; the
other half, the keeper's own crossings, ``relayed.py`` avoids). Here each buffer stays
out of the pickle (protocol 5's out-of-band buffers) and crosses the socket
as it lies: one gather write on one side, one read into the object the
unpickler returns on the other, as on the master's connections
(``wire/buffers.py``).

The framing is ``multiprocessing.connection``'s (a 4-byte big-endian length,
then the pickle), so a message without buffers is exactly what a
``Connection`` sends and reads. A message with buffers is three things in a row::

    [frame: (BUFFERS, [(size, writable), ...])][frame: the pickle][buffer][buffer]...

A buffer arrives as ``bytes`` if it was read-only, as a ``bytearray`` if it
was writable (as ``wire/buffers.py`` hands them over).
"""

from __future__ import annotations

import copyreg
import io
import pickle
import select
import socket
import struct
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from Pyro5 import errors as pyro_errors

from ..wire.buffers import receive_buffer, send_buffers
from ..wire.payload import Pickled

#: The first element of the frame that announces a message's buffers.
BUFFERS = "scientific_ms.relay_link.buffers"

#: Asked of each end's send and receive buffers: a large buffer then crosses in one write
#: rather than one per 200 kB the reader drained (the kernel caps it: net.core.wmem_max).
SOCKET_BUFFER = 4 << 20

_LENGTH = struct.Struct("!i")
_LONG_LENGTH = struct.Struct("!Q")


def _out_of_band(payload: Pickled):
    """Pickle a payload's buffers out of band (``pickle.PickleBuffer``); the journal's
    pickles keep them in band (``Pickled.__reduce__``)."""
    return Pickled, (payload.head, [pickle.PickleBuffer(buffer) for buffer in payload.buffers])


class _Pickler(pickle.Pickler):
    dispatch_table: Dict[type, Callable] = {**copyreg.dispatch_table, Pickled: _out_of_band}


class LinkClosedError(EOFError):
    """The other end of the link closed (or died) in the middle of a message."""


class Link:
    """One end of a link; ``send`` may be called from several threads, ``recv`` from one at a time."""

    def __init__(self, sock: socket.socket):
        sock.setblocking(True)
        self._sock: Optional[socket.socket] = sock
        self._send_lock = threading.Lock()   # the relay's two sending threads may both reply

    @classmethod
    def pair(cls) -> Tuple[Link, Link]:
        """A new link: its two ends."""
        one, other = socket.socketpair()
        for end in (one, other):
            for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                end.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        return cls(one), cls(other)

    @property
    def closed(self) -> bool:
        return self._sock is None

    def fileno(self) -> int:
        """The socket's descriptor (``multiprocessing.connection.wait`` waits on it)."""
        if self._sock is None:
            raise OSError("the link is closed")
        return self._sock.fileno()

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def poll(self, timeout: float = 0.0) -> bool:
        """Is there something to read (within ``timeout`` s)?"""
        return bool(select.select([self.fileno()], [], [], timeout)[0])

    # ------------------------------------------------------------------ sending

    def send(self, message: object) -> None:
        """Send ``message``; its payloads' buffers go beside the pickle. Raises OSError."""
        buffers: List[pickle.PickleBuffer] = []
        stream = io.BytesIO()
        _Pickler(stream, protocol=5, buffer_callback=buffers.append).dump(message)
        data = stream.getvalue()   # the pickle without the buffers: small
        if buffers:
            views = [buffer.raw() for buffer in buffers]
            announce = pickle.dumps((BUFFERS, [(view.nbytes, not view.readonly) for view in views]),
                                    protocol=pickle.HIGHEST_PROTOCOL)
            parts: list = [_length_of(announce), announce, _length_of(data), data, *views]
        else:
            parts = [_length_of(data), data]
        sock = self._sock
        if sock is None:
            raise OSError("the link is closed")
        try:
            with self._send_lock:
                send_buffers(sock, parts)
        except pyro_errors.CommunicationError as error:
            raise OSError(str(error)) from None

    # ------------------------------------------------------------------ receiving

    def recv(self) -> Any:
        """The next message; EOFError when the other end closed, OSError when the link broke."""
        sock = self._sock
        if sock is None:
            raise OSError("the link is closed")
        try:
            message = pickle.loads(self._frame(sock, first=True))
            if type(message) is tuple and len(message) == 2 and message[0] == BUFFERS:
                data = self._frame(sock)
                received = [receive_buffer(sock, size, writable) for size, writable in message[1]]
                message = pickle.loads(data, buffers=received)
        except pyro_errors.CommunicationError as error:
            raise LinkClosedError(f"the link broke in the middle of a message: {error}") from None
        return message

    @staticmethod
    def _frame(sock: socket.socket, first: bool = False) -> Union[bytes, bytearray]:
        head = receive_buffer(sock, _LENGTH.size, False) if not first else _read_head(sock)
        (size,) = _LENGTH.unpack(head)
        if size == -1:
            (size,) = _LONG_LENGTH.unpack(receive_buffer(sock, _LONG_LENGTH.size, False))
        return receive_buffer(sock, size, False)


def _read_head(sock: socket.socket) -> bytes:
    """The first bytes of a message: EOFError if the other end closed between messages."""
    head = sock.recv(_LENGTH.size, socket.MSG_WAITALL)
    if not head:
        raise EOFError("the other end of the link closed")
    if len(head) < _LENGTH.size:
        raise LinkClosedError("the link broke in the middle of a message")
    return head


def _length_of(data: bytes) -> bytes:
    """The length that comes before ``data`` (``multiprocessing.connection``'s framing)."""
    size = len(data)
    if size > 0x7FFFFFFF:
        return _LENGTH.pack(-1) + _LONG_LENGTH.pack(size)
    return _LENGTH.pack(size)
