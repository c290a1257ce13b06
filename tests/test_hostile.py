"""Hostile input on the master's port while a job runs.

A connection that cannot prove it knows the
secret can call nothing and is never unpickled; garbage on the port drops
that connection only; the master's memory stays bounded.

The master runs in its own process (``MASTER`` below, written to a file by
the test), so that psutil measures the master alone: RSS, threads, open
files, CPU. It keeps a job running on two slave processes the whole time,
and it records the peer port of every message its Pyro5 daemon ever parsed,
so the test can check that none came from a stranger's connection. At the
end it reports every result; each must arrive exactly once.

The attacks: thousands of random, truncated and oversized frames
(hypothesis), frames that look like a Pyro5 header claiming a huge size,
plain Pyro5 proxies calling every exposed method with every serializer,
a replayed recording of a genuine slave's whole conversation, forged and
replayed proofs followed by a Pyro5 call carrying a pickle that would create
a file if it were ever unpickled, and silent or trickling connections that
try to hold the master's threads.
"""

import json
import marshal
import os
import pickle
import socket
import struct
import subprocess
import sys
import threading
import time

import psutil
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import ROOT, pump, wait_for
from scientific_ms.wire import auth

SLAVE_SCRIPT = ROOT / "tests" / "slave_script.py"
LABEL = "hostile"
SECRET = os.urandom(16).hex().encode()
GREETING_SIZE = len(auth.MAGIC) + auth.NONCE_SIZE + 2 + len(LABEL)

#: The master process. argv: handshake timeout (s) or "-", outstanding tasks.
MASTER = r'''
import json, sys, threading
import psutil
import Pyro5.protocol
from scientific_ms import MasterProcess
from scientific_ms.wire import auth

parsed = []                       # peer port of every message the daemon parsed
owners = {}                       # after the mark: peer port -> PID owning that socket when first parsed
marked = [False]
_recv_stub = Pyro5.protocol.recv_stub

def owner(port):
    """Who holds the other end (by PID, looked up as the message is parsed: a port that a
    stranger used may be a slave's later on)."""
    for c in psutil.net_connections(kind="tcp"):
        if c.laddr and c.laddr.port == port and c.raddr and c.raddr.port == master.port:
            return c.pid
    return None

def spy(connection, accepted_msgtypes=None):
    if threading.current_thread().name.startswith("Pyro-Worker"):
        try:
            port = connection.sock.getpeername()[1]
        except OSError:
            port = -1
        parsed.append(port)
        if marked[0] and port not in owners:
            owners[port] = owner(port)
    return _recv_stub(connection, accepted_msgtypes)

Pyro5.protocol.recv_stub = spy
if sys.argv[1] != "-":
    auth.HANDSHAKE_SECONDS = float(sys.argv[1])
outstanding = int(sys.argv[2])
master = MasterProcess("hostile", use_name_server=False, port=0, host="127.0.0.1",
                       secret=sys.argv[3].encode(), missed_heartbeats=4)
print(json.dumps({"port": master.port}), flush=True)

stop = threading.Event()
values, errors = [], []
requested = [0]

def job():
    try:
        for _ in range(outstanding):
            master.requestTask("work", 0.005, requested[0]); requested[0] += 1
        while requested[0] > len(values):
            _, _, (value, pid) = master.retrieveResult("work", timeout=60)
            values.append(value)
            if not stop.is_set():
                master.requestTask("work", 0.005, requested[0]); requested[0] += 1
    except BaseException as error:
        errors.append(repr(error))

worker = threading.Thread(target=job)
worker.start()
mark = 0
for line in sys.stdin:
    if line.strip() == "mark":        # from now on, only the slaves' connections are legitimate
        mark = len(parsed)
        marked[0] = True
        print(json.dumps({"mark": mark}), flush=True)
    if line.strip() == "done":
        print(json.dumps({"done": len(values)}), flush=True)
    if line.strip() == "stop":
        break
stop.set()
worker.join(120)
status = master.task_manager.status()
print(json.dumps({"values": values, "requested": requested[0], "errors": errors,
                  "counters": status["counters"], "parsed_ports": sorted(set(parsed[mark:])),
                  "parsed_owners": sorted(set(owners.values()), key=str),
                  "processes": [(p["role"], p["pid"], p["tasks_done"]) for p in status["processes"]]}),
      flush=True)
master.shutdown()
'''


class Evil:
    """A pickle that creates a file when unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


class HostileMaster:
    """The master subprocess, its slaves, and what the attacks need to know."""

    def __init__(self, processes, tmp_path, handshake_seconds=None, outstanding=8, slaves=2, env=None):
        script = tmp_path / "hostile_master.py"
        script.write_text(MASTER)
        errors = open(tmp_path / "master.err", "w+")
        self.process = subprocess.Popen(
            [sys.executable, str(script), str(handshake_seconds or "-"), str(outstanding), SECRET.decode()],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
            env=dict(os.environ, **(env or {})), start_new_session=True, text=True)
        self.process.output_file = errors
        processes.started.append(self.process)                 # reaped by the fixture
        self.port = json.loads(self.process.stdout.readline())["port"]
        self.ps = psutil.Process(self.process.pid)
        self.slaves = [processes.python(SLAVE_SCRIPT, LABEL, "5.0", name=f"slave{i}") for i in range(slaves)]
        self.hostile_connections = 0
        self.marker = tmp_path / "pwned"
        wait_for(lambda: self.results_so_far() > 20, 60, "the job to run")

    def results_so_far(self):
        self.process.stdin.write("done\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())["done"]

    def mark(self):
        """Tell the master that every new connection from now on is a stranger's."""
        self.process.stdin.write("mark\n")
        self.process.stdin.flush()
        json.loads(self.process.stdout.readline())

    def finish(self):
        self.process.stdin.write("stop\n")
        self.process.stdin.flush()
        report = json.loads(self.process.stdout.readline())
        assert self.process.wait(30) == 0
        return report

    def connect(self, timeout=10.0):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        self.hostile_connections += 1
        return sock

    def rss(self):
        return self.ps.memory_info().rss

    def threads(self):
        return self.ps.num_threads()


def read_until_closed(sock, limit=1 << 20):
    """Everything the master sends before it closes the connection."""
    received = b""
    try:
        while len(received) < limit:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    except ConnectionResetError:    # the master closed with our unread bytes in its buffer
        pass
    return received


def send_and_expect_rejection(master, data, chunk=None):
    """Send ``data``; the master must answer with its greeting and at most its
    rejection, then close."""
    with master.connect() as sock:
        try:
            if chunk:
                for start in range(0, len(data), chunk):
                    sock.sendall(data[start:start + chunk])
            else:
                sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass                    # it closed (or reset) on us mid-frame: that is a rejection too
        received = read_until_closed(sock)
    assert received[GREETING_SIZE:] in (b"", auth.REJECTED), received[GREETING_SIZE:GREETING_SIZE + 100]
    assert auth.MAGIC.startswith(received[:len(auth.MAGIC)])


def pyro_frame(payload, msgtype=4, serializer=2, claimed_size=None, annotations=b""):
    """A Pyro5 wire message (protocol 502) whose header may lie about its size."""
    size = len(payload) if claimed_size is None else claimed_size
    header = struct.pack("!4sHBBHHII16sHH", b"PYRO", 502, msgtype, serializer, 0, 1, size,
                         len(annotations), b"\0" * 16, 0, 0x4DC5)
    return header + annotations + payload


def evil_exchange_call(master, task_id="work_1"):
    """A genuine-looking Pyro5 'exchange' call whose answer is a malicious pickle."""
    answer = (task_id, 1, True, pickle.dumps(Evil(master.marker), protocol=5), "")
    packed = marshal.dumps((2, [answer], 0, 0.0))   # exchange's arguments travel packed (protocol.py)
    body = marshal.dumps((f"TaskManager.{LABEL}", "exchange", [packed], {}))
    return pyro_frame(body)


def forged_proof():
    return os.urandom(auth.NONCE_SIZE + auth.MAC_SIZE)


def record_a_genuine_conversation(master):
    """Relay a real slave connection (register, exchange, status) and keep what it sent."""
    from scientific_ms.wire.client import MasterConnection
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    sent = bytearray()

    def relay():
        client, _ = listener.accept()
        upstream = socket.create_connection(("127.0.0.1", master.port))
        threading.Thread(target=pump, args=(upstream, client, None), daemon=True).start()
        pump(client, upstream, sent)

    thread = threading.Thread(target=relay, daemon=True)
    thread.start()
    connection = MasterConnection("127.0.0.1", listener.getsockname()[1], SECRET, LABEL)
    status, process_id = connection.call("register", "slave", {"pid": 1}, ["nothing"], None)
    assert status == "ok"
    connection.call("status")
    connection.call("unregister", process_id)
    connection.close()
    thread.join(10)
    listener.close()
    assert SECRET not in sent
    return bytes(sent)


EXPOSED = {
    "register": ("slave", {"pid": 666}, ["work"], None),
    "unregister": (1,),
    "exchange": (marshal.dumps((2, [], 1, 0.0)),),
    "get_data": ("slave_code",),
    "status": (),
    "agent_watch": (marshal.dumps((2, [(2, {})], 0.0)),),
    "lost": (2, "gone", []),
}


# ------------------------------------------------------------------------------------- the scenario


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_hostile_input_while_a_job_runs(processes, tmp_path):
    master = HostileMaster(processes, tmp_path)
    # A genuine slave conversation, recorded through a relay before the attack
    # starts (it is replayed below); after the mark, every new connection is hostile.
    conversation = record_a_genuine_conversation(master)
    master.mark()
    figures = {"rss_start": master.rss(), "threads_start": master.threads(),
               "fds_start": master.ps.num_fds(), "cpu_start": sum(master.ps.cpu_times()[:2])}
    started = time.monotonic()

    # 1. Thousands of random frames (hypothesis): random bytes, truncated
    #    proofs, random Pyro5-looking headers, sent whole or in pieces.
    frames = st.one_of(
        st.binary(max_size=4096),
        st.binary(min_size=1, max_size=auth.NONCE_SIZE + auth.MAC_SIZE - 1),    # truncated proof
        st.binary(min_size=auth.NONCE_SIZE + auth.MAC_SIZE,
                  max_size=auth.NONCE_SIZE + auth.MAC_SIZE),                     # wrong proof
        st.builds(lambda size, body: pyro_frame(body, claimed_size=size),
                  st.integers(0, 2 ** 32 - 1), st.binary(max_size=256)),
        st.builds(lambda proof, body: proof + body, st.binary(min_size=64, max_size=64),
                  st.binary(max_size=1024)),
    )

    @settings(max_examples=2000, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(frame=frames, chunk=st.one_of(st.none(), st.integers(1, 64)))
    def random_frame_is_rejected(frame, chunk):
        send_and_expect_rejection(master, frame, chunk)

    random_frame_is_rejected()
    figures["after_random"] = (master.rss(), master.threads())

    # 2. Oversized frames, and headers that claim a huge size.
    for data in (os.urandom(16 * 1024 * 1024), b"\0" * (64 * 1024 * 1024),
                 pyro_frame(b"", claimed_size=2 ** 32 - 1),
                 pyro_frame(b"x" * 1000, claimed_size=2 ** 31, annotations=b"CORR" + struct.pack("!I", 2 ** 31)),
                 forged_proof() + pyro_frame(b"", claimed_size=2 ** 32 - 1)):
        send_and_expect_rejection(master, data)

    # 3. Plain Pyro5 clients, every exposed method, every serializer.
    import Pyro5.api
    import Pyro5.errors
    for serializer in ("serpent", "marshal", "json", "msgpack"):
        for method, args in EXPOSED.items():
            proxy = Pyro5.api.Proxy(f"PYRO:TaskManager.{LABEL}@127.0.0.1:{master.port}")
            proxy._pyroTimeout = 5
            proxy._pyroSerializer = serializer
            proxy._pyroMethods = set(EXPOSED)            # skip the metadata lookup: call directly
            with pytest.raises(Pyro5.errors.PyroError):
                getattr(proxy, method)(*args)
            proxy._pyroRelease()

    # 4. The malicious pickle: raw, as a Pyro5 call, after a forged proof,
    #    after a replayed proof, and after a replay of a genuine conversation.
    evil = pickle.dumps(Evil(master.marker), protocol=5)
    evil_call = evil_exchange_call(master)
    replayed_proof = conversation[:auth.NONCE_SIZE + auth.MAC_SIZE]
    attempts = [evil, pickle.dumps(Evil(master.marker), protocol=0), evil_call,
                forged_proof() + evil, forged_proof() + evil_call,
                replayed_proof + evil, replayed_proof + evil_call, conversation,
                replayed_proof + conversation[auth.NONCE_SIZE + auth.MAC_SIZE:] + evil_call]
    for attempt in attempts * 20:
        send_and_expect_rejection(master, attempt)

    # 5. Thousands more connections of plain garbage, four at a time, to watch the memory.
    rss_before_flood = master.rss()
    failures = []

    def flood(seed):
        try:
            for i in range(750):
                send_and_expect_rejection(master, os.urandom((i * 7 + seed) % 200))
        except BaseException as error:    # re-raised below
            failures.append(error)

    flooders = [threading.Thread(target=flood, args=(seed,)) for seed in range(4)]
    for thread in flooders:
        thread.start()
    peak_threads = master.threads()
    for thread in flooders:
        while thread.is_alive():
            peak_threads = max(peak_threads, master.threads())
            thread.join(0.05)
    assert not failures, failures[0]
    figures["rss_flood"] = (rss_before_flood, master.rss())
    figures["peak_threads_flood"] = peak_threads

    # Afterwards: threads back to normal (idle pool workers above the
    # minimum retire), the job still running, nothing unpickled, nobody in.
    wait_for(lambda: master.threads() <= figures["threads_start"] + 8, 30, "the master's threads to settle")
    figures["threads_end"] = master.threads()
    figures["fds_end"] = master.ps.num_fds()
    figures["rss_end"] = master.rss()
    figures["cpu_attack"] = sum(master.ps.cpu_times()[:2]) - figures["cpu_start"]
    figures["wall_attack"] = time.monotonic() - started
    figures["connections"] = master.hostile_connections
    figures["results_during"] = master.results_so_far()
    report = master.finish()

    mib = 1024 * 1024
    print(f"\n{figures['connections']} hostile connections in {figures['wall_attack']:.1f} s; "
          f"master CPU {figures['cpu_attack']:.1f} s; RSS {figures['rss_start'] / mib:.1f} MiB at start, "
          f"{figures['after_random'][0] / mib:.1f} after the hypothesis frames, "
          f"{figures['rss_flood'][0] / mib:.1f} -> {figures['rss_flood'][1] / mib:.1f} across 3000 more (4 at a time), "
          f"{figures['rss_end'] / mib:.1f} at the end; threads {figures['threads_start']} at start, "
          f"{figures['after_random'][1]} after the hypothesis frames, at most {figures['peak_threads_flood']} "
          f"during the 4-way flood, {figures['threads_end']} at the end; "
          f"fds {figures['fds_start']} -> {figures['fds_end']}; "
          f"{len(report['values'])} results, {figures['results_during']} of them during the attack")

    assert not report["errors"], report["errors"]
    assert sorted(report["values"]) == list(range(report["requested"]))    # each exactly once
    assert figures["results_during"] > 50                                # the job ran during the attack
    assert not master.marker.exists()                                     # nothing unpickled
    assert report["parsed_ports"], "the spy saw no message at all"         # it does see the slaves'
    # Whose sockets they were when parsed (a port alone may be reused: a slave's new connection
    # can get a port that one of the thousands of strangers' sockets had before it).
    owners = set(report["parsed_owners"])
    assert owners, "the spy saw no message after the mark"
    assert os.getpid() not in owners and None not in owners, f"a stranger's message was parsed: {owners}"
    roles = sorted(role for role, _, _ in report["processes"])
    assert roles == ["master", "slave", "slave"], report["processes"]     # nobody else registered
    assert report["counters"]["processes_lost"] == 0                      # the slaves were not disturbed
    assert figures["rss_end"] - figures["rss_start"] < 64 * mib           # bounded memory
    assert figures["rss_flood"][1] - figures["rss_flood"][0] < 16 * mib
    assert figures["fds_end"] <= figures["fds_start"] + 2


# ------------------------------------------------------------------------------------- holding threads


def test_silent_connections_are_dropped_at_the_handshake_timeout(processes, tmp_path):
    """A connection that says nothing holds a master thread until the timeout, no longer."""
    timeout = 3.0
    master = HostileMaster(processes, tmp_path, handshake_seconds=timeout, slaves=1)
    baseline = master.threads()
    opened = time.monotonic()
    silent = [master.connect() for _ in range(200)]
    wait_for(lambda: master.threads() >= baseline + 150, timeout, "the silent connections to take threads")
    held = master.threads()
    for sock in silent:
        assert read_until_closed(sock).startswith(auth.MAGIC)    # the master hangs up on each
    closed_after = time.monotonic() - opened
    wait_for(lambda: master.threads() <= baseline + 8, 10, "the threads to be released")
    print(f"\nthreads: {baseline} before, {held} with 200 silent connections, {master.threads()} after; "
          f"the last closed by the master {closed_after:.1f} s after the first was opened "
          f"(handshake timeout {timeout:g} s)")
    assert closed_after < timeout + 3.0
    for sock in silent:
        sock.close()
    report = master.finish()
    assert sorted(report["values"]) == list(range(report["requested"]))


def test_a_trickling_connection_cannot_stretch_the_handshake_timeout(processes, tmp_path):
    """One byte now and then must not reset the handshake clock (it used to, per recv)."""
    master = HostileMaster(processes, tmp_path, handshake_seconds=1.0, slaves=1)
    sock = master.connect()
    assert sock.recv(GREETING_SIZE)
    opened = time.monotonic()
    closed = None
    for _ in range(auth.NONCE_SIZE + auth.MAC_SIZE - 1):    # never completes the proof
        try:
            sock.sendall(b"x")
            # The attacker's pace: one byte per 0.4 s, unless the master hangs up first.
            if _readable(sock, 0.4) and sock.recv(1) == b"":
                closed = time.monotonic() - opened
                break
        except OSError:
            closed = time.monotonic() - opened
            break
    sock.close()
    print(f"\ntrickling connection closed by the master after {closed} s (handshake timeout 1 s)")
    assert closed is not None and closed < 1.0 + 1.5
    master.finish()


def _readable(sock, timeout):
    import select
    return bool(select.select([sock], [], [], timeout)[0])


def test_silent_connections_cannot_lock_out_slaves(processes, tmp_path):
    """With the pool full of silent strangers, a slave with the secret must still get in."""
    from scientific_ms.wire.client import MasterConnection
    pool = 80                     # the smallest pool a master has (Pyro5's default size)
    master = HostileMaster(processes, tmp_path, handshake_seconds=5.0, slaves=1,
                           env={"SCIENTIFIC_MS_MAX_CONNECTIONS": "8"})
    silent = [master.connect() for _ in range(pool)]   # as many as the pool has threads
    try:
        connection = MasterConnection("127.0.0.1", master.port, SECRET, LABEL, timeout=3.0)
        assert connection.call("status")["processes"]
        connection.close()
        # At most a quarter of the pool waits in the handshake; the oldest are dropped.
        assert master.threads() < pool
    finally:
        for sock in silent:
            sock.close()
        master.finish()
