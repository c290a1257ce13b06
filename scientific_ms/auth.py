"""Mutual challenge-response authentication on a fresh TCP connection.

Runs on the raw socket before any Pyro5 message, so a peer that does not
know the secret never gets a single message parsed, let alone unpickled.
The secret itself never crosses the wire: each side proves it knows it with
an HMAC over both sides' fresh nonces, so a recorded exchange cannot be
replayed.

    master -> slave   MAGIC | server nonce (32) | len (2) | label
    slave  -> master  client nonce (32) | HMAC(secret, "client" | sn | cn)
    master -> slave   HMAC(secret, "server" | sn | cn)      (or close)
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import socket

from .errors import AuthenticationError, MasterNotFoundError

MAGIC = b"SCIENTIFIC_MS/1\n"
NONCE_SIZE = 32
MAC_SIZE = 32


def new_secret() -> bytes:
    """A fresh random secret (64 hex digits)."""
    return secrets.token_hex(32).encode()


def _mac(secret: bytes, role: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    return hmac.new(secret, role + server_nonce + client_nonce, hashlib.sha256).digest()


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed during authentication")
        data += chunk
    return bytes(data)


def server_handshake(sock: socket.socket, secret: bytes, label: str, timeout: float = 10.0) -> bool:
    """Authenticate a client that just connected; False means: close it."""
    previous = sock.gettimeout()
    sock.settimeout(timeout)
    try:
        server_nonce = os.urandom(NONCE_SIZE)
        name = label.encode()
        sock.sendall(MAGIC + server_nonce + len(name).to_bytes(2, "big") + name)
        reply = _recv_exact(sock, NONCE_SIZE + MAC_SIZE)
        client_nonce, proof = reply[:NONCE_SIZE], reply[NONCE_SIZE:]
        if not hmac.compare_digest(proof, _mac(secret, b"client", server_nonce, client_nonce)):
            return False
        sock.sendall(_mac(secret, b"server", server_nonce, client_nonce))
        return True
    except (OSError, ConnectionError):
        return False
    finally:
        try:
            sock.settimeout(previous)
        except OSError:
            pass


def client_handshake(sock: socket.socket, secret: bytes, label: str, where: str,
                     timeout: float = 10.0) -> None:
    """Prove the secret to the master at ``where`` and check its proof.

    Raises MasterNotFoundError if the peer is not a master for ``label``,
    AuthenticationError if the secrets differ.
    """
    sock.settimeout(timeout)
    try:
        header = _recv_exact(sock, len(MAGIC) + NONCE_SIZE + 2)
        if not header.startswith(MAGIC):
            raise MasterNotFoundError(f"{where} is not a scientific_ms master (wrong greeting)")
        server_nonce = header[len(MAGIC):len(MAGIC) + NONCE_SIZE]
        served = _recv_exact(sock, int.from_bytes(header[-2:], "big")).decode(errors="replace")
        if served != label:
            raise MasterNotFoundError(
                f"the master at {where} serves label {served!r}, not {label!r}")
        client_nonce = os.urandom(NONCE_SIZE)
        sock.sendall(client_nonce + _mac(secret, b"client", server_nonce, client_nonce))
        try:
            proof = _recv_exact(sock, MAC_SIZE)
        except ConnectionError:
            raise AuthenticationError(
                f"the master at {where} rejected our secret: the secret this process uses "
                f"(SCIENTIFIC_MS_SECRET, a key file, or the label file) is not the master's") from None
        if not hmac.compare_digest(proof, _mac(secret, b"server", server_nonce, client_nonce)):
            raise AuthenticationError(f"the master at {where} failed to prove it knows the secret")
    except socket.timeout:
        raise MasterNotFoundError(f"{where} did not answer the authentication within {timeout:g} s") from None
    except ConnectionError as error:
        raise MasterNotFoundError(f"{where} closed the connection during authentication: {error}") from None
