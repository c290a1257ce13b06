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
