"""Per-task time limits: the handler is interrupted, the task reported, the slave freed."""

import os
import signal
import threading
import time

import pytest

from scientific_ms import MasterProcess, SlaveProcess, TaskRaisedException, TaskTimeLimitError
from scientific_ms.errors import ConfigurationError
from scientific_ms.slave.timelimit import time_limit

SLAVE_SCRIPT = os.path.join(os.path.dirname(__file__), "slave_script.py")


def test_main_thread_limit_interrupts_a_blocking_call():
    with pytest.raises(TaskTimeLimitError, match="ran longer than its time limit of 0.2 s"):
        with time_limit(0.2, "the block"):
            time.sleep(30)


def test_thread_limit_interrupts_python_code():
    caught = []

    def spin():
        try:
            with time_limit(0.2, "the loop"):
                while True:
                    pass
        except TaskTimeLimitError as error:
            caught.append(str(error))

    thread = threading.Thread(target=spin)
    thread.start()
    thread.join(30)
    assert caught == ["the loop ran longer than its time limit of 0.2 s"]


def test_no_limit_arms_nothing():
    handler = signal.getsignal(signal.SIGALRM)
    with time_limit(None, "x"):
        assert signal.getsignal(signal.SIGALRM) is handler   # no alarm of its own
        value = "ran"
    assert value == "ran"


def test_a_slow_task_is_reported_and_the_slave_goes_on(processes):
    master = MasterProcess("limits", use_name_server=False, port=0, task_time_limit=0.5)
    try:
        processes.python(SLAVE_SCRIPT, "limits")
        slow = master.requestTask("work", 60.0, "slow")
        quick = master.request_task("work", 0.01, "quick", time_limit=None)
        quick_with_room = master.request_task("work", 0.01, "roomy", time_limit=30)
        outcomes = {}
        for _ in range(3):
            try:
                task_id, tag, (value, pid) = master.retrieveResult(timeout=60)
                outcomes[task_id] = value
            except TaskRaisedException as error:
                outcomes[error.task_id] = error
        assert outcomes[quick] == "quick" and outcomes[quick_with_room] == "roomy"
        error = outcomes[slow]
        assert isinstance(error, TaskRaisedException) and isinstance(error.exception, TaskTimeLimitError)
        assert "time limit of 0.5 s" in str(error.exception)
        assert master.task_manager.counters["processes_lost"] == 0     # the slave was freed, not lost
    finally:
        master.shutdown()


def test_the_master_reports_a_task_whose_slave_cannot_stop_it(monkeypatch):
    """A slave that ignores its limit (here: a thread slave whose handler blocks in C) is overtaken."""
    import scientific_ms.core.processes as processes_module
    monkeypatch.setattr(processes_module, "TIME_LIMIT_GRACE", 0.3)
    master = MasterProcess("stuck", use_name_server=False, port=0)
    release = threading.Event()
    slave = SlaveProcess("stuck", master_host=f"127.0.0.1:{master.port}", hard_exit=False)
    monkeypatch.setenv("SCIENTIFIC_MS_SECRET", master.secret.decode())
    thread = threading.Thread(target=slave.start, args=({"do_block": lambda: release.wait(60)},))
    thread.start()
    try:
        task_id = master.request_task("block", time_limit=0.2)
        with pytest.raises(TaskRaisedException) as caught:
            master.retrieveResult(timeout=60)
        assert caught.value.task_id == task_id
        assert "which did not stop it" in str(caught.value.exception)
    finally:
        release.set()
        master.shutdown()
        thread.join(30)


@pytest.mark.parametrize("limit", [0, -1, "soon"])
def test_bad_time_limits(limit):
    master = MasterProcess("badlimit", use_name_server=False, port=0)
    try:
        with pytest.raises(ConfigurationError, match="time_limit"):
            master.request_task("f", time_limit=limit)
    finally:
        master.shutdown()
