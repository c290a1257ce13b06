"""Dead and hung slaves: tasks are rescheduled, every result arrives exactly once."""

import collections
import os
import signal
import time

import pytest

from conftest import wait_for
from scientific_ms import MasterProcess, SlaveLostError, TaskRaisedException

SLAVE_SCRIPT = os.path.join(os.path.dirname(__file__), "slave_script.py")


@pytest.fixture
def master():
    master = MasterProcess("faults", use_name_server=False, port=0)
    yield master
    master.shutdown()


def slave_of(master, pid):
    """The status record of the slave with this OS pid, or None."""
    for proc in master.task_manager.status()["processes"]:
        if proc["role"] == "slave" and proc["pid"] == pid:
            return proc
    return None


def collect(master, count):
    results = collections.Counter()
    for _ in range(count):
        task_id, tag, value = master.retrieveResult(timeout=60)
        results[task_id] += 1
    return results


def test_kill_9_mid_task_reschedules_at_once(master, processes):
    victim = processes.python(SLAVE_SCRIPT, "faults", name="victim")
    wait_for(lambda: slave_of(master, victim.pid), 30, "the first slave")
    ids = [master.requestTask("work", 0.3, i) for i in range(12)]
    wait_for(lambda: slave_of(master, victim.pid)["running"], 30, "the victim to run a task")
    survivor = processes.python(SLAVE_SCRIPT, "faults", name="survivor")
    killed_at = time.monotonic()
    victim.send_signal(signal.SIGKILL)
    wait_for(lambda: master.task_manager.counters["processes_lost"] == 1, 10, "the death to be noticed")
    noticed = time.monotonic() - killed_at
    results = collect(master, len(ids))
    assert set(results) == set(ids) and set(results.values()) == {1}
    assert master.task_manager.counters["rescheduled"] >= 1
    print(f"kill -9 noticed after {noticed * 1000:.0f} ms")
    del survivor


def test_sigstop_past_the_watchdog_limit_reschedules_and_drops_the_late_result(master, processes):
    period = 0.25          # declared dead after 4 x 0.25 s of silence
    # Without a keeper: a kept worker declared dead is killed (tests/test_runtime.py); one
    # without (SCIENTIFIC_MS_KEEPER=0) wakes up and answers late, which the master must drop.
    stopped = processes.python(SLAVE_SCRIPT, "faults", period, name="stopped", env={"SCIENTIFIC_MS_KEEPER": "0"})
    wait_for(lambda: slave_of(master, stopped.pid), 30, "the slave to register")
    task_id = master.requestTask("work", 1.5, "slow")
    wait_for(lambda: slave_of(master, stopped.pid)["running"], 30, "the slave to start the task")
    stopped.send_signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        wait_for(lambda: master.task_manager.counters["processes_lost"] == 1, 30, "missed heartbeats")
        print(f"\nSIGSTOP noticed after {time.monotonic() - stopped_at:.2f} s (limit 4 x {period} s)")
        helper = processes.python(SLAVE_SCRIPT, "faults", period, name="helper")
        got_id, tag, (value, pid) = master.retrieveResult(timeout=60)
        assert (got_id, value, pid) == (task_id, "slow", helper.pid)
    finally:
        stopped.send_signal(signal.SIGCONT)
    # The stopped slave wakes up, finishes, and its answer is dropped; then it rejoins.
    wait_for(lambda: master.task_manager.counters["duplicates_dropped"] == 1, 30, "the late answer")
    wait_for(lambda: slave_of(master, stopped.pid), 30, "the slave to rejoin")
    assert master.task_manager.counters["delivered"] == 1
    # Nothing more will come: the late answer was not delivered a second time.
    master.requestTask("pid")
    assert master.retrieveResult(timeout=60)[1] == "pid"


def test_a_task_that_kills_its_slaves_ends_as_slave_lost_error(processes):
    master = MasterProcess("poison", use_name_server=False, port=0, max_slave_losses=2)
    try:
        slaves = [processes.python(SLAVE_SCRIPT, "poison", name=f"slave{i}") for i in range(3)]
        poison = master.requestTask("die", 3)
        good = [master.requestTask("pid") for _ in range(5)]
        outcomes = {}
        for _ in range(6):
            try:
                task_id, tag, value = master.retrieveResult(timeout=60)
                outcomes[task_id] = value
            except TaskRaisedException as error:
                outcomes[error.task_id] = error
        assert set(outcomes) == {poison, *good}
        error = outcomes[poison]
        assert isinstance(error, TaskRaisedException) and isinstance(error.exception, SlaveLostError)
        assert "lost its slave 2 times" in str(error.exception)
        # the master sees the connection drop while the process is still exiting
        dead = wait_for(lambda: [s.pid for s in slaves if s.poll() is not None] if
                        sum(s.poll() is not None for s in slaves) == 2 else None, 30, "two slaves to exit")
        assert len(dead) == 2 and all(f"PID {pid} " in str(error.exception) for pid in dead)
    finally:
        master.shutdown()


def test_handler_exception_carries_object_and_traceback(master, processes):
    processes.python(SLAVE_SCRIPT, "faults")
    task_id = master.requestTask("fail", "bad input")
    with pytest.raises(TaskRaisedException) as caught:
        master.retrieveResult(timeout=60)
    error = caught.value
    assert error.task_id == task_id and error.tag == "fail"
    assert isinstance(error.exception, ValueError) and str(error.exception) == "bad input"
    assert "in do_fail" in error.traceback and error.__cause__ is error.exception


def test_a_slave_that_leaves_does_not_come_back_as_a_ghost(master, monkeypatch):
    """Heartbeats every 20 ms race the goodbye; none may re-register the slave after it."""
    import threading

    from scientific_ms import SlaveProcess
    monkeypatch.setenv("SCIENTIFIC_MS_SECRET", master.secret.decode())

    class OneTask(SlaveProcess):
        def terminationTest(self):
            return self.done_one

    for _ in range(5):
        slave = OneTask("faults", master_host=f"127.0.0.1:{master.port}", watchdog_period=0.02,
                        hard_exit=False)
        slave.done_one = False

        def do_once(x, slave=slave):
            slave.done_one = True
            return x

        thread = threading.Thread(target=slave.start, args=({"do_once": do_once},))
        thread.start()
        master.requestTask("once", 1)
        assert master.retrieveResult(timeout=30)[2] == 1
        thread.join(30)
        still = threading.Event()
        for _ in range(25):                         # 25 heartbeat periods after the goodbye
            assert len(master.task_manager.status()["processes"]) == 1, "a ghost slave registered"
            still.wait(0.02)
    assert master.task_manager.counters["processes_lost"] == 0


def test_an_idle_slave_takes_over_tasks_queued_behind_a_long_one(processes):
    """Work stealing with real slaves: the holder is told to drop what it had not started."""
    master = MasterProcess("steal", use_name_server=False, port=0)
    try:
        master.task_manager.expect_duration("work", 0.005)   # short: a slave queues some
        holder = processes.python(SLAVE_SCRIPT, "steal", 1.0, name="holder")
        master.wait_for_slaves(1, timeout=60)
        for _warm_up in [master.requestTask("work", 0.005, "warm-up") for _ in range(20)]:
            master.retrieveResult(timeout=60)       # the holder has learnt that tasks are short
        long_task = master.requestTask("work", 3.0, "long")
        short = [master.requestTask("work", 0.005, i) for i in range(3)]
        wait_for(lambda: sum(len(p["running"]) for p in master.task_manager.status()["processes"]) == 4,
                 30, "the holder to take the long task and queue the short ones behind it")
        processes.python(SLAVE_SCRIPT, "steal", 1.0, name="thief")
        done = []
        for _ in range(4):
            task_id, tag, (value, pid) = master.retrieveResult(timeout=60)
            done.append((task_id, pid))
        assert done[-1][0] == long_task
        assert sorted(task_id for task_id, _ in done[:3]) == sorted(short)   # not held up by the long one
        assert all(pid != holder.pid for _, pid in done[:3])
        counters = master.task_manager.counters
        assert counters["stolen"] == 3 and counters["processes_lost"] == 0
        assert counters["duplicates_dropped"] == 0      # the holder dropped them unstarted
    finally:
        master.shutdown()
