"""Memory bounds at the source: large-parameter warnings and back-pressure, with real slaves."""

import logging
import os
import threading

import pytest

from conftest import wait_for
from scientific_ms import MasterProcess
from scientific_ms.errors import ConfigurationError

SLAVE_SCRIPT = os.path.join(os.path.dirname(__file__), "slave_script.py")
BLOB = 300_000          # bytes per parameter or result
BUDGET = 1_000_000      # bytes: three blobs fit, a fourth does not


def counts(master, state):
    return sum(master.task_manager.counts()[state].values())


def test_requests_wait_for_slaves_once_waiting_parameters_exceed_the_budget(processes, caplog):
    master = MasterProcess("budget", use_name_server=False, port=0, memory_budget=BUDGET)
    requested = []
    try:
        requester = threading.Thread(
            target=lambda: requested.extend(master.requestTask("work", 0.0, bytes(BLOB)) for _ in range(12)))
        with caplog.at_level(logging.WARNING, logger="scientific_ms.core.manager"):
            requester.start()
            wait_for(lambda: "requestTask waits" in caplog.text, 30, "the request to wait")
        assert counts(master, "waiting") == 3 and requester.is_alive()   # no slave: nothing moves
        processes.python(SLAVE_SCRIPT, "budget")
        requester.join(60)
        assert not requester.is_alive() and len(requested) == 12
        results = {master.retrieveResult(timeout=60)[0] for _ in requested}
        assert results == set(requested)
        assert "setGlobalState" in caplog.text and "SCIENTIFIC_MS_MEMORY_BUDGET" in caplog.text
    finally:
        master.shutdown()


def test_slaves_get_no_new_tasks_while_unretrieved_results_exceed_the_budget(processes, caplog):
    master = MasterProcess("results", use_name_server=False, port=0, memory_budget=BUDGET)
    try:
        processes.python(SLAVE_SCRIPT, "results")
        master.wait_for_slaves(1, timeout=60)
        with caplog.at_level(logging.WARNING, logger="scientific_ms.core.manager"):
            # each result is 300 KB; requests never wait while results are over budget
            ids = [master.requestTask("work", 0.0, bytes(BLOB)) for _ in range(30)]
            wait_for(lambda: "slaves get no new tasks" in caplog.text, 60, "the slave to be held back")
            wait_for(lambda: counts(master, "running") == 0, 60, "the tasks in flight to finish")
        held = counts(master, "finished")
        # over budget after four results; what the slave had taken by then finishes too
        assert 4 <= held < 30 and counts(master, "waiting") == 30 - held
        delivered = {master.retrieveResult(timeout=60)[0] for _ in ids}   # retrieving frees room
        assert delivered == set(ids)
    finally:
        master.shutdown()


def test_large_parameters_are_named_once_per_tag(caplog):
    master = MasterProcess("large", use_name_server=False, port=0)
    try:
        big = bytes(MasterProcess.LARGE_PARAMETERS + 1)
        with caplog.at_level(logging.WARNING, logger="scientific_ms.master.master"):
            master.requestTask("big", big)
            master.requestTask("big", big)
            master.requestTask("small", b"")
        warnings = [r.getMessage() for r in caplog.records if "setGlobalState" in r.getMessage()]
        assert len(warnings) == 1 and "requestTask('big'" in warnings[0] and "17 MB" in warnings[0]
    finally:
        master.shutdown()


@pytest.mark.parametrize("budget", ["lots", 0, "-1M"])
def test_a_bad_budget_is_refused_with_the_form_it_takes(budget):
    with pytest.raises(ConfigurationError, match="memory_budget"):
        MasterProcess("badbudget", use_name_server=False, port=0, memory_budget=budget)
