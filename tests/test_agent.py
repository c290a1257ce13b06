"""Node agents (``task_manager slave LABEL -n N``): every guarantee holds per slave.

Each test runs a real master in this process and a real agent process with
real slave processes behind it; every result must arrive exactly once.
"""

import collections
import contextlib
import os
import signal
import sys
import time

import psutil
import pytest

from conftest import descendants_gone, wait_for
from scientific_ms import MasterProcess, TaskRaisedException, TaskTimeLimitError
from test_partition import cut_until_taken_over, start_partition_master

SLAVE_SCRIPT = os.path.join(os.path.dirname(__file__), "slave_script.py")


@pytest.fixture(params=["direct", "relayed"], autouse=True)
def transport(request, monkeypatch):
    """Each test twice: the workers talk to the master themselves, and their keeper relays
    their exchanges (``slave/relay.py``; a keeper of any size relays with 1)."""
    monkeypatch.setenv("SCIENTIFIC_MS_RELAY_WORKERS", "1" if request.param == "relayed" else "0")
    return request.param


@pytest.fixture
def job(transport):
    """A master whose stored slave code is slave_script.py; ``job(period)`` sets its watchdog.
    With the relayed transport, every master that finished a task got it through a relay."""
    masters = []

    def start(label, period=120.0, **options):
        master = MasterProcess(label, use_name_server=False, port=0, **options)
        with open(SLAVE_SCRIPT) as source:
            master.store_slave_code(source.read(), SLAVE_SCRIPT, [SLAVE_SCRIPT, label, str(period)])
        masters.append(master)
        return master

    yield start
    for master in masters:
        master.shutdown()
    if transport == "relayed":
        for master in masters:
            counters = master.task_manager.counters
            assert not counters["finished"] or counters["relayed_exchanges"], "no exchange was relayed"


def slaves(master):
    return [p for p in master.task_manager.status()["processes"] if p["role"] == "slave"]


def slave_pids(master):
    return {p["pid"] for p in slaves(master)}


def running_pids(master):
    return {p["pid"] for p in slaves(master) if p["running"]}


def collect(master, count):
    results = collections.Counter()
    values = {}
    for _ in range(count):
        task_id, tag, value = master.retrieveResult(timeout=60)
        results[task_id] += 1
        values[task_id] = value
    return results, values


def start_agent(processes, label, count):
    agent = processes.task_manager("slave", label, "-n", count, "-v", name=f"agent-{label}")
    return agent


def children(agent):
    return {child.pid for child in psutil.Process(agent.pid).children()}


def test_an_agent_registers_each_slave_and_itself(job, processes):
    master = job("agent_show")
    agent = start_agent(processes, "agent_show", 3)
    wait_for(lambda: len(slaves(master)) == 3, 30, "three slaves")
    status = master.task_manager.status()
    [record] = [p for p in status["processes"] if p["role"] == "agent"]
    assert record["pid"] == agent.pid
    assert slave_pids(master) == children(agent)
    ids = [master.requestTask("pid") for _ in range(60)]
    results, values = collect(master, len(ids))
    assert set(results) == set(ids) and set(results.values()) == {1}
    assert set(values.values()) <= children(agent)
    master.shutdown()
    pids = children(agent)
    code, out = processes.finish(agent, 20)
    assert code == 0, out
    assert descendants_gone(pids, 5) == []


def test_a_killed_slave_behind_an_agent_costs_only_its_task_and_is_replaced(job, processes):
    master = job("agent_kill_slave")
    agent = start_agent(processes, "agent_kill_slave", 2)
    wait_for(lambda: len(slaves(master)) == 2, 30, "two slaves")
    ids = [master.requestTask("work", 0.4, i) for i in range(8)]
    victim = wait_for(lambda: next(iter(running_pids(master)), None), 30, "a slave to run a task")
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: master.task_manager.counters["processes_lost"] == 1, 10, "the death to be noticed")
    results, _ = collect(master, len(ids))
    assert set(results) == set(ids) and set(results.values()) == {1}
    assert master.task_manager.counters["rescheduled"] == 1   # its task alone: the queued ones were not blamed
    wait_for(lambda: len(slaves(master)) == 2 and victim not in slave_pids(master), 30, "a replacement")
    assert agent.poll() is None


def test_a_killed_agent_takes_its_slaves_along_and_their_tasks_run_elsewhere(job, processes):
    master = job("agent_kill_agent")
    doomed = start_agent(processes, "agent_kill_agent", 2)
    wait_for(lambda: len(slaves(master)) == 2, 30, "two slaves")
    orphans = children(doomed)
    ids = [master.requestTask("work", 0.4, i) for i in range(6)]
    wait_for(lambda: running_pids(master) == orphans, 30, "both slaves to run a task")
    doomed.send_signal(signal.SIGKILL)
    assert descendants_gone(orphans, 10) == []     # they die with their agent
    wait_for(lambda: not slaves(master), 10, "the master to notice")
    start_agent(processes, "agent_kill_agent", 2)
    results, _ = collect(master, len(ids))
    assert set(results) == set(ids) and set(results.values()) == {1}
    assert master.task_manager.counters["rescheduled"] >= 2


def test_a_stopped_slave_behind_an_agent_is_declared_dead_after_the_watchdog_limit(job, processes):
    period = 0.25
    master = job("agent_stop", period)
    agent = start_agent(processes, "agent_stop", 2)
    wait_for(lambda: len(slaves(master)) == 2, 30, "two slaves")
    task_id = master.requestTask("work", 1.5, "slow")
    stopped = wait_for(lambda: next(iter(running_pids(master)), None), 30, "a slave to start the task")
    os.kill(stopped, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        wait_for(lambda: master.task_manager.counters["processes_lost"] == 1, 30, "missed heartbeats")
        print(f"\nSIGSTOP behind an agent noticed after {time.monotonic() - stopped_at:.2f} s "
              f"(limit 4 x {period} s)")
        got_id, tag, (value, pid) = master.retrieveResult(timeout=60)
        assert (got_id, value) == (task_id, "slow") and pid != stopped
        # Declared dead, it is killed by its keeper (no late answer, no stopped process holding
        # a slot) and a fresh worker takes its place.
        assert descendants_gone([stopped], 10) == [], "the stopped worker was not killed"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stopped, signal.SIGCONT)
    wait_for(lambda: len(slaves(master)) == 2 and stopped not in slave_pids(master), 30, "a replacement")
    assert master.task_manager.counters["delivered"] == 1
    assert agent.poll() is None


def test_a_handler_holding_the_gil_for_many_watchdog_periods_is_not_declared_dead(job, processes):
    period = 0.2
    master = job("agent_gil", period)
    start_agent(processes, "agent_gil", 2)
    wait_for(lambda: len(slaves(master)) == 2, 30, "two slaves")
    n = 10 ** 8     # about 2 s of sum() in C here: 10 watchdog periods, never a heartbeat from the slave
    started = time.monotonic()
    task_id = master.requestTask("spin", n)
    assert master.retrieveResult(timeout=120) == (task_id, "spin", n * (n - 1) // 2)
    print(f"\nGIL held for {time.monotonic() - started:.1f} s at a {period} s watchdog")
    counters = master.task_manager.counters
    assert (counters["processes_lost"], counters["rescheduled"], counters["duplicates_dropped"]) == (0, 0, 0)


def test_a_handler_stuck_in_c_past_its_time_limit_is_ended_and_its_slave_replaced(job, processes):
    master = job("agent_limit")
    start_agent(processes, "agent_limit", 2)
    wait_for(lambda: len(slaves(master)) == 2, 30, "two slaves")
    before = slave_pids(master)
    started = time.monotonic()
    stuck = master.request_task("spin", 10 ** 11, time_limit=0.5)   # minutes of C code
    stuck_pid = wait_for(lambda: next(iter(running_pids(master)), None), 30, "the task to start")
    with pytest.raises(TaskRaisedException) as caught:
        master.retrieveResult(timeout=30)
    reported = time.monotonic() - started
    error = caught.value
    assert error.task_id == stuck and isinstance(error.exception, TaskTimeLimitError)
    assert "was killed and replaced" in str(error.exception)
    print(f"\nstuck task reported after {reported:.2f} s (limit 0.5 s)")
    assert descendants_gone([stuck_pid], 10) == []
    wait_for(lambda: len(slaves(master)) == 2 and stuck_pid not in slave_pids(master), 30, "a replacement")
    assert len(slave_pids(master) - before) == 1
    # The next task runs at once.
    task_id = master.requestTask("pid")
    assert master.retrieveResult(timeout=30)[0] == task_id
    assert master.task_manager.counters["processes_lost"] == 0


def test_an_agent_host_cut_off_loses_its_tasks_to_others_and_rejoins(hosts, processes, tmp_path):
    env = {"SCIENTIFIC_MS_SECRET": "agent-partition-secret", "SCIENTIFIC_MS_PORT": "7766"}
    master_host, host_a, host_b, markers, master = start_partition_master(
        hosts, processes, tmp_path, "10.214", env, "agent_cut", 3, SLAVE_SCRIPT)
    agent = processes.start(hosts.command(host_a, sys.executable, "-m", "scientific_ms", "slave", "agent_cut",
                                          "-n", "2", "-w"),   # -w: the master may not listen yet
                            env=dict(env, SCIENTIFIC_MS_MASTER="10.214.1.1:7766"), name="agent")
    other = processes.start(hosts.command(host_b, sys.executable, SLAVE_SCRIPT, "agent_cut", 0.25),
                            env=dict(env, SCIENTIFIC_MS_MASTER="10.214.2.1:7766"), name="other")
    behind_agent = wait_for(lambda: children(agent) if len(children(agent)) == 2 else None, 60, "two slaves")

    def started_behind_agent():
        return [name.rsplit("-", 1)[1] for name in os.listdir(markers)
                if int(name.split("-")[1]) in behind_agent]

    wait_for(started_behind_agent, 60, "a slave behind the agent to start a task")
    held = started_behind_agent()
    # Both slaves behind the agent go silent for the master at once.
    lost, rescheduled, dropped, out = cut_until_taken_over(hosts, processes, master_host, host_a, markers,
                                                           held[-1], other, master, (agent, other))
    assert lost >= 2 and rescheduled >= 1, out
    assert descendants_gone(behind_agent, 10) == []
    print(f"\nagent host cut off: {lost} slaves declared dead, {rescheduled} task(s) rescheduled, "
          f"{dropped} late answer(s) dropped, 24/24 results exactly once")
