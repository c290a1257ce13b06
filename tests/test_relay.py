"""A keeper's relay: the worker's side (``slave/relayed.py``), replies reach their callers;
the keeper's side (``slave/relay.py``), idle workers' polls reach the master once each.

The relay itself, with real keepers, workers and masters, runs in every test of
``tests/test_agent.py`` (its "relayed" half) and in ``benchmarks/load.py --kind relay``.
"""

import socket
import threading
from multiprocessing.connection import Connection

import pytest

from scientific_ms.errors import ConnectionLostError
from scientific_ms.slave.relayed import RelayLink


def pair():
    ours, theirs = socket.socketpair()
    return Connection(ours.detach()), Connection(theirs.detach())


def test_replies_out_of_order_reach_their_own_callers():
    worker_end, keeper_end = pair()
    link = RelayLink(worker_end, ("127.0.0.1", 1, b"secret"))
    results = {}

    def caller(value):
        results[value] = link.request("call", "get_data", (value,))

    threads = [threading.Thread(target=caller, args=(value,)) for value in ("a", "b", "c")]
    for thread in threads:
        thread.start()
    requests = [keeper_end.recv() for _ in threads]   # (kind, number, method, args)
    for _kind, number, _method, args in reversed(requests):   # answered last first
        keeper_end.send((number, "ok", ("reply to", args[0])))
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()
    assert results == {value: ("reply to", value) for value in "abc"}
    worker_end.close()
    keeper_end.close()


def test_a_failed_request_and_a_dead_keeper_raise_connection_lost():
    worker_end, keeper_end = pair()
    link = RelayLink(worker_end, ("127.0.0.1", 1, b"secret"))

    def keeper():
        _, number, *_ = keeper_end.recv()
        keeper_end.send((number, "failed", "the master at 127.0.0.1:1 closed the connection"))
        keeper_end.recv()
        keeper_end.close()   # the keeper dies with a request outstanding

    thread = threading.Thread(target=keeper)
    thread.start()
    with pytest.raises(ConnectionLostError, match="closed the connection"):
        link.request("call", "register", ())
    with pytest.raises(ConnectionLostError, match="keeper"):
        link.request("call", "register", ())
    with pytest.raises(ConnectionLostError, match="keeper"):   # and every request after
        link.request("exchange", 1, [], 1, 0.0, None, None)
    thread.join(10)
    worker_end.close()


@pytest.mark.timeout(60)
def test_idle_workers_each_reach_the_master_once_per_poll():
    """A keeper's idle workers poll with deadlines of their own. A waiting call that ends on
    the first of them, with work for none, answers every request it carried: otherwise each
    worker's deadline ended a call that carried every other idle worker again, and the master
    served each idle poll about as many times as the host had idle workers (``slave/relay.py``;
    at 10,000 workers behind keepers of 64, more than the master's whole CPU)."""
    from scientific_ms import MasterProcess
    from scientific_ms.slave.relay import ExchangeRelay
    from scientific_ms.wire.client import MasterConnection

    workers, polls = 16, 3
    master = MasterProcess("relay_polls", use_name_server=False, port=0, host="127.0.0.1")
    manager = master.task_manager
    relay = ExchangeRelay(lambda: MasterConnection("127.0.0.1", master.port, master.secret, master.label))
    links = []
    replies: dict = {}

    def worker(process_id, link, wait):
        """An idle worker: it asks for a task, waiting up to ``wait`` s, ``polls`` times."""
        for number in range(polls):
            link.send(("exchange", number, process_id, [], 1, wait, None, None))
            if not link.poll(30):
                return
            replies.setdefault(process_id, []).append(link.recv())

    try:
        relay.start()
        threads = []
        for index in range(workers):
            process_id = manager.register_process("slave", {"pid": index}, ["x"], None)
            ours, theirs = relay.pair()
            relay.add(ours, index)
            links.append(theirs)
            # deadlines spread as idle workers' are (settings.POLL_SECONDS, jittered)
            wait = 0.2 + 0.2 * index / workers
            threads.append(threading.Thread(target=worker, args=(process_id, theirs, wait)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
            assert not thread.is_alive(), "a worker got no reply from its keeper's relay"
        answered = sum(len(got) for got in replies.values())
        assert answered == workers * polls
        assert all(reply[1:] == ("ok", ("ok", [], [])) for got in replies.values() for reply in got), replies
        # Each poll was carried to the master at most once (none got work, so none waits on).
        carried = manager.counters["relayed_exchanges"]
        assert carried <= answered, f"{answered} idle polls were carried to the master {carried} times"
    finally:
        relay.stop()
        for link in links:
            link.close()
        master.shutdown()


def test_a_payloads_buffers_cross_the_link_beside_the_pickle_and_arrive_intact():
    """The link between a keeper and a worker (``slave/relay_link.py``): a 1 MB buffer is not
    pickled with its message but follows it as it lies, so that neither side copies it through
    Python objects; it arrives intact, read-only or writable as it was sent. Read here with a
    plain ``multiprocessing.connection.Connection``, whose framing the link keeps."""
    import os
    import pickle

    from scientific_ms.slave.relay import ExchangeRelay
    from scientific_ms.slave.relay_link import BUFFERS
    from scientific_ms.wire.payload import Pickled

    keeper_end, worker_end = ExchangeRelay.pair()
    data, writable = os.urandom(1 << 20), bytearray(os.urandom(1 << 19))
    message = (7, "ok", ("ok", [("task", 1, "echo", Pickled(b"head", [data, writable, memoryview(data)[:10]]),
                                 None, None, None)], []))
    sender = threading.Thread(target=keeper_end.send, args=(message,))
    sender.start()
    raw = Connection(os.dup(worker_end.fileno()))
    try:
        announced = pickle.loads(raw.recv_bytes())
        assert announced == (BUFFERS, [(len(data), False), (len(writable), True), (10, False)])
        assert len(raw.recv_bytes()) < 1024   # the pickle: everything but the buffers
        received = b""
        while len(received) < len(data) + len(writable) + 10:
            received += os.read(raw.fileno(), 1 << 20)
        assert received == data + writable + data[:10]
        sender.join(10)
        assert not sender.is_alive()
        # The same message, received as a worker receives it.
        sender = threading.Thread(target=keeper_end.send, args=(message,))
        sender.start()
        number, status, (_ok, tasks, _revoked) = worker_end.recv()
        sender.join(10)
        payload = tasks[0][3]
        assert (number, status, payload.head) == (7, "ok", b"head")
        assert payload.buffers == [data, writable, data[:10]]
        assert [type(buffer) for buffer in payload.buffers] == [bytes, bytearray, bytes]
        # A message without buffers is exactly what a Connection sends.
        keeper_end.send(("call", 3, "get_data", ("x",)))
        assert raw.recv() == ("call", 3, "get_data", ("x",))
    finally:
        raw.close()
        keeper_end.close()
        worker_end.close()
