"""1,000 slaves connected to one master at once: it serves them all, and heartbeats keep up.

The slaves are genuine ``SlaveProcess`` objects (feed and heartbeat threads,
two connections each), 250 per process as threads, driven by
``benchmarks/load.py``, which also holds the heavier variants. Every slave
gets a task that holds it until all 1,000 hold one; heartbeats with a 2 s
watchdog period must keep up throughout (nobody wrongly declared dead);
every result arrives exactly once; every slave process exits cleanly when
the master shuts down. The master's CPU and RSS are measured and printed
(``pytest -s`` shows them), never asserted beyond generous sanity bounds.
"""

import importlib.util
import os
import subprocess
import sys
import threading

import pytest

from conftest import ROOT
from scientific_ms import MasterProcess

SLAVES = 1000
PROCESSES = 4
# 2 s, not 1 s: with a 1 s period (4 s limit) this shared 2-core machine
# wrongly declared slaves dead in some runs, when 1,000 completions or
# 1,000 synchronized idle polls arrive at once and the master stalls for
# 2-5 s (see docs/hostile-and-load.md); benchmarks/load.py
# --watchdog 1 reproduces it.
WATCHDOG = 2.0


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("load_benchmark", ROOT / "benchmarks" / "load.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(110)
def test_a_thousand_slaves_all_get_work_and_none_is_wrongly_declared_dead(processes, tmp_path):
    load = _load_benchmark()
    master = MasterProcess("load", use_name_server=False, port=0, host="127.0.0.1")

    def spawn(command, env):
        # Like processes.start, but with a pipe on stdin: it carries "release".
        name = f"slaves{len(processes.started)}"
        out = open(tmp_path / f"{name}.out", "w+")
        child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                                 env=dict(os.environ, **env), start_new_session=True)
        child.output_file = out
        processes.started.append(child)
        return child

    try:
        figures = load.run_load(master, spawn, slaves=SLAVES, processes=PROCESSES, kind="real",
                                watchdog=WATCHDOG, hold=9.0, deadline=90.0)
    except AssertionError:
        master.shutdown()
        for child in processes.started:   # what the slaves said, for the failure report
            lines = [line for line in processes.output(child).splitlines() if "joining again" not in line]
            print(f"--- {child.args[3:5]}: {len(lines)} lines\n" + "\n".join(lines[-15:]))
        raise
    finally:
        master.shutdown()
    print()
    print(load.report(figures))

    assert figures["processes_lost"] == 0, figures["losses"]      # heartbeats kept up
    assert figures["idle_slaves"] == 0                            # every slave ran a task
    assert figures["duplicates_dropped"] == 0
    assert figures["slave_exit_codes"] == [0] * PROCESSES, [
        processes.output(child)[-2000:] for child in processes.started]
    # 2 connections per slave, each served by its own thread while it lasts.
    assert figures["connections_holding"] >= 2 * SLAVES
    assert figures["threads_after"] <= figures["threads_before"]
    # Generous sanity bound on the master's memory: ~60 kB per slave measured.
    assert figures["rss_peak"] - figures["rss_before"] < 1000 * 1024 * 1024


BURST = 300   # three times Pyro5's listen backlog of 100


@pytest.mark.timeout(60)
def test_a_burst_of_connections_beyond_the_listen_backlog_all_authenticate():
    """A node's keeper starting its workers, several nodes at once: every connection is
    accepted and authenticated promptly, none left waiting in a full listen backlog
    for the master's SYN-ACK retransmissions (about half a minute)."""
    from scientific_ms.wire.client import MasterConnection

    master = MasterProcess("burst", use_name_server=False, port=0, host="127.0.0.1")
    start = threading.Barrier(BURST)
    connected, errors = [], []

    def connect():
        start.wait(20)
        try:
            connected.append(MasterConnection("127.0.0.1", master.port, master.secret, master.label, timeout=15))
        except Exception as error:   # reported by the assertion below
            errors.append(repr(error))

    threads = [threading.Thread(target=connect) for _ in range(BURST)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(40)
        assert not errors, f"{len(errors)} of {BURST} connections failed, e.g. {errors[:3]}"
        assert len(connected) == BURST
    finally:
        for connection in connected:
            connection.close()
        master.shutdown()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-s"]))
