"""The worker's side of a keeper's relay (``slave/relayed.py``): replies reach their callers.

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
