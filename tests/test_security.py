"""Nobody without the secret gets in; the secret never crosses the wire."""

import os
import pickle
import socket
import stat
import threading

import pytest

from conftest import pump, wait_for
from scientific_ms import AuthenticationError, MasterNotFoundError, MasterProcess
from scientific_ms.wire import auth, discovery
from scientific_ms.wire.client import MasterConnection


@pytest.fixture
def master():
    master = MasterProcess("secure", use_name_server=False, port=0, secret=b"correct horse")
    yield master
    master.shutdown()


def test_wrong_secret_is_refused_with_a_clear_error(master):
    with pytest.raises(AuthenticationError, match="rejected our secret"):
        MasterConnection("127.0.0.1", master.port, b"wrong", "secure")


def test_right_secret_gets_in(master):
    connection = MasterConnection("127.0.0.1", master.port, b"correct horse", "secure")
    assert connection.call("status")["processes"][0]["role"] == "master"
    connection.close()


def test_a_connection_dropped_before_the_verdict_is_tried_again(master):
    """A busy master may close a connection still authenticating; that is not a wrong secret."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted = []

    def relay():
        # First connection: the master's greeting goes through, the slave's proof
        # is read and the connection closed, as a master dropping it would.
        client, _ = listener.accept()
        accepted.append(client)
        with socket.create_connection(("127.0.0.1", master.port)) as upstream:
            client.sendall(upstream.recv(len(auth.MAGIC) + auth.NONCE_SIZE + 2 + len("secure")))
            client.recv(4096)   # the slave's proof, never passed on
        client.close()
        # Second connection: relayed whole.
        client, _ = listener.accept()
        accepted.append(client)
        upstream = socket.create_connection(("127.0.0.1", master.port))
        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
        pump(client, upstream)

    thread = threading.Thread(target=relay, daemon=True)
    thread.start()
    connection = MasterConnection("127.0.0.1", listener.getsockname()[1], b"correct horse", "secure")
    assert connection.call("status")["processes"][0]["role"] == "master"
    connection.close()
    thread.join(10)
    listener.close()
    assert len(accepted) == 2


def test_a_master_of_another_version_is_named_as_such():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def old_master():
        client, _ = listener.accept()
        client.sendall(auth.PROTOCOL + b"1\n" + os.urandom(auth.NONCE_SIZE) + b"\x00\x06secure")
        client.close()

    thread = threading.Thread(target=old_master, daemon=True)
    thread.start()
    with pytest.raises(MasterNotFoundError,
                       match=f"version 1 of the scientific_ms protocol, this process version {auth.VERSION}"):
        MasterConnection("127.0.0.1", listener.getsockname()[1], b"correct horse", "secure")
    thread.join(10)
    listener.close()


class Evil:
    def __reduce__(self):
        return (open, ("/tmp/scientific_ms_pwned", "w"))


@pytest.mark.parametrize("garbage", [
    b"", b"\x00" * 100, b"GET / HTTP/1.0\r\n\r\n", os.urandom(5000),
    b"PYRO" + os.urandom(36),                       # looks like a Pyro5 frame header
    pickle.dumps(Evil()),                           # would create a file if unpickled
    b"x" * (auth.NONCE_SIZE + auth.MAC_SIZE),       # a well-sized but wrong proof
])
def test_garbage_drops_only_that_connection(master, garbage):
    greeting_size = len(auth.MAGIC) + auth.NONCE_SIZE + 2 + len("secure")
    with socket.create_connection(("127.0.0.1", master.port), timeout=5) as sock:
        greeting = b""
        while len(greeting) < greeting_size:
            greeting += sock.recv(greeting_size - len(greeting))
        assert greeting.startswith(auth.MAGIC)
        after = b""
        try:
            sock.sendall(garbage)
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(4096):         # the master closes the connection ...
                after += chunk
        except OSError:                              # ... or resets it, with garbage unread
            pass
    assert after in (b"", auth.REJECTED)             # it said at most "no" after its greeting
    assert not os.path.exists("/tmp/scientific_ms_pwned")
    test_right_secret_gets_in(master)


def test_a_plain_pyro5_client_can_call_nothing(master):
    import Pyro5.api
    import Pyro5.errors
    proxy = Pyro5.api.Proxy(f"PYRO:TaskManager.secure@127.0.0.1:{master.port}")
    proxy._pyroTimeout = 5
    with pytest.raises(Pyro5.errors.PyroError):
        proxy.status()


def test_a_replayed_authentication_is_refused(master):
    secret = b"correct horse"
    # Record a genuine exchange ...
    with socket.create_connection(("127.0.0.1", master.port)) as sock:
        greeting = sock.recv(4096)
        server_nonce = greeting[len(auth.MAGIC):len(auth.MAGIC) + auth.NONCE_SIZE]
        client_nonce = os.urandom(auth.NONCE_SIZE)
        recorded = client_nonce + auth._mac(secret, b"client", server_nonce, client_nonce)
        sock.sendall(recorded)
        accepted = b""
        while len(accepted) < len(auth.ACCEPTED) + auth.MAC_SIZE:
            accepted += sock.recv(4096)
        assert accepted.startswith(auth.ACCEPTED)
    # ... and replay it on a new connection: the master's nonce differs, so it fails.
    with socket.create_connection(("127.0.0.1", master.port), timeout=5) as sock:
        sock.recv(4096)
        sock.sendall(recorded)
        assert sock.recv(4096) == auth.REJECTED


def test_the_secret_never_crosses_the_wire(master):
    """Relay a real connection through a socket pair we read, and look for the secret."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    captured = bytearray()

    def relay():
        client, _ = listener.accept()
        upstream = socket.create_connection(("127.0.0.1", master.port))
        threading.Thread(target=pump, args=(upstream, client, captured), daemon=True).start()
        pump(client, upstream, captured)

    threading.Thread(target=relay, daemon=True).start()
    connection = MasterConnection("127.0.0.1", listener.getsockname()[1], b"correct horse", "secure")
    master.requestTask("f", 1)
    assert connection.call("register", "slave", {}, ["f"], None)[0] == "ok"
    connection.close()
    wait_for(lambda: len(captured) > 200, 10, "traffic")
    assert b"correct horse" not in captured
    assert b"correct horse".hex().encode() not in captured


def test_label_file_is_private(master):
    path = discovery.label_file("secure")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
