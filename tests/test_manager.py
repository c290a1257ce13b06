"""The TaskManager's logic, driven directly with a fake clock (no network)."""

import pickle
import threading

import pytest

from conftest import wait_for
from scientific_ms.core.manager import TaskManager
from scientific_ms.core.tasks import TaskState
from scientific_ms.errors import (
    ConfigurationError,
    NoTasksPendingError,
    SlaveLostError,
    TaskManagerTermination,
    UnknownProcessError,
)


@pytest.fixture
def manager(clock):
    return short_tasks(TaskManager(clock=clock))


def short_tasks(manager):
    """Tasks of "f" and "g" are known to be short, so slaves may take them in batches."""
    manager.expect_duration("f", 0.0)
    manager.expect_duration("g", 0.0)
    return manager


def answer(task, value, ok=True):
    return (task.task_id, task.assignment, ok, pickle.dumps(value), "" if ok else "Traceback...")


def test_task_ids_are_unique_strings(manager):
    ids = {manager.add_task("f", b"p") for _ in range(100)}
    assert len(ids) == 100 and all(isinstance(i, str) for i in ids)


def test_a_task_goes_through_its_states(manager):
    slave = manager.register_process("slave", tags=["f"])
    task_id = manager.add_task("f", b"params")
    assert manager.counts()["waiting"] == {"f": 1}
    [task] = manager.take_tasks(slave)
    assert (task.task_id, task.state, task.payload) == (task_id, TaskState.RUNNING, b"params")
    assert manager.counts()["running"] == {"f": 1}
    assert manager.store_answers(slave, [answer(task, 42)]) == 1
    assert manager.counts()["finished"] == {"f": 1}
    outcome = manager.get_answer()
    assert (outcome.task_id, outcome.tag, outcome.ok, pickle.loads(outcome.payload)) == (task_id, "f", True, 42)
    assert manager.counts() == {"waiting": {}, "running": {}, "finished": {}, "failed": {}}


def test_the_status_counts_answers_per_tag_once_delivered_too(manager):
    slave = manager.register_process("slave", tags=["f", "g"])
    for tag in ("f", "f", "g"):
        manager.add_task(tag, b"p")
    tasks = manager.take_tasks(slave, 3)
    manager.store_answers(slave, [answer(tasks[0], 1), answer(tasks[1], 2, ok=False), answer(tasks[2], 3)])
    for _ in range(3):
        manager.get_answer()
    assert manager.counts()["finished"] == {} and manager.counts()["failed"] == {}
    assert manager.status()["answered"] == {"finished": {"f": 1, "g": 1}, "failed": {"f": 1}}


def test_each_assignment_has_its_own_number(manager):
    slave = manager.register_process("slave", tags=["f"])
    manager.add_task("f", b"")
    manager.add_task("f", b"")
    first, second = manager.take_tasks(slave, 2)
    assert first.assignment != second.assignment


def test_first_answer_wins_and_late_answers_are_dropped(manager, clock):
    a = manager.register_process("slave", tags=["f"], watchdog_period=1.0)
    b = manager.register_process("slave", tags=["f"])
    manager.add_task("f", b"")
    [task_a] = manager.take_tasks(a)
    late = answer(task_a, "from a")
    clock.advance(5)
    assert manager.check_liveness() == [a]
    [task_b] = manager.take_tasks(b)
    assert task_b.task_id == task_a.task_id and task_b.assignment != late[1]
    assert manager.store_answers(b, [answer(task_b, "from b")]) == 1
    assert manager.store_answers(a, [late]) == 0
    assert pickle.loads(manager.get_answer().payload) == "from b"
    assert manager.counters["duplicates_dropped"] == 1
    with pytest.raises(NoTasksPendingError):
        manager.get_answer(timeout=0)


def test_a_late_answer_that_comes_first_is_taken_once(manager, clock):
    a = manager.register_process("slave", tags=["f"], watchdog_period=1.0)
    b = manager.register_process("slave", tags=["f"])
    manager.add_task("f", b"")
    [task_a] = manager.take_tasks(a)
    late = answer(task_a, "from a")
    clock.advance(5)
    manager.check_liveness()
    [task_b] = manager.take_tasks(b)
    assert manager.store_answers(None, [late]) == 1          # a comes back first: it wins
    assert manager.store_answers(b, [answer(task_b, "from b")]) == 0
    assert pickle.loads(manager.get_answer().payload) == "from a"
    assert manager.status()["processes"][-1]["running"] == []


def test_late_answer_for_a_requeued_task_removes_it_from_the_queue(manager, clock):
    a = manager.register_process("slave", tags=["f"], watchdog_period=1.0)
    manager.add_task("f", b"")
    [task] = manager.take_tasks(a)
    late = answer(task, 1)
    clock.advance(5)
    manager.check_liveness()
    assert manager.counts()["waiting"] == {"f": 1}
    assert manager.store_answers(None, [late]) == 1
    assert manager.counts()["waiting"] == {}
    b = manager.register_process("slave", tags=["f"])
    assert manager.take_tasks(b) == []


def test_lost_slave_tasks_go_to_the_front_of_the_queue(manager):
    a = manager.register_process("slave", tags=["f"])
    ids = [manager.add_task("f", b"") for _ in range(3)]
    [first] = manager.take_tasks(a)
    assert first.task_id == ids[0]
    manager.process_lost(a, "test")
    b = manager.register_process("slave", tags=["f"])
    [suspect] = manager.take_tasks(b, 3)            # first, and alone: it was with a dead slave
    assert suspect.task_id == ids[0]
    manager.store_answers(b, [answer(suspect, 0)])
    assert [t.task_id for t in manager.take_tasks(b, 3)] == ids[1:]
    assert manager.counters["rescheduled"] == 1


def test_clean_unregister_requeues_without_counting_a_loss(manager):
    a = manager.register_process("slave", tags=["f"])
    manager.add_task("f", b"")
    manager.take_tasks(a)
    manager.unregister_process(a)
    b = manager.register_process("slave", tags=["f"])
    [task] = manager.take_tasks(b)
    assert task.lost_slaves == [] and manager.counters["processes_lost"] == 0


def test_poison_task_fails_after_max_slave_losses(clock):
    manager = TaskManager(clock=clock, max_slave_losses=3)
    manager.add_task("f", b"poison")
    names = []
    for i in range(3):
        slave = manager.register_process("slave", info={"host": f"h{i}", "pid": 100 + i}, tags=["f"])
        manager.take_tasks(slave)
        manager.process_lost(slave, "connection dropped")
        names.append(f"PID {100 + i} on h{i}")
    outcome = manager.get_answer()
    assert not outcome.ok
    error = pickle.loads(outcome.payload)
    assert isinstance(error, SlaveLostError)
    assert "lost its slave 3 times" in str(error)
    assert all(name in str(error) for name in names)


def test_missed_heartbeats_declare_a_slave_dead(manager, clock):
    quiet = manager.register_process("slave", tags=["f"], watchdog_period=10.0)
    talkative = manager.register_process("slave", tags=["f"], watchdog_period=10.0)
    unwatched = manager.register_process("slave", tags=["f"], watchdog_period=None)
    clock.advance(30)
    assert manager.heartbeat(talkative)
    clock.advance(11)   # quiet: 41 s > 4 x 10 s; talkative: 11 s
    assert manager.check_liveness() == [quiet]
    assert not manager.heartbeat(quiet)
    clock.advance(1000)
    assert unwatched not in manager.check_liveness()


def test_declared_dead_slave_must_register_again(manager, clock):
    slave = manager.register_process("slave", tags=["f"], watchdog_period=1.0)
    clock.advance(10)
    manager.check_liveness()
    with pytest.raises(UnknownProcessError):
        manager.take_tasks(slave)


def test_tasks_go_only_to_slaves_that_handle_their_tag(manager):
    manager.add_task("g", b"")
    f_slave = manager.register_process("slave", tags=["f"])
    assert manager.take_tasks(f_slave, 10) == []
    assert manager.status()["unserved_tags"] == ["g"]
    g_slave = manager.register_process("slave", tags=["f", "g"])
    assert [t.tag for t in manager.take_tasks(g_slave)] == ["g"]
    assert manager.status()["unserved_tags"] == []


def test_oldest_task_first_across_tags(manager):
    slave = manager.register_process("slave", tags=["f", "g"])
    order = [manager.add_task(tag, b"") for tag in "fgfg"]
    assert [t.task_id for t in manager.take_tasks(slave, 4)] == order


def test_batches_are_capped_by_the_fair_share(manager):
    slaves = [manager.register_process("slave", tags=["f"]) for _ in range(2)]
    for _ in range(10):
        manager.add_task("f", b"")
    assert len(manager.take_tasks(slaves[0], 100)) == 5
    assert len(manager.take_tasks(slaves[1], 100)) == 2
    assert len(manager.take_tasks(slaves[1], 1)) == 1


def test_retrieve_by_tag(manager):
    slave = manager.register_process("slave", tags=["f", "g"])
    manager.add_task("f", b"")
    g_id = manager.add_task("g", b"")
    manager.store_answers(slave, [answer(t, t.tag) for t in manager.take_tasks(slave, 2)])
    assert manager.get_answer("g").task_id == g_id
    assert manager.get_answer().tag == "f"
    with pytest.raises(NoTasksPendingError, match="no task with tag 'g'"):
        manager.get_answer("g")


def test_tasks_added_together_keep_their_order_and_answers_come_back_together(manager):
    slave = manager.register_process("slave", tags=["f"])
    ids = manager.add_tasks("f", [b"a", b"b", b"c"])
    assert len(set(ids)) == 3 and manager.counters["requested"] == 3
    tasks = manager.take_tasks(slave, 3)
    assert [t.task_id for t in tasks] == ids and [t.payload for t in tasks] == [b"a", b"b", b"c"]
    manager.store_answers(slave, [answer(t, t.payload) for t in tasks])
    first_two = manager.get_answers(2)
    assert [o.task_id for o in first_two] == ids[:2]          # oldest first, no more than asked
    assert [o.task_id for o in manager.get_answers(10)] == ids[2:]   # what there is, without waiting
    with pytest.raises(NoTasksPendingError):
        manager.get_answers(10)
    with pytest.raises(ConfigurationError, match="tag"):
        manager.add_tasks("not a tag", [b""])


def test_retrieving_with_nothing_outstanding_fails_instead_of_hanging(manager):
    with pytest.raises(NoTasksPendingError, match="wait forever"):
        manager.get_answer()


def test_get_answer_times_out(manager):
    manager.add_task("f", b"")
    with pytest.raises(TimeoutError):
        manager.get_answer(timeout=0.01)


def test_exception_answers_are_kept(manager):
    slave = manager.register_process("slave", tags=["f"])
    manager.add_task("f", b"")
    [task] = manager.take_tasks(slave)
    manager.store_answers(slave, [answer(task, ValueError("bad"), ok=False)])
    outcome = manager.get_answer()
    assert not outcome.ok and outcome.traceback == "Traceback..."


def test_take_tasks_blocks_until_a_task_arrives(manager):
    slave = manager.register_process("slave", tags=["f"])
    got = []
    waiting = threading.Thread(target=lambda: got.extend(manager.take_tasks(slave, 1, timeout=30)))
    waiting.start()
    manager.add_task("f", b"x")
    waiting.join(timeout=10)
    assert not waiting.is_alive() and [t.payload for t in got] == [b"x"]


def test_terminate_wakes_every_waiter(manager):
    slave = manager.register_process("slave", tags=["f"])
    manager.add_task("g", b"")   # keeps get_answer waiting
    errors = []

    def wait(call):
        try:
            call()
        except TaskManagerTermination as error:
            errors.append(error)

    threads = [threading.Thread(target=wait, args=(lambda: manager.take_tasks(slave, 1, timeout=60),)),
               threading.Thread(target=wait, args=(manager.get_answer,))]
    for thread in threads:
        thread.start()
    manager.terminate()
    for thread in threads:
        thread.join(timeout=10)
    assert len(errors) == 2 and manager.wait_terminated(0)
    with pytest.raises(TaskManagerTermination):
        manager.add_task("f", b"")


def test_a_lost_slave_waiting_for_work_is_woken(manager):
    slave = manager.register_process("slave", tags=["f"])
    errors = []

    def wait():
        try:
            manager.take_tasks(slave, 1, timeout=60)
        except UnknownProcessError as error:
            errors.append(error)

    thread = threading.Thread(target=wait)
    thread.start()
    wait_for(lambda: manager.slaves_waiting_for_work() == 1, what="the slave to wait for work")
    manager.process_lost(slave, "test")
    thread.join(timeout=10)
    assert errors


def test_wait_until_no_slaves(manager):
    slave = manager.register_process("slave", tags=["f"])
    assert not manager.wait_until_no_slaves(0.01)
    manager.unregister_process(slave)
    assert manager.wait_until_no_slaves(0.01)


def test_shared_data(manager):
    manager.store_data("x", b"1")
    assert manager.retrieve_data("x") == b"1"
    manager.delete_data("x")
    with pytest.raises(KeyError, match="no data stored under 'x'"):
        manager.retrieve_data("x")


@pytest.mark.parametrize("tag", ["", "1abc", "has space", None, 3])
def test_bad_tags_are_refused(manager, tag):
    with pytest.raises(ConfigurationError, match="tag must be a Python identifier"):
        manager.add_task(tag, b"")


def test_bad_options_are_refused():
    with pytest.raises(ConfigurationError):
        TaskManager(missed_heartbeats=0)
    with pytest.raises(ConfigurationError):
        TaskManager(max_slave_losses=0)


def test_memory_per_waiting_task_is_small(manager):
    import tracemalloc
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(10000):
        manager.add_task("f", b"")
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown / 10000 < 500, f"{grown / 10000:.0f} bytes per waiting task"


@pytest.mark.parametrize("by_tag", [True, False], ids=["retrieve_by_tag", "retrieve_any"])
def test_delivered_records_do_not_pile_up(manager, by_tag):
    import tracemalloc
    slave = manager.register_process("slave", tags=["f", "g"])

    def wave(count):
        for _ in range(count):
            manager.add_task("f", b"")
        while True:
            tasks = manager.take_tasks(slave, 1000)
            if not tasks:
                break
            manager.store_answers(slave, [answer(t, 0) for t in tasks])
        for _ in range(count):
            manager.get_answer("f" if by_tag else None)

    wave(10000)   # warm up: tables grown to this size stay grown; that is not a leak
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(5):
        wave(10000)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    # A record kept per task (about 290 bytes) would add up to 14 MB here;
    # a table resized once is a few hundred KiB.
    assert grown / 50000 < 30, f"{grown / 50000:.0f} bytes kept per delivered task"


def test_a_requeued_task_wakes_a_live_slave_when_a_waiting_one_just_left(manager):
    leaving = manager.register_process("slave", tags=["f"])
    idle = manager.register_process("slave", tags=["f"])
    busy = manager.register_process("slave", tags=["f"])
    manager.add_task("f", b"")
    [task] = manager.take_tasks(busy)
    taken = []

    def wait_for_work(process_id):
        try:
            taken.append((process_id, manager.take_tasks(process_id, 1, timeout=60)))
        except UnknownProcessError:
            taken.append((process_id, "left"))

    threads = [threading.Thread(target=wait_for_work, args=(p,)) for p in (leaving, idle)]
    for thread in threads:
        thread.start()
    wait_for(lambda: manager.slaves_waiting_for_work() == 2, what="both slaves to wait for work")
    manager.unregister_process(leaving)        # its thread has not run yet ...
    manager.process_lost(busy, "killed")       # ... when the task comes back
    threads[1].join(timeout=10)                # far less than the 60 s poll
    assert not threads[1].is_alive(), "the idle slave was not woken for the requeued task"
    threads[0].join(timeout=10)
    assert sorted((p, tasks if tasks == "left" else [t.task_id for t in tasks]) for p, tasks in taken) == \
        [(leaving, "left"), (idle, [task.task_id])]


def test_a_stalled_master_does_not_blame_its_slaves(manager, clock):
    slave = manager.register_process("slave", tags=["f"], watchdog_period=1.0)
    manager.check_liveness(expected_interval=0.25)
    clock.advance(10)     # the reaper itself ran 10 s late: the master was stalled
    assert manager.check_liveness(expected_interval=0.25) == []
    lost_after = None
    for tick in range(1, 40):   # on time from now on, and the slave stays silent
        clock.advance(0.25)
        if manager.check_liveness(expected_interval=0.25) == [slave]:
            lost_after = tick * 0.25
            break
    assert lost_after is not None and 4.0 <= lost_after <= 4.5


def test_a_slave_waiting_for_work_is_not_declared_dead(manager, clock):
    slave = manager.register_process("slave", tags=["f"], watchdog_period=0.01)
    waiting = threading.Thread(target=lambda: manager.take_tasks(slave, 1, timeout=30))
    waiting.start()
    wait_for(lambda: manager.slaves_waiting_for_work() == 1, what="the slave to wait for work")
    clock.advance(100)
    assert manager.check_liveness() == []
    manager.add_task("f", b"")
    waiting.join(10)
    clock.advance(100)    # now it holds a task and is silent: dead
    assert manager.check_liveness() == [slave]


def test_a_slave_dying_with_a_batch_blames_nobody_and_suspects_run_alone(clock):
    manager = short_tasks(TaskManager(clock=clock, max_slave_losses=2))
    ids = [manager.add_task("f", b"") for _ in range(4)]
    a = manager.register_process("slave", tags=["f"])
    assert len(manager.take_tasks(a, 4)) == 4
    manager.process_lost(a, "killed")
    b = manager.register_process("slave", tags=["f"])
    [alone] = manager.take_tasks(b, 4)          # suspects come one at a time ...
    assert alone.task_id == ids[0] and alone.lost_slaves == []
    assert manager.take_tasks(b, 4) == []       # ... and nothing joins a running suspect
    manager.process_lost(b, "killed")           # died running it alone: now it is blamed
    c = manager.register_process("slave", tags=["f"])
    [again] = manager.take_tasks(c, 4)
    assert again.task_id == ids[0] and len(again.lost_slaves) == 1
    manager.store_answers(c, [answer(again, 0)])
    assert [t.task_id for t in manager.take_tasks(c, 4)] == [ids[1]]


def test_innocent_batch_mates_of_a_poison_task_survive(clock):
    manager = short_tasks(TaskManager(clock=clock, max_slave_losses=2))
    poison = manager.add_task("f", b"poison")
    others = [manager.add_task("f", b"fine") for _ in range(3)]
    done = set()
    for _round in range(20):
        slave = manager.register_process("slave", tags=["f"])
        tasks = manager.take_tasks(slave, 4)
        if not tasks:
            break
        if any(t.payload == b"poison" for t in tasks):
            manager.process_lost(slave, "the poison killed it")
        else:
            manager.store_answers(slave, [answer(t, 0) for t in tasks])
            done.update(t.task_id for t in tasks)
    assert done == set(others)
    outcome = manager.get_answer()
    outcome = outcome if outcome.task_id == poison else manager.get_answer()
    assert outcome.task_id == poison and not outcome.ok


def test_wait_for_slaves(manager):
    assert not manager.wait_for_slaves(1, timeout=0.01)
    joined = threading.Thread(target=lambda: manager.register_process("slave", tags=["f"]))
    joined.start()
    assert manager.wait_for_slaves(1, timeout=30)
    joined.join(10)
    manager.terminate()
    with pytest.raises(TaskManagerTermination):
        manager.wait_for_slaves(2, timeout=30)


def measured(task, value, seconds):
    return answer(task, value) + (seconds,)


def test_the_manager_learns_durations_from_the_answers(clock):
    manager = TaskManager(clock=clock)
    slave = manager.register_process("slave", tags=["f"])
    for _ in range(20):
        manager.add_task("f", b"")
    [first] = manager.take_tasks(slave, 20)             # not measured yet: one at a time
    manager.store_answers(slave, [measured(first, 0, 0.004)])
    assert len(manager.take_tasks(slave, 20)) == 6      # the task it runs + 4 ms tasks up to 20 ms


def test_an_idle_slave_takes_over_unstarted_work_and_the_first_answer_wins(manager, clock):
    holder = manager.register_process("slave", tags=["f"])
    for _ in range(3):
        manager.add_task("f", b"")
    held = manager.take_tasks(holder, 3)
    assert len(held) == 3
    thief = manager.register_process("slave", tags=["f"])   # joins late
    last_id, last_assignment = held[-1].task_id, held[-1].assignment
    assert manager.take_tasks(thief, 1) == []           # the holder may have started them all
    clock.advance(1.0)                                  # its first task has run long: the rest wait
    [stolen] = manager.take_tasks(thief, 1)             # nothing waits: it takes the last held one
    assert stolen.task_id == last_id and stolen.assignment != last_assignment
    assert manager.wait_for_news(holder, 0.0) == (False, True)
    assert manager.take_revoked(holder) == [last_assignment]
    assert manager.take_revoked(holder) == []
    late = (last_id, last_assignment, True, pickle.dumps("holder"), "")
    assert manager.store_answers(holder, [late]) == 1   # it ran anyway, and answered first
    assert manager.store_answers(thief, [answer(stolen, "thief")]) == 0
    assert manager.counters["stolen"] == 1 and manager.counters["duplicates_dropped"] == 1


def test_a_task_requested_while_a_slave_waits_is_not_prefetched_by_a_busy_one(clock):
    manager = TaskManager(clock=clock)
    manager.expect_duration("f", 0.005)      # beyond a round trip: worth an idle slave
    busy = manager.register_process("slave", tags=["f"])
    idle = manager.register_process("slave", tags=["f"])
    manager.add_task("f", b"")
    manager.take_tasks(busy, 1)
    got = []
    waiting = threading.Thread(target=lambda: got.append(manager.take_tasks(idle, 1, timeout=60)))
    waiting.start()
    wait_for(lambda: manager.slaves_waiting_for_work() == 1, what="the idle slave to wait")
    new = manager.add_task("f", b"")
    assert manager.take_tasks(busy, 10) == []           # the busy slave asks first ...
    waiting.join(10)
    assert [t.task_id for t in got[0]] == [new]          # ... the idle one gets it


def test_wait_for_running_returns_once_a_slave_has_taken_a_task(manager):
    slave = manager.register_process("slave", {}, tags=["t"], watchdog_period=None)
    assert manager.wait_for_running(1, timeout=0.01) is False   # nothing runs yet
    manager.add_task("t", b"")
    waited = []
    waiter = threading.Thread(target=lambda: waited.append(manager.wait_for_running(1, timeout=30)))
    waiter.start()
    [task] = manager.take_tasks(slave, 1)
    waiter.join(30)
    assert waited == [True] and task.state is TaskState.RUNNING


def test_a_process_without_tags_gets_no_task_and_does_not_break_requests(manager):
    # A tagless process (the master) that asks for tasks once waited with no tags;
    # an add_task during that wait failed inside the lock after queueing its task.
    master = manager.register_process("master")
    taken = []
    asking = threading.Thread(target=lambda: taken.append(manager.take_tasks(master, 1, timeout=2.0)))
    asking.start()
    try:
        task_id = manager.add_task("f", b"p")
    finally:
        asking.join(10)
    assert taken == [[]]
    slave = manager.register_process("slave", tags=["f"])
    [task] = manager.take_tasks(slave)
    assert task.task_id == task_id
