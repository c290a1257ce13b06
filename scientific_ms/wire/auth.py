"""Mutual challenge-response authentication on a fresh TCP connection.

Runs on the raw socket before any Pyro5 message, so a peer that does not
know the secret never gets a single message parsed, let alone unpickled.
The secret itself never crosses the wire: each side proves it knows it with
an HMAC over both sides' fresh nonces, so a recorded exchange cannot be
replayed.

    master -> slave   MAGIC | server nonce (32) | len (2) | label
    slave  -> master  client nonce (32) | HMAC(secret, "client" | sn | cn)
    master -> slave   ACCEPTED | HMAC(secret, "server" | sn | cn)
                      or REJECTED, then close

The verdict byte lets a slave tell a wrong secret (final) from a connection
that a busy master dropped before it had checked the proof (worth a retry).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import socket
import time
from typing import Callable, NamedTuple, Optional

from ..errors import AuthenticationError, ConnectionDroppedError, MasterNotFoundError

PROTOCOL = b"SCIENTIFIC_MS/"
VERSION = "6"   # one character: the greeting's header has a fixed length
MAGIC = PROTOCOL + VERSION.encode() + b"\n"
ACCEPTED = b"\x01"
REJECTED = b"\x00"
NONCE_SIZE = 32
MAC_SIZE = 32
#: Seconds a new connection has, in all, to prove it knows the secret; it
#: holds one of the master's threads meanwhile.
HANDSHAKE_SECONDS = 10.0


def new_secret() -> bytes:
    """A fresh random secret (64 hex digits)."""
    return secrets.token_hex(32).encode()


def _mac(secret: bytes, role: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    return hmac.new(secret, role + server_nonce + client_nonce, hashlib.sha256).digest()


def _recv_exact(sock: socket.socket, size: int, deadline: Optional[float] = None) -> bytes:
    """``size`` bytes; with a ``deadline`` (time.monotonic()), all of them by then."""
    data = bytearray()
    while len(data) < size:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout("authentication took too long")
            sock.settimeout(remaining)
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed during authentication")
        data += chunk
    return bytes(data)


def server_handshake(sock: socket.socket, secret: bytes, label: str,
                     timeout: Optional[float] = None,
                     on_proved: Optional[Callable[[], None]] = None) -> bool:
    """Authenticate a client that just connected; False means: close it.

    ``timeout`` (default ``HANDSHAKE_SECONDS``) bounds the whole handshake,
    not each read: a peer trickling a byte at a time cannot stretch it.
    ``on_proved`` is called once the client's proof holds, before the
    master answers with its own.
    """
    timeout = HANDSHAKE_SECONDS if timeout is None else timeout
    deadline = time.monotonic() + timeout
    previous = sock.gettimeout()
    sock.settimeout(timeout)
    try:
        server_nonce = os.urandom(NONCE_SIZE)
        name = label.encode()
        sock.sendall(MAGIC + server_nonce + len(name).to_bytes(2, "big") + name)
        reply = _recv_exact(sock, NONCE_SIZE + MAC_SIZE, deadline)
        client_nonce, proof = reply[:NONCE_SIZE], reply[NONCE_SIZE:]
        if not hmac.compare_digest(proof, _mac(secret, b"client", server_nonce, client_nonce)):
            sock.sendall(REJECTED)
            return False
        if on_proved is not None:
            on_proved()
        sock.sendall(ACCEPTED + _mac(secret, b"server", server_nonce, client_nonce))
        return True
    except (OSError, ConnectionError):
        return False
    finally:
        try:
            sock.settimeout(previous)
        except OSError:
            pass


class Greeting(NamedTuple):
    """What a master says first on every connection."""
    version: str   # its protocol version
    nonce: bytes
    label: str     # the label it serves


def read_greeting(sock: socket.socket) -> Optional[Greeting]:
    """The master's greeting, or None if it is not a scientific_ms master of any version."""
    header = _recv_exact(sock, len(MAGIC) + NONCE_SIZE + 2)
    if not header.startswith(PROTOCOL) or header[len(MAGIC) - 1:len(MAGIC)] != b"\n":
        return None
    version = header[len(PROTOCOL):len(MAGIC) - 1].decode(errors="replace")
    served = _recv_exact(sock, int.from_bytes(header[-2:], "big")).decode(errors="replace")
    return Greeting(version, header[len(MAGIC):len(MAGIC) + NONCE_SIZE], served)


def client_handshake(sock: socket.socket, secret: bytes, label: str, where: str,
                     timeout: float = 10.0) -> None:
    """Prove the secret to the master at ``where`` and check its proof.

    Raises MasterNotFoundError if the peer is not a master for ``label``,
    AuthenticationError if the secrets differ.
    """
    sock.settimeout(timeout)
    try:
        greeting = read_greeting(sock)
        if greeting is None:
            raise MasterNotFoundError(f"{where} is not a scientific_ms master (wrong greeting)")
        version, server_nonce, served = greeting
        if version != VERSION:
            raise MasterNotFoundError(
                f"the master at {where} speaks version {version} of the scientific_ms protocol, this "
                f"process version {VERSION}: install the same scientific_ms release on the master and its slaves")
        if served != label:
            raise MasterNotFoundError(
                f"the master at {where} serves label {served!r}, not {label!r}")
        client_nonce = os.urandom(NONCE_SIZE)
        sock.sendall(client_nonce + _mac(secret, b"client", server_nonce, client_nonce))
        verdict = _recv_exact(sock, len(ACCEPTED))
        if verdict != ACCEPTED:
            raise AuthenticationError(
                f"the master at {where} rejected our secret: the secret this process uses "
                f"(SCIENTIFIC_MS_SECRET, a key file, or the label file) is not the master's")
        proof = _recv_exact(sock, MAC_SIZE)
        if not hmac.compare_digest(proof, _mac(secret, b"server", server_nonce, client_nonce)):
            raise AuthenticationError(f"the master at {where} failed to prove it knows the secret")
    except socket.timeout:
        raise MasterNotFoundError(f"{where} did not answer the authentication within {timeout:g} s "
                                  f"(if the master uses TLS, set SCIENTIFIC_MS_TLS_CA)") from None
    except ConnectionError as error:   # before the verdict: worth another try
        raise ConnectionDroppedError(f"{where} closed the connection during authentication: {error}") from None
