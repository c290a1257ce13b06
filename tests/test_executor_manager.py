"""The TaskManager methods the Executor relies on, driven directly (no network): cancel_task and ANY_TAG."""

import pickle
import threading

import pytest

from conftest import wait_for
from scientific_ms.core.manager import TaskManager
from scientific_ms.core.tasks import ANY_TAG
from scientific_ms.errors import NoTasksPendingError


@pytest.fixture
def manager():
    return TaskManager(clock=lambda: 1000.0)


def test_cancel_task_withdraws_only_a_waiting_task(manager):
    slave = manager.register_process("slave", tags=["f"])
    first, second, third = (manager.add_task("f", b"p") for _ in range(3))
    assert manager.cancel_task(third) and manager.cancel_task(first)   # the newest, then the oldest
    assert not manager.cancel_task(third)                               # already withdrawn
    assert not manager.cancel_task("f_999")                             # unknown
    [task] = manager.take_tasks(slave, 10)
    assert task.task_id == second
    assert not manager.cancel_task(second)                              # running: too late
    manager.store_answers(slave, [(second, task.assignment, True, pickle.dumps(2), "")])
    assert not manager.cancel_task(second)                              # answered
    assert manager.get_answer().task_id == second
    assert manager.counts()["waiting"] == {} and manager.counters["cancelled"] == 2
    with pytest.raises(NoTasksPendingError):
        manager.get_answer()


def test_a_late_answer_for_a_withdrawn_task_is_dropped(manager):
    dead = manager.register_process("slave", tags=["f"], watchdog_period=1.0)
    task_id = manager.add_task("f", b"p")
    [task] = manager.take_tasks(dead)
    manager.process_lost(dead, "test")          # back to the queue ...
    assert manager.cancel_task(task_id)         # ... and withdrawn there
    assert manager.store_answers(dead, [(task_id, task.assignment, True, pickle.dumps(1), "")]) == 0
    assert manager.counters["duplicates_dropped"] == 1
    with pytest.raises(NoTasksPendingError):
        manager.get_answer()


def test_cancelling_the_last_task_wakes_a_waiting_get_answer(manager):
    task_id = manager.add_task("f", b"p")
    raised = []

    def wait():
        try:
            manager.get_answer(timeout=30)
        except NoTasksPendingError as error:
            raised.append(error)

    waiter = threading.Thread(target=wait)
    waiter.start()
    wait_for(lambda: manager._answer_ready._waiters, 10, "get_answer to wait")
    assert manager.cancel_task(task_id)
    waiter.join(30)
    assert not waiter.is_alive() and raised


def test_a_slave_registered_with_any_tag_runs_every_tag_and_serves_it(manager):
    picky = manager.register_process("slave", tags=["g"])
    manager.add_task("f", b"1")
    manager.add_task("h", b"2")
    assert manager.take_tasks(picky, 10) == []
    assert manager.status()["unserved_tags"] == ["f", "h"]
    anything = manager.register_process("slave", tags=[ANY_TAG])
    assert manager.status()["unserved_tags"] == []
    manager.expect_duration("f", 0.0)          # short: it may take more than the one it runs
    manager.expect_duration("h", 0.0)
    taken = manager.take_tasks(anything, 10) + manager.take_tasks(anything, 10)   # a fair share each time
    assert sorted(t.tag for t in taken) == ["f", "h"]


def test_any_tag_slave_waiting_for_work_is_woken_by_any_task(manager):
    anything = manager.register_process("slave", tags=[ANY_TAG])
    taken = []
    worker = threading.Thread(target=lambda: taken.extend(manager.take_tasks(anything, 1, timeout=30)))
    worker.start()
    manager.add_task("whatever", b"x")
    worker.join(30)
    assert [t.tag for t in taken] == ["whatever"]


def test_the_lean_condition_of_futures_behaves_as_a_condition_on_an_rlock():
    from scientific_ms.executor.futures import _LeanCondition
    condition = _LeanCondition()
    with condition:
        with condition:                       # reentrant, as a Future's must be
            assert not condition.wait(0.01)   # times out, and gives the lock back in between
        condition.notify_all()
    with pytest.raises(RuntimeError):
        condition.notify()                    # not owned
    woken = []

    def waiter():
        with condition:
            woken.append(condition.wait(30))

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_for(lambda: condition._waiters, 10, "the thread to wait")
    assert condition.acquire(timeout=10)
    condition.notify_all()
    condition.release()
    thread.join(30)
    assert woken == [True]


def test_our_future_sets_every_field_of_a_concurrent_futures_future():
    """Future.__init__ sets the base class's fields itself (see its comment): none may be missing."""
    import concurrent.futures

    from scientific_ms.executor.futures import Future
    assert set(vars(concurrent.futures.Future())) <= set(vars(Future(None, None)))
