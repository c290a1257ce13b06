"""The pure parts of the task manager, each on its own: states, scheduling, registry, results, the process side."""

import pytest

from scientific_ms.core.registry import Registry
from scientific_ms.core.results import ResultStore
from scientific_ms.core.scheduling import (
    BATCH_PAYLOAD_LIMIT,
    IDLE_FIRST_BEYOND,
    QUEUE_SECONDS,
    STEAL_AFTER,
    Durations,
    Scheduler,
)
from scientific_ms.core.tasks import TRANSITIONS, Task, TaskState, TaskTable, check_move


def make_tasks(count, tag="f", payload=b"", start=1):
    return [Task(f"{tag}_{n}", tag, payload, n) for n in range(start, start + count)]


def slave(registry, tags=("f",), now=0.0, period=None):
    return registry.add("slave", {"pid": 1, "host": "h"}, frozenset(tags), period, now)


# ------------------------------------------------------------------ states

def test_every_state_has_its_moves_and_delivered_is_final():
    assert set(TRANSITIONS) == set(TaskState)
    assert TRANSITIONS[TaskState.DELIVERED] == frozenset()
    task = make_tasks(1)[0]
    check_move(task, TaskState.RUNNING)
    check_move(task, TaskState.FINISHED)        # a late answer for a requeued task
    with pytest.raises(AssertionError, match="waiting -> delivered"):
        check_move(task, TaskState.DELIVERED)


# ------------------------------------------------------------------ scheduling

def short(scheduler, *tags):
    for tag in tags or ("f",):
        scheduler.durations.expect(tag, 0.0)
    return scheduler


def test_requeued_tasks_come_first_across_tags():
    scheduler, registry = short(Scheduler(3), "f", "g"), Registry()
    proc = slave(registry, tags=("f", "g"))
    old_f, new_g = make_tasks(1, "f", start=1)[0], make_tasks(1, "g", start=2)[0]
    requeued = make_tasks(1, "g", start=3)[0]
    requeued.rescheduled = True
    for task in (old_f, new_g):
        scheduler.enqueue(task)
    scheduler.enqueue(requeued, front=True)
    assert [t.task_id for t in scheduler.select(proc, 3, 1)] == ["g_3", "f_1", "g_2"]


def test_a_slave_gets_only_tags_it_handles():
    scheduler, registry = Scheduler(3), Registry()
    for task in make_tasks(2, "other"):
        scheduler.enqueue(task)
    assert scheduler.select(slave(registry, tags=("f",)), 5, 1) == []
    assert scheduler.waiting_count == 2


def test_a_batch_is_at_most_a_fair_share_of_what_waits():
    scheduler, registry = short(Scheduler(3)), Registry()
    for task in make_tasks(100):
        scheduler.enqueue(task)
    proc = slave(registry)
    assert len(scheduler.select(proc, 1000, slave_count=4)) == 25
    assert len(scheduler.select(proc, 1000, slave_count=4)) == 75 // 4


def test_a_batch_stops_at_the_payload_limit():
    scheduler, registry = short(Scheduler(3)), Registry()
    big = BATCH_PAYLOAD_LIMIT // 2 + 1
    for task in make_tasks(5, payload=b"x" * big):
        scheduler.enqueue(task)
    assert len(scheduler.select(slave(registry), 5, 1)) == 2


def test_a_suspect_runs_alone_on_an_idle_slave():
    scheduler, registry = Scheduler(3), Registry()
    suspect, other = make_tasks(2)
    suspect.suspect = True
    scheduler.enqueue(other)
    scheduler.enqueue(suspect, front=True)
    busy = slave(registry)
    busy.running[1] = make_tasks(1, start=9)[0]
    assert scheduler.select(busy, 5, 2) == []          # busy: no suspect for it
    idle = slave(registry)
    assert scheduler.select(idle, 5, 2) == [suspect]   # alone, nothing with it
    idle.running[2] = suspect
    assert scheduler.select(idle, 5, 2) == []          # nothing joins a running suspect


def test_losses_blame_only_a_task_that_ran_alone():
    scheduler, registry = Scheduler(max_slave_losses=2), Registry()
    proc = slave(registry)
    batch = make_tasks(3)
    decision = scheduler.on_loss(proc, batch, died=True)
    assert decision.requeue == batch and decision.fail == []
    assert all(t.suspect and not t.lost_slaves for t in batch)
    alone = batch[0]
    assert scheduler.on_loss(proc, [alone], died=True).requeue == [alone]
    assert scheduler.on_loss(proc, [alone], died=True).fail == [alone]   # the second loss: give up
    assert len(alone.lost_slaves) == 2


def test_a_goodbye_blames_nobody():
    scheduler, registry = Scheduler(1), Registry()
    tasks = make_tasks(1)
    decision = scheduler.on_loss(slave(registry), tasks, died=False)
    assert decision.requeue == tasks and not tasks[0].suspect and not tasks[0].lost_slaves


# ------------------------------------------------------------------ registry

def test_silence_beyond_the_missed_heartbeats_is_reported(clock):
    registry = Registry()
    quiet = slave(registry, now=clock(), period=1.0)
    slave(registry, now=clock(), period=None)              # no watchdog: never silent
    waiting = slave(registry, now=clock(), period=1.0)
    waiting.waiting = 1                                    # waiting for work: alive
    clock.advance(3.9)
    assert registry.silent(clock(), 4) == []
    clock.advance(0.2)
    [(proc, reason)] = registry.silent(clock(), 4)
    assert proc is quiet and "no heartbeat for 4.1 s" in reason


def test_a_late_check_credits_the_stall_to_every_process(clock):
    registry = Registry()
    slave(registry, now=clock(), period=1.0)
    registry.silent(clock(), 4, expected_interval=0.25)
    clock.advance(10)                                      # the checker itself ran 10 s late
    assert registry.silent(clock(), 4, expected_interval=0.25) == []


def test_slaves_are_counted_and_the_master_is_not():
    registry = Registry()
    master = registry.add("master", {}, None, None, 0.0)
    worker = slave(registry)
    assert registry.slave_count == 1 and len(registry) == 2
    assert registry.remove(worker.process_id) is worker and registry.slave_count == 0
    assert registry.remove(worker.process_id) is None
    assert registry.get(master.process_id) is master


# ------------------------------------------------------------------ results

def test_results_are_delivered_once_in_completion_order_by_any_index():
    import collections
    table, counters = TaskTable(), collections.Counter()
    store = ResultStore(table, counters)
    f1, g1, f2 = table.new("f", b"", None), table.new("g", b"", None), table.new("f", b"", None)
    for task in (f1, g1, f2):
        task_found = store.unanswered(task.task_id, None, None)
        store.settle(task_found, True, b"result", "", now=0.0)
    assert store.unanswered(f1.task_id, None, None) is None          # the first answer won
    assert [store.deliver("g").task_id, store.deliver().task_id, store.deliver("f").task_id] == \
        ["g_2", "f_1", "f_3"]                                         # g_2 no longer counted as oldest
    assert store.deliver() is None and store.deliver("f") is None and len(store) == 0
    assert table.outstanding() == 0
    assert counters == {"finished": 3, "delivered": 3, "duplicates_dropped": 1}


# ------------------------------------------------------------------ durations and balance

def test_a_tag_not_measured_counts_as_long():
    scheduler, registry = Scheduler(3), Registry()
    for task in make_tasks(10):
        scheduler.enqueue(task)
    proc = slave(registry)
    [first] = scheduler.select(proc, 10, 1)            # the task it runs, and nothing queued
    proc.running[1] = first
    assert scheduler.select(proc, 10, 1) == []         # busy: no unknown work queued behind


def test_no_task_longer_than_the_queue_is_queued_behind_another():
    scheduler, registry = Scheduler(3), Registry()
    scheduler.durations.record("f", QUEUE_SECONDS * 1.5)
    for task in make_tasks(5):
        scheduler.enqueue(task)
    assert len(scheduler.select(slave(registry), 5, 1)) == 1


def test_queued_work_is_about_one_round_trip_by_the_tags_estimates():
    scheduler, registry = Scheduler(3), Registry()
    scheduler.durations.record("f", 0.005)
    for task in make_tasks(100):
        scheduler.enqueue(task)
    # the task it runs, then 5 ms tasks queued behind it until they reach 20 ms
    assert len(scheduler.select(slave(registry), 100, 1)) == 1 + round(QUEUE_SECONDS / 0.005)


def test_measurements_move_the_estimate():
    durations = Durations()
    durations.expect("f", 1.0)
    durations.expect("f", 5.0)                          # a hint never overrides
    assert durations.estimate("f") == 1.0
    for _ in range(50):
        durations.record("f", 0.01)
    assert durations.estimate("f") == pytest.approx(0.01, rel=0.01)
    assert durations.estimate("g") is None


def test_nobody_prefetches_what_an_idle_slave_could_run():
    scheduler, registry = Scheduler(3), Registry()
    scheduler.durations.record("f", 0.005)        # beyond a round trip: worth an idle slave
    for task in make_tasks(5):
        scheduler.enqueue(task)
    busy = slave(registry)
    busy.running[1] = make_tasks(1, start=9)[0]
    assert scheduler.select(busy, 5, 2, idle_elsewhere=lambda tag: True) == []
    assert len(scheduler.select(busy, 5, 2, idle_elsewhere=lambda tag: False)) == 2   # fair share


def test_tiny_tasks_go_in_batches_even_while_a_slave_waits():
    scheduler, registry = Scheduler(3), Registry()
    scheduler.durations.record("f", IDLE_FIRST_BEYOND / 10)
    for task in make_tasks(6):
        scheduler.enqueue(task)
    busy = slave(registry)
    busy.running[1] = make_tasks(1, start=9)[0]
    assert len(scheduler.select(busy, 5, 2, idle_elsewhere=lambda tag: True)) == 3   # fair share


def test_an_idle_slave_steals_the_last_unstarted_task_of_the_most_loaded():
    scheduler, registry = short(Scheduler(3)), Registry()
    light, heavy, thief = slave(registry), slave(registry), slave(registry)
    light_tasks, heavy_tasks = make_tasks(2, start=1), make_tasks(4, start=10)
    for n, task in enumerate(light_tasks):
        light.running[n] = task
        task.assignment = n
    for n, task in enumerate(heavy_tasks):
        heavy.running[10 + n] = task
        task.assignment = 10 + n
    scheduler.durations.record("f", 0.001)
    assert scheduler.steal(thief, registry, STEAL_AFTER / 2) is None    # their first tasks just began
    assert scheduler.steal(thief, registry, 100.0) == (heavy, heavy_tasks[-1])
    assert list(heavy.running) == [10, 11, 12] and heavy.revoked == [13]   # taken from it
    heavy.running.clear()
    light.running = {0: light_tasks[0]}                 # only the task it runs: nothing to steal
    assert scheduler.steal(thief, registry, 100.0) is None
    light.running[1] = light_tasks[1]                   # one queued behind a task just started:
    light_tasks[0].started = 100.0 - STEAL_AFTER / 2    # it may have started it already
    assert scheduler.steal(thief, registry, 100.0) is None
    assert scheduler.steal(thief, registry, 100.0 + STEAL_AFTER) == (light, light_tasks[1])
    light.running[1] = light_tasks[1]
    thief.running[99] = make_tasks(1, start=99)[0]     # a busy slave does not steal
    light.running[1] = light_tasks[1]
    assert scheduler.steal(thief, registry, 100.0) is None


# ------------------------------------------------------------------ the process side

def test_a_lost_slave_is_reported_as_a_departure_and_settles_nothing(clock):
    import collections

    from scientific_ms.core.processes import Processes
    from scientific_ms.core.signals import Signals

    signals, registry, counters = Signals(), Registry(), collections.Counter()
    processes = Processes(signals, registry, Scheduler(max_slave_losses=1), counters, clock, 4)
    table = TaskTable()
    task = table.new("f", b"", None)
    table.move(task, TaskState.RUNNING)
    with signals.lock:   # its callers hold the manager's lock
        proc = registry.get(processes.register("slave", {"pid": 1, "host": "h"}, ["f"], 1.0))
        task.assignment, task.process_id = 7, proc.process_id
        registry.hand_over(proc, task)
        departure = processes.remove(proc.process_id, "connection dropped")
    assert departure.process_id == proc.process_id and departure.requeue == []
    [(failed, error)] = departure.fail          # one loss is all it may lose
    assert failed is task and "lost its slave 1 times" in str(error)
    assert task.state is TaskState.RUNNING      # the task traffic settles it, not the process side
    assert counters["processes_lost"] == 1 and registry.get(proc.process_id) is None
    assert processes.remove(proc.process_id, "again") is None


def test_the_completion_rate_counts_the_last_window_only():
    from scientific_ms.core.results import RateMeter

    meter = RateMeter(window=10)
    for second in range(30):
        meter.add(second + 0.5, 2)
    assert meter.rate(29.9, elapsed=30) == pytest.approx(2.0)
    assert meter.rate(100.0, elapsed=100) == 0.0
