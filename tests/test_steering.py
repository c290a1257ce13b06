"""What users steer, on a real master with real slaves: concurrency limits per tag,
priorities, retries, and the Executor's options for them."""

import os
from pathlib import Path

import pytest

from conftest import wait_for
from scientific_ms import Executor, MasterProcess, TaskRaisedException
from scientific_ms.errors import ConfigurationError

HERE = Path(__file__).resolve().parent
SLAVE_SCRIPT = HERE / "steering_slave.py"
TIMEOUT = 90


@pytest.fixture
def master():
    master = MasterProcess("steering", use_name_server=False, port=0)
    try:
        yield master
    finally:
        master.shutdown()


def start_slaves(processes, master, count):
    for _ in range(count):
        processes.python(SLAVE_SCRIPT, master.label)
    master.wait_for_slaves(count, timeout=TIMEOUT)


def most_at_once(spans):
    """The most intervals (start, end) that overlap at any moment."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = now = 0
    for _, step in events:   # an end sorts before a start at the same instant
        now += step
        most = max(most, now)
    return most


def test_a_limited_tag_never_runs_more_tasks_at_once_than_its_limit(master, processes):
    master.limit_concurrency("span", 2)
    start_slaves(processes, master, 4)
    for _ in range(12):
        master.requestTask("span", 0.2)
    spans = [master.retrieveResult(timeout=TIMEOUT)[2] for _ in range(12)]
    assert most_at_once(spans) <= 2, sorted(spans)


def test_a_single_slave_runs_higher_priorities_first(master, processes):
    requests = [(0, "a"), (5, "b"), (1, "c"), (5, "d"), (0, "e"), (9, "f"), (-2, "g"), (1, "h")]
    for priority, value in requests:   # all wait before the slave comes
        master.request_task("order", value, priority=priority)
    start_slaves(processes, master, 1)
    ran = sorted(master.retrieveResult(timeout=TIMEOUT)[2] for _ in requests)
    order = [value for value, _, _ in sorted(ran, key=lambda result: result[1])]
    assert order == ["f", "b", "d", "c", "h", "a", "e", "g"]


def test_a_task_that_raised_runs_again_on_another_slave(master, processes, tmp_path):
    start_slaves(processes, master, 2)
    markers = tmp_path / "flaky"
    markers.mkdir()
    master.request_task("flaky", str(markers), 1, retries=2, retry_on=(OSError,))
    _, _, (attempt, pid) = master.retrieveResult(timeout=TIMEOUT)
    assert attempt == 2
    [failed_in] = [int(name.split("-")[1]) for name in os.listdir(markers) if name.startswith("1-")]
    assert pid != failed_in
    assert master.task_manager.counters["retried"] == 1


def test_retries_exhausted_deliver_the_last_exception_naming_the_attempts(master, processes, tmp_path):
    start_slaves(processes, master, 2)
    always, other = tmp_path / "always", tmp_path / "other"
    always.mkdir()
    other.mkdir()
    master.request_task("flaky", str(always), 99, retries=2)
    with pytest.raises(TaskRaisedException) as raised:
        master.retrieveResult(timeout=TIMEOUT)
    assert isinstance(raised.value.exception, OSError)
    assert "attempt 3 failed" in str(raised.value.exception)
    assert "failed on attempt 3 of 3: every attempt failed (retries=2)" in raised.value.traceback
    assert len(os.listdir(always)) == 3
    master.request_task("flaky", str(other), 99, "ValueError", retries=2, retry_on=OSError)
    with pytest.raises(TaskRaisedException, match="not one of retry_on") as raised:
        master.retrieveResult(timeout=TIMEOUT)
    assert isinstance(raised.value.exception, ValueError) and len(os.listdir(other)) == 1


def test_options_are_checked_at_the_request(master):
    with pytest.raises(ConfigurationError, match="priority must be a number"):
        master.request_task("order", 1, priority="high")
    with pytest.raises(ConfigurationError, match="retry_on must be an exception class"):
        master.request_task("order", 1, retries=1, retry_on="OSError")
    with pytest.raises(ConfigurationError, match="whole number >= 1"):
        master.limit_concurrency("order", 0)
    with pytest.raises(ConfigurationError, match="Python identifier"):
        master.limit_concurrency("not a tag", 1)


def test_executor_options_set_priorities_and_retries(slaves_import_steering_functions, tmp_path):
    import steering_functions

    with Executor(slaves=0, use_name_server=False) as ex:
        low = [ex.submit(steering_functions.order, n) for n in range(3)]
        high = [ex.options(priority=3).submit(steering_functions.order, n) for n in range(3, 6)]
        markers = tmp_path / "flaky"
        markers.mkdir()
        retried = ex.options(retries=1, priority=9).submit(steering_functions.flaky, str(markers), 1)
        ex.master.launchSlaveJobs(1)
        assert retried.result(TIMEOUT)[0] == 2
        ran = sorted((f.result(TIMEOUT) for f in low + high), key=lambda result: result[1])
        assert [value for value, _, _ in ran] == [3, 4, 5, 0, 1, 2]
        wait_for(lambda: ex.master.task_manager.counters["retried"] == 1, TIMEOUT, "the retry counted")
        with pytest.raises(ConfigurationError, match="retries must be a whole number"):
            ex.options(retries=-1)


def test_executor_limits_the_calls_of_a_function(slaves_import_steering_functions):
    import steering_functions

    with Executor(slaves=2, use_name_server=False) as ex:
        ex.limit_concurrency(steering_functions.span, 1)
        spans = list(ex.map(steering_functions.span, [0.1] * 6, timeout=TIMEOUT))
        assert most_at_once(spans) == 1, sorted(spans)
