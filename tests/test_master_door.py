"""The master's doors: the request door (plain or journaled), global state, and the Executor's methods.

No slave processes: a fake slave registered with the TaskManager plays its part.
"""

import pickle

import pytest

from scientific_ms import ConfigurationError, GlobalStateValue, MasterProcess, TaskManager
from scientific_ms.errors import NoTasksPendingError
from scientific_ms.master.global_state import GlobalStates
from scientific_ms.master.journal_keys import dumps_by_state_digest
from scientific_ms.master.journaled import JOURNALED_MASTER, JournaledTasks, PlainTasks
from scientific_ms.wire.payload import (
    OUT_OF_BAND_BYTES,
    Pickled,
    dumps_parameters,
    dumps_value,
    loads_journaled_parameters,
    loads_parameters,
    loads_value,
    state_label,
    state_placeholder,
)


def first(payload):
    """A task's first parameter (global state values are not fetched)."""
    return loads_parameters(payload, lambda label: None)[0]


def run_all(manager, slave):
    """Answer every queued task with the square of its first parameter; returns how many ran."""
    ran = 0
    while True:
        tasks = manager.take_tasks(slave, 100)
        if not tasks:
            return ran
        manager.store_answers(slave, [(t.task_id, t.assignment, True, dumps_value(first(t.payload) ** 2), "")
                                      for t in tasks])
        ran += len(tasks)


@pytest.mark.parametrize("journaled", [False, True])
def test_both_request_doors_queue_tasks_alike(tmp_path, journaled):
    manager = TaskManager()
    slave = manager.register_process("slave", {}, ["square"], None)
    door = JournaledTasks(manager, tmp_path / "job.db", "job", b"s3cret") if journaled else PlainTasks(manager)
    ids = [door.add_task("square", dumps_parameters("square", (3,)))]
    ids += door.add_tasks("square", [dumps_parameters("square", (i,)) for i in (4, 5)])
    assert len(set(ids)) == 3 and run_all(manager, slave) == 3
    assert sorted(loads_value(o.payload) for o in manager.get_answers(10)) == [9, 16, 25]
    assert door.replayed == 0
    assert (door.secret == b"s3cret") is journaled
    door.close(keep=False)
    assert (tmp_path / "job.db").exists() is False   # a clean end without keep: removed (none made if plain)


def test_the_journaled_door_replays_answers_and_tells_slaves_the_master_may_return(tmp_path):
    path = tmp_path / "job.db"
    for run in range(2):
        manager = TaskManager()
        slave = manager.register_process("slave", {}, ["square"], None)
        door = JournaledTasks(manager, path, "job", None)
        assert loads_value(manager.retrieve_data(JOURNALED_MASTER))["journal"] == str(path)
        door.add_tasks("square", [dumps_parameters("square", (i,)) for i in range(5)])
        assert run_all(manager, slave) == (5 if run == 0 else 0)
        assert sorted(loads_value(o.payload) for o in manager.get_answers(10)) == [0, 1, 4, 9, 16]
        assert door.replayed == (0 if run == 0 else 5)
        door.close()


def test_a_journaled_placeholder_matches_by_the_stored_value(tmp_path):
    path = tmp_path / "job.db"
    for run, table in enumerate(([1, 2], [1, 2], [3])):
        manager = TaskManager()
        slave = manager.register_process("slave", {}, ["square"], None)
        states = GlobalStates(manager)
        door = JournaledTasks(manager, path, "job", None)
        for _ in range(run + 1):   # another state id each run
            state_id = states.store({"table": table})
        parameters = (2, GlobalStateValue(state_id, "table"))
        payload, uses_state = states.dumps_parameters("square", parameters)
        assert uses_state
        door.add_task("square", payload, None, parameters)
        assert run_all(manager, slave) == (0 if run == 1 else 1)
        manager.get_answers(1)
        door.close()


def test_global_states_refuse_unknown_placeholders_and_say_when_one_is_used():
    states = GlobalStates(TaskManager())
    assert states.dumps_parameters("f", (1,))[1] is False
    with pytest.raises(ConfigurationError, match="deleted or never set"):
        states.dumps_parameters("f", (GlobalStateValue(1, "x"),))
    state_id = states.store({"x": 5})
    assert states.dumps_parameters("f", (1,))[1] is False
    assert states.dumps_parameters("f", (GlobalStateValue(state_id, "x"),))[1] is True
    states.delete(state_id)
    with pytest.raises(ConfigurationError, match="deleted or never set"):
        states.dumps_parameters("f", (GlobalStateValue(state_id, "x"),))
    with pytest.raises(ConfigurationError, match="no global state"):
        states.delete(state_id)


def test_journaled_parameters_read_back_with_placeholders_and_large_buffers():
    big = bytes(OUT_OF_BAND_BYTES)
    payload = dumps_parameters("f", (GlobalStateValue(3, "table"), big))
    assert type(payload) is Pickled
    placeholder, data = loads_journaled_parameters(pickle.loads(pickle.dumps(payload)))
    assert (placeholder.state_id, placeholder.name, data) == (3, "table", big)
    assert state_placeholder(state_label(7, "a_b")).name == "a_b"


def test_a_state_digest_stands_for_its_placeholder():
    def key(state_id, digest):
        return dumps_by_state_digest((GlobalStateValue(state_id, "t"), 1), lambda label: digest)
    assert key(1, b"same") == key(2, b"same") != key(1, b"other")


def test_the_executor_door_of_a_master():
    master = MasterProcess("door", use_name_server=False, port=0)
    try:
        master.store_data("function_x", b"data")
        assert master.task_manager.retrieve_data("function_x") == b"data"
        with pytest.raises(NoTasksPendingError):
            master.take_answers(10)
        first, second = master.add_pickled_tasks("square", [dumps_value((1,)), dumps_value((2,))], None)
        assert master.cancel_task(first) and not master.cancel_task(first)
        slave = master.task_manager.register_process("slave", {}, ["square"], None)
        assert run_all(master.task_manager, slave) == 1
        (outcome,) = master.take_answers(10)
        assert outcome.task_id == second and master.read_answer(outcome) == 4
        master.task_manager.unregister_process(slave)
    finally:
        master.shutdown()
