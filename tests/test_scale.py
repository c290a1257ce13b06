"""Hundreds of slaves connected at once (Pyro5's default pool would refuse the 81st)."""

import threading

from scientific_ms import MasterProcess
from scientific_ms.wire.client import MasterConnection

SLAVES = 320


def test_hundreds_of_connected_slaves_all_get_work():
    master = MasterProcess("crowd", use_name_server=False, port=0)
    try:
        for i in range(SLAVES):
            master.requestTask("f", i)
        connected = []
        barrier = threading.Barrier(SLAVES + 1, timeout=120, action=lambda: connected.append(
            len(master.task_manager.status()["processes"])))
        got = [None] * SLAVES
        errors = []

        def slave(index):
            try:
                connection = MasterConnection("127.0.0.1", master.port, master.secret, "crowd", timeout=60)
                status, process_id = connection.call("register", "slave", {"pid": index}, ["f"], 1.0)
                # Every slave holds its task until all of them have one: all connected at once.
                status, tasks, _revoked = connection.call("exchange", process_id, [], 1, 60.0)
                got[index] = tasks
                barrier.wait()
                answers = [(task[0], task[1], True, b"\x80\x05K\x01.", "") for task in tasks]
                connection.call("exchange", process_id, answers, 0, 0.0)
                connection.call("unregister", process_id)
                connection.close()
            except Exception as error:   # reported below
                errors.append(repr(error))
                barrier.abort()

        threads = [threading.Thread(target=slave, args=(i,)) for i in range(SLAVES)]
        for thread in threads:
            thread.start()
        barrier.wait()
        assert connected == [SLAVES + 1]
        for thread in threads:
            thread.join(timeout=60)
        assert not errors, errors[:3]
        assert all(tasks and len(tasks) == 1 for tasks in got)
        assert len({tasks[0][0] for tasks in got}) == SLAVES
        for _ in range(SLAVES):
            master.retrieveResult(timeout=30)
    finally:
        master.shutdown()
