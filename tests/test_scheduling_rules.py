"""The rules users steer, each on its own and through the TaskManager with a fake clock:
priorities, concurrency limits per tag, retries (and their journaled attempts)."""

import contextlib
import pickle
import sqlite3
import threading

import pytest

from conftest import wait_for
from scientific_ms.core.manager import TaskManager
from scientific_ms.core.registry import Registry
from scientific_ms.core.scheduling import Scheduler
from scientific_ms.core.steering import Retry, attempts_note, check_steering, retries_again, retry_elsewhere
from scientific_ms.core.tasks import Task
from scientific_ms.errors import ConfigurationError, TaskManagerTermination
from scientific_ms.master.journaled import JournaledTasks


def task(number, tag="f", priority=0):
    return Task(f"{tag}_{number}", tag, b"", number, priority=priority)


def slave(registry, tags=("f",)):
    return registry.add("slave", {"pid": 1, "host": "h"}, frozenset(tags), None, 0.0)


def ids(tasks):
    return [t.task_id for t in tasks]


def scheduler(*tags):
    scheduler = Scheduler(3)
    for tag in tags or ("f",):
        scheduler.durations.expect(tag, 0.0)
    return scheduler


# ------------------------------------------------------------------ priorities

def test_a_higher_priority_goes_first_and_equal_priorities_keep_the_request_order():
    rules, registry = scheduler(), Registry()
    proc = slave(registry)
    for t in (task(1), task(2, priority=5), task(3), task(4, priority=5), task(5, priority=-1)):
        rules.enqueue(t)
    assert ids(rules.select(proc, 5, 1)) == ["f_2", "f_4", "f_1", "f_3", "f_5"]


def test_priorities_order_the_heads_of_every_tag():
    rules, registry = scheduler("f", "g"), Registry()
    proc = slave(registry, ("f", "g"))
    rules.enqueue(task(1, "f"))
    rules.enqueue(task(2, "g", priority=2))
    rules.enqueue(task(3, "f", priority=1))
    assert ids(rules.select(proc, 3, 1)) == ["g_2", "f_3", "f_1"]


def test_a_requeued_task_keeps_its_priority():
    rules, registry = scheduler(), Registry()
    proc = slave(registry)
    low = task(1)
    rules.enqueue(low)
    assert rules.select(proc, 1, 1) == [low]
    rules.enqueue(task(2, priority=3))
    rules.enqueue(task(3))
    low.rescheduled = True            # its slave was lost: back to the front, of priority 0
    rules.enqueue(low, front=True)
    high = task(4, priority=3)
    high.rescheduled = True
    rules.enqueue(high, front=True)
    assert ids(rules.select(proc, 4, 1)) == ["f_4", "f_2", "f_1", "f_3"]


def test_an_idle_slave_takes_over_the_most_urgent_unstarted_task():
    rules, registry = scheduler(), Registry()
    busy, thief = slave(registry), slave(registry)
    held = [task(1), task(2, priority=4), task(3, priority=4), task(4)]
    for assignment, t in enumerate(held):
        t.assignment = assignment
        busy.running[assignment] = t
    assert rules.steal(thief, registry, 100.0) == (busy, held[2])   # the last of priority 4
    assert rules.steal(thief, registry, 100.0) == (busy, held[1])
    assert held[1].priority == 4                                    # it keeps its priority


def test_a_task_with_a_priority_can_be_withdrawn_from_anywhere_in_its_queue():
    rules, registry = scheduler(), Registry()
    proc = slave(registry)
    tasks = [task(n, priority=n % 3) for n in range(1, 8)]
    for t in tasks:
        rules.enqueue(t)
    rules.remove(tasks[3])            # f_4, priority 1
    rules.remove(tasks[6])            # f_7, priority 1
    assert rules.waiting_count == 5
    assert ids(rules.select(proc, 7, 1)) == ["f_2", "f_5", "f_1", "f_3", "f_6"]
    assert not rules.waiting_count


def test_a_tag_queue_that_empties_serves_plain_fifo_again():
    rules, registry = scheduler(), Registry()
    proc = slave(registry)
    rules.enqueue(task(1, priority=1))
    assert ids(rules.select(proc, 1, 1)) == ["f_1"]
    for n in (2, 3, 4):
        rules.enqueue(task(n))
    requeued = task(5)
    requeued.rescheduled = True
    rules.enqueue(requeued, front=True)
    assert ids(rules.select(proc, 4, 1)) == ["f_5", "f_2", "f_3", "f_4"]


# ------------------------------------------------------------------ concurrency limits

def test_a_limited_tag_never_has_more_tasks_assigned_than_its_limit():
    rules, registry = scheduler("f", "g"), Registry()
    proc = slave(registry, ("f", "g"))
    rules.limits.set("f", 2)
    for n in range(1, 6):
        rules.enqueue(task(n, "f"))
    rules.enqueue(task(6, "g"))
    assert ids(rules.select(proc, 10, 1, running={})) == ["f_1", "f_2", "g_6"]
    assert rules.select(proc, 10, 1, running={"f": 2}) == []
    assert ids(rules.select(proc, 10, 1, running={"f": 1})) == ["f_3"]


def test_limits_are_checked_and_can_be_lifted():
    rules = Scheduler(3)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ConfigurationError, match="whole number >= 1"):
            rules.limits.set("f", bad)
    rules.limits.set("f", 1)
    assert rules.limits.full({"f": 1}) == {"f"}
    rules.limits.set("f", None)
    assert not rules.limits and rules.limits.full({"f": 7}) == set()


def test_the_manager_holds_a_limited_tag_back_until_one_of_its_tasks_ends(clock):
    manager = TaskManager(clock=clock)
    manager.expect_duration("f", 1.0)                        # long: one task per slave at a time
    manager.limit_concurrency("f", 2)
    a, b, c = (manager.register_process("slave", tags=["f"]) for _ in range(3))
    for n in range(4):
        manager.add_task("f", pickle.dumps(n))
    [first] = manager.take_tasks(a)
    [second] = manager.take_tasks(b)
    assert manager.take_tasks(c) == []                       # two run: the limit
    manager.store_answers(a, [(first.task_id, first.assignment, True, pickle.dumps(0), "")])
    [third] = manager.take_tasks(c)                          # one ended: room for one
    manager.process_lost(b, "test")                          # its task goes back, and its room
    [again] = manager.take_tasks(a)
    assert again.task_id == second.task_id
    d = manager.register_process("slave", tags=["f"])
    assert manager.take_tasks(d) == []
    assert manager.counts()["running"] == {"f": 2}
    manager.limit_concurrency("f", 3)
    [fourth] = manager.take_tasks(d)
    assert manager.counts()["running"] == {"f": 3}
    assert third.task_id != fourth.task_id


# ------------------------------------------------------------------ retries: the rules

def test_steering_options_are_checked():
    assert check_steering(0, 0, None) is None
    assert check_steering(1.5, 2, None) == Retry(2, None)
    assert check_steering(0, 1, OSError) == Retry(1, (OSError,))
    for priority in ("high", None, True, float("nan")):
        with pytest.raises(ConfigurationError, match="priority must be a number"):
            check_steering(priority, 0, None)
    for retries in (-1, 1.0, True):
        with pytest.raises(ConfigurationError, match="retries must be a whole number"):
            check_steering(0, retries, None)
    for retry_on in ("OSError", (OSError, 3), (), int):
        with pytest.raises(ConfigurationError, match="retry_on must be an exception class"):
            check_steering(0, 1, retry_on)
    with pytest.raises(ConfigurationError, match="without retries"):
        check_steering(0, 0, OSError)


def test_a_failure_is_retried_while_attempts_are_left_and_it_matches_retry_on():
    def unknown():
        return None
    assert retries_again(Retry(2), 0, unknown)               # any exception, even one not rebuilt
    assert retries_again(Retry(2), 1, unknown)
    assert not retries_again(Retry(2), 2, unknown)           # exhausted
    assert not retries_again(None, 0, unknown)
    only_os = Retry(3, (OSError,))
    assert retries_again(only_os, 0, lambda: FileNotFoundError("x"))   # a subclass matches
    assert not retries_again(only_os, 0, lambda: ValueError("x"))
    assert not retries_again(only_os, 0, unknown)            # not rebuilt: the default only


def test_a_retried_task_goes_to_another_slave_while_one_can_run_it():
    registry = Registry()
    a, b = slave(registry), slave(registry)
    other_tag = slave(registry, ("g",))
    t = task(1)
    assert not retry_elsewhere(t, a, registry)               # never failed
    t.failed_on = [(a.process_id, a.describe())]
    assert retry_elsewhere(t, a, registry)                   # b can run it
    assert not retry_elsewhere(t, b, registry)
    t.failed_on.append((b.process_id, b.describe()))
    assert not retry_elsewhere(t, a, registry)               # failed everywhere it can run
    assert not retry_elsewhere(t, other_tag, registry)


def test_the_note_names_the_attempts_and_why_there_are_no_more():
    t = task(1)
    t.retry, t.attempts = Retry(2), 2
    t.failed_on = [(1, "slave 1 (pid 5 on h)"), (2, "slave 2 (pid 6 on h)")]
    note = attempts_note(t, False)
    assert "failed on attempt 3 of 3" in note and "every attempt failed (retries=2)" in note
    assert "slave 1 (pid 5 on h), slave 2 (pid 6 on h)" in note
    t.retry, t.attempts, t.failed_on = Retry(2, (OSError, KeyError)), 0, None
    assert "attempt 1 of 3: not retried: its exception is not one of retry_on (OSError, KeyError)" \
        in attempts_note(t, False)
    assert attempts_note(task(2), False) == ""               # no retries asked


# ------------------------------------------------------------------ retries: through the manager

def failure(t, error):
    return (t.task_id, t.assignment, False, pickle.dumps(error), f"{type(error).__name__}: {error}\n")


def test_the_manager_retries_a_failed_task_elsewhere_then_delivers_its_last_exception(clock):
    manager = TaskManager(clock=clock)
    a, b = (manager.register_process("slave", tags=["f"]) for _ in range(2))
    task_id = manager.add_task("f", pickle.dumps(1), retry=Retry(2))
    [first] = manager.take_tasks(a)
    assert manager.store_answers(a, [failure(first, OSError("disk 1"))]) == 0   # sent back, not answered
    assert manager.task_state(task_id) == "waiting" and manager.counters["retried"] == 1
    assert manager.take_tasks(a) == []                       # it failed on a: b runs it
    [second] = manager.take_tasks(b)
    manager.store_answers(b, [failure(second, OSError("disk 2"))])
    [third] = manager.take_tasks(a)                          # failed on both: either runs it
    manager.store_answers(a, [failure(third, OSError("disk 3"))])
    outcome = manager.get_answer(timeout=0)
    assert not outcome.ok and str(pickle.loads(outcome.payload)) == "disk 3"
    assert "failed on attempt 3 of 3: every attempt failed (retries=2)" in outcome.traceback
    assert outcome.traceback.endswith("OSError: disk 3\n")


def test_an_exception_not_in_retry_on_is_delivered_at_once(clock):
    manager = TaskManager(clock=clock)
    a = manager.register_process("slave", tags=["f"])
    manager.add_task("f", pickle.dumps(1), retry=Retry(5, (OSError,)))
    [first] = manager.take_tasks(a)
    manager.store_answers(a, [failure(first, ValueError("bad input"))])
    outcome = manager.get_answer(timeout=0)
    assert not outcome.ok and "not one of retry_on (OSError)" in outcome.traceback
    assert manager.counters["retried"] == 0


def test_a_task_that_succeeds_on_a_retry_is_answered_once(clock):
    manager = TaskManager(clock=clock)
    a = manager.register_process("slave", tags=["f"])
    manager.add_task("f", pickle.dumps(1), priority=4, retry=Retry(1))
    [first] = manager.take_tasks(a)
    assignment = first.assignment
    manager.store_answers(a, [failure(first, OSError("once"))])
    [again] = manager.take_tasks(a)                          # a alone: a runs it again
    assert again.task_id == first.task_id and again.assignment != assignment
    assert manager.store_answers(a, [(again.task_id, again.assignment, True, pickle.dumps("ok"), "")]) == 1
    outcome = manager.get_answer(timeout=0)
    assert outcome.ok and pickle.loads(outcome.payload) == "ok"


def test_a_resumed_journaled_job_counts_the_attempts_already_made(tmp_path, clock):
    path = tmp_path / "job.db"

    def run(failures):
        manager = TaskManager(clock=clock)
        tasks = JournaledTasks(manager, path, "job", b"secret")
        slave_id = manager.register_process("slave", tags=["f"])
        payload = pickle.dumps((7,))
        tasks.add_task("f", payload, retry=Retry(3))
        tasks.add_task("f", pickle.dumps((6,)))              # a request without retries, unanswered
        for _ in range(failures):
            [held] = manager.take_tasks(slave_id)           # retried tasks come first
            assert held.payload == payload
            manager.store_answers(slave_id, [failure(held, OSError("again"))])
        tasks.close(failed=True)
        return manager

    run(2)                                                   # killed after two failed attempts
    manager = run(1)                                         # resumed: the third fails too
    assert manager.counters["retried"] == 1
    manager = TaskManager(clock=clock)                       # resumed again: one attempt left
    tasks = JournaledTasks(manager, path, "job", b"secret")
    slave_id = manager.register_process("slave", tags=["f"])
    task_id = tasks.add_task("f", pickle.dumps((7,)), retry=Retry(3))
    [last] = manager.take_tasks(slave_id)
    manager.store_answers(slave_id, [failure(last, OSError("fourth"))])
    outcome = manager.get_answer(timeout=0)
    tasks.close(failed=True)
    assert outcome.task_id == task_id and "failed on attempt 4 of 4" in outcome.traceback


def test_a_retried_task_wakes_another_slave_than_the_one_it_failed_on(clock):
    manager = TaskManager(clock=clock)
    a, b = (manager.register_process("slave", tags=["f"]) for _ in range(2))
    manager.add_task("f", pickle.dumps(1), retry=Retry(1))
    [first] = manager.take_tasks(a)
    got = {}

    def take(process_id):
        try:
            got[process_id] = manager.take_tasks(process_id, timeout=30)
        except TaskManagerTermination:
            got[process_id] = "terminated"

    threads = []
    for process_id in (a, b):   # a's thread waits longest: a plain wake-up would go to it
        threads.append(threading.Thread(target=take, args=(process_id,)))
        threads[-1].start()
        wait_for(lambda: manager.slaves_waiting_for_work() == len(threads), 10, "the slave threads waiting")
    manager.store_answers(a, [failure(first, OSError("here"))])
    threads[1].join(30)
    manager.terminate()
    threads[0].join(30)
    assert [t.task_id for t in got[b]] == [first.task_id] and got[a] == "terminated"


def test_a_journal_written_before_retries_existed_gets_its_attempts_table(tmp_path, clock):
    path = tmp_path / "old.db"
    JournaledTasks(TaskManager(clock=clock), path, "job", b"secret").close(failed=True)
    with contextlib.closing(sqlite3.connect(path)) as db:   # as a journal of the first format left it
        db.execute("DROP TABLE attempts")
        db.commit()
    manager = TaskManager(clock=clock)
    tasks = JournaledTasks(manager, path, "job", b"secret")
    slave_id = manager.register_process("slave", tags=["f"])
    tasks.add_task("f", pickle.dumps((1,)), retry=Retry(2))
    [held] = manager.take_tasks(slave_id)
    manager.store_answers(slave_id, [failure(held, OSError("once"))])
    tasks.close(failed=True)
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert [count for count, in db.execute("SELECT count FROM attempts")] == [1]
