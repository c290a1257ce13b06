"""Optional TLS: every connection encrypted and the master's certificate checked."""

import os
import shutil
import socket
import subprocess
import threading

import pytest

from conftest import wait_for
from scientific_ms import AuthenticationError, ConfigurationError, MasterNotFoundError, MasterProcess
from scientific_ms.wire.client import MasterConnection
from scientific_ms.wire.tls import client_context

SLAVE_SCRIPT = os.path.join(os.path.dirname(__file__), "slave_script.py")
pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make test certificates")


def make_certificate(folder, name):
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return str(cert), str(key)


@pytest.fixture
def tls_master(tmp_path):
    cert, key = make_certificate(tmp_path, "master")
    master = MasterProcess("tls", use_name_server=False, port=0, tls_cert=cert, tls_key=key)
    yield master, cert
    master.shutdown()


def test_a_job_runs_over_tls_and_its_data_are_not_in_clear(tls_master, processes, monkeypatch):
    master, cert = tls_master
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    captured = bytearray()

    def pump(source, target):
        try:
            while data := source.recv(65536):
                captured.extend(data)
                target.sendall(data)
        except OSError:
            pass

    def relay():
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", master.port))
            threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
            threading.Thread(target=pump, args=(client, upstream), daemon=True).start()

    threading.Thread(target=relay, daemon=True).start()
    env = {"SCIENTIFIC_MS_TLS_CA": cert, "SCIENTIFIC_MS_MASTER": f"127.0.0.1:{listener.getsockname()[1]}"}
    slave = processes.python(SLAVE_SCRIPT, "tls", env=env)
    ids = [master.requestTask("work", 0.0, f"plaintext-marker-{i}") for i in range(5)]
    results = sorted(master.retrieveResult(timeout=60)[2][0] for _ in ids)
    assert results == sorted(f"plaintext-marker-{i}" for i in range(5))
    wait_for(lambda: len(captured) > 1000, 10, "traffic through the relay")
    assert b"plaintext-marker" not in captured and b"SCIENTIFIC_MS/1" not in captured
    master.shutdown()
    assert processes.finish(slave, 15)[0] == 0
    listener.close()


def test_a_plain_client_cannot_talk_to_a_tls_master(tls_master):
    master, cert = tls_master
    with pytest.raises(MasterNotFoundError, match="SCIENTIFIC_MS_TLS_CA"):
        MasterConnection("127.0.0.1", master.port, master.secret, "tls", timeout=1.0)


def test_a_certificate_from_elsewhere_is_refused(tls_master, tmp_path):
    master, cert = tls_master
    other, _ = make_certificate(tmp_path, "impostor")
    with pytest.raises(AuthenticationError, match="does not vouch for"):
        MasterConnection("127.0.0.1", master.port, master.secret, "tls", tls_context=client_context(other))


def test_the_label_file_says_tls_is_needed(tls_master):
    from scientific_ms.wire.client import connect
    with pytest.raises(ConfigurationError, match="uses TLS: set SCIENTIFIC_MS_TLS_CA"):
        connect("tls")


def test_spawned_slaves_get_the_certificate(tls_master, tmp_path):
    master, cert = tls_master
    master.store_slave_code(open(SLAVE_SCRIPT).read().replace("sys.argv[1]", "'tls'"), SLAVE_SCRIPT)
    master.launchSlaveJobs(1)
    master.requestTask("pid")
    assert master.retrieveResult(timeout=60)[1] == "pid"


def test_half_a_tls_configuration_is_refused(tmp_path):
    cert, _ = make_certificate(tmp_path, "lonely")
    with pytest.raises(ConfigurationError, match="both a certificate and its key"):
        MasterProcess("halftls", use_name_server=False, port=0, tls_cert=cert)


def test_large_buffers_travel_over_tls(tls_master, processes):
    """Out-of-band buffers follow their message through the TLS socket too (no gather write there)."""
    master, cert = tls_master
    env = {"SCIENTIFIC_MS_TLS_CA": cert, "SCIENTIFIC_MS_MASTER": f"127.0.0.1:{master.port}"}
    processes.python(os.path.join(os.path.dirname(__file__), "large_data_slave.py"), "tls", env=env)
    values = (os.urandom(1 << 20), bytearray(os.urandom(1 << 20)), memoryview(os.urandom(1 << 18)))
    for _ in range(3):
        master.requestTask("echo", *values)
    for _ in range(3):
        back = master.retrieveResult(timeout=60)[2]
        assert back[:2] == values[:2] and type(back[1]) is bytearray
        assert back[2].tobytes() == values[2].tobytes() and back[2].readonly
