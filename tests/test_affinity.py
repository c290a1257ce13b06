"""Affinity on a real master with real slaves: tasks of a key stay on the slave that ran
the last one, and a task whose slave is busy is not held up while another slave is idle."""

import collections
import os
import time

import pytest

from conftest import wait_for
from scientific_ms import Executor, MasterProcess
from scientific_ms.errors import ConfigurationError
from test_steering import start_slaves

TIMEOUT = 90


@pytest.fixture
def master():
    master = MasterProcess("affinity", use_name_server=False, port=0)
    try:
        yield master
    finally:
        master.shutdown()


def test_tasks_of_a_key_run_on_the_slave_that_ran_the_last_one(master, processes):
    start_slaves(processes, master, 2)
    keys = {}
    for n in range(20):
        keys[master.request_task("where", 0.2, affinity="AB"[n % 2])] = "AB"[n % 2]
    pids = collections.defaultdict(collections.Counter)
    for _ in keys:
        task_id, _, pid = master.retrieveResult(timeout=TIMEOUT)
        pids[keys[task_id]][pid] += 1
    for key in "AB":
        [(pid, count)] = pids[key].most_common(1)
        assert count >= 7, f"tasks of key {key} ran on {dict(pids[key])}"


def test_a_task_whose_slave_is_busy_goes_to_an_idle_one_after_about_its_estimate(master, processes, tmp_path):
    start_slaves(processes, master, 2)
    master.task_manager.expect_duration("where", 0.5)
    markers = tmp_path / "started"
    markers.mkdir()
    long_task = master.request_task("where", 120.0, str(markers), affinity="model")
    wait_for(lambda: os.listdir(markers), TIMEOUT, "the long task started")
    [busy] = [int(name) for name in os.listdir(markers)]
    asked = time.monotonic()
    short_task = master.request_task("where", 0.0, affinity="model")
    task_id, _, pid = master.retrieveResult(timeout=TIMEOUT)
    waited = time.monotonic() - asked
    assert task_id == short_task and pid != busy, f"it ran on {pid}, the busy slave is {busy}"
    assert master.task_manager.task_state(long_task) == "running", f"it waited {waited:.2f} s"
    print(f"the idle slave took it after {waited:.2f} s (estimate 0.5 s)")


def test_executor_options_take_an_affinity(slaves_import_steering_functions):
    import steering_functions

    with Executor(slaves=1, use_name_server=False) as ex:
        futures = [ex.options(affinity=("db", n % 2)).submit(steering_functions.where, 0.0) for n in range(4)]
        assert len({f.result(TIMEOUT) for f in futures}) == 1   # one slave ran them all
        with pytest.raises(ConfigurationError, match="affinity must be a hashable value"):
            ex.options(affinity={"db": 1})
