"""Chaos: slaves killed at random all through a run; self-healing of spawned slaves."""

import collections
import os
import random
import signal
import threading
import time

import pytest

from conftest import ROOT, wait_for
from scientific_ms import MasterProcess

SLAVE_SCRIPT = os.path.join(os.path.dirname(__file__), "slave_script.py")
TASKS = 2000
SLAVES = 6


def run_farm(master, processes, tmp_path, chaos_period):
    """2,000 tasks of 1-20 ms on 6 slaves; every ``chaos_period`` s one slave is SIGKILLed and replaced."""
    log_path = tmp_path / "executions.log"
    slaves = [processes.python(SLAVE_SCRIPT, master.label, 1.0, name=f"slave{i}") for i in range(SLAVES)]
    wait_for(lambda: len(master.task_manager.status()["processes"]) == SLAVES + 1, 60, "the slaves")
    rng = random.Random(1)
    durations = [rng.uniform(0.001, 0.020) for _ in range(TASKS)]
    started = time.monotonic()
    ids = [master.requestTask("logged_work", seconds, i, str(log_path)) for i, seconds in enumerate(durations)]
    stop = threading.Event()
    kills = []

    def chaos():
        while not stop.wait(chaos_period):
            victim = slaves.pop(rng.randrange(len(slaves)))
            victim.send_signal(signal.SIGKILL)
            kills.append(victim.pid)
            slaves.append(processes.python(SLAVE_SCRIPT, master.label, 1.0, name=f"slave{len(kills) + SLAVES}"))

    killer = threading.Thread(target=chaos)
    if chaos_period:
        killer.start()
    delivered = collections.Counter()
    try:
        for _ in ids:
            task_id, tag, value = master.retrieveResult(timeout=120)
            delivered[task_id] += 1
    finally:
        stop.set()
        if chaos_period:
            killer.join(30)
    makespan = time.monotonic() - started
    executions = collections.Counter(int(line) for line in log_path.read_text().split())
    return ids, delivered, executions, makespan, kills


@pytest.mark.slow
def test_chaos_every_result_exactly_once(processes, tmp_path):
    calm_master = MasterProcess("calm", use_name_server=False, port=0)
    try:
        (tmp_path / "calm").mkdir()
        _, _, _, calm_makespan, _ = run_farm(calm_master, processes, tmp_path / "calm", 0)
    finally:
        calm_master.shutdown()
    (tmp_path / "chaos").mkdir()
    master = MasterProcess("chaos", use_name_server=False, port=0)
    try:
        ids, delivered, executions, makespan, kills = run_farm(master, processes, tmp_path / "chaos", 0.15)
        counters = master.task_manager.counters
    finally:
        master.shutdown()
    assert set(delivered) == set(ids), "a result was lost"
    assert set(delivered.values()) == {1}, "a result was delivered twice"
    assert len(kills) >= 5
    twice = sum(1 for n in executions.values() if n > 1)
    print(f"\nchaos: {TASKS} tasks, {SLAVES} slaves, {len(kills)} SIGKILLs (every 150 ms): "
          f"makespan {makespan:.2f} s vs {calm_makespan:.2f} s without faults; "
          f"{counters['rescheduled']} tasks rescheduled, {twice} ran twice to completion, "
          f"{counters['duplicates_dropped']} duplicate answers dropped, "
          f"{counters['processes_lost']} slaves declared dead")


def test_spawned_slaves_are_replaced_when_they_die(processes):
    master = MasterProcess("healing", use_name_server=False, port=0, slave_restarts=2)
    try:
        master.store_slave_code((ROOT / "tests" / "slave_script.py").read_text()
                                .replace("sys.argv[1]", "'healing'"),
                                str(ROOT / "tests" / "slave_script.py"))
        master.launchSlaveJobs(2)
        wait_for(lambda: len(master.spawned_slaves) == 2
                 and len(master.task_manager.status()["processes"]) == 3, 60, "two spawned slaves")
        started = time.monotonic()
        ids = [master.requestTask("work", 0.01, i) for i in range(400)]
        wait_for(lambda: master.task_manager.counters["finished"] > 40, 60, "progress")
        victim = master.spawned_slaves[0]
        os.kill(victim, signal.SIGKILL)
        results = {master.retrieveResult(timeout=60)[0] for _ in ids}
        makespan = time.monotonic() - started
        assert results == set(ids)
        wait_for(lambda: master.slave_replacements == 1, 30, "the replacement")
        assert victim not in master.spawned_slaves and len(master.spawned_slaves) == 2
        print(f"\nW3 (400 x 10 ms, 2 spawned slaves, one SIGKILLed): {makespan:.2f} s, replaced")
    finally:
        master.shutdown()


def test_restart_limit_stops_replacing(processes):
    master = MasterProcess("limit", use_name_server=False, port=0, slave_restarts=1)
    try:
        master.store_slave_code("import os\nos._exit(7)\n", "crash.py")
        master.launchSlaveJobs(1)
        wait_for(lambda: master.slave_replacements == 1 and not master.spawned_slaves, 60,
                 "one restart, then none")
    finally:
        master.shutdown()
