"""The flow policy (core/flow.py): what a slave holds and asks for, what the master grants."""

import math
import time

import pytest

from scientific_ms.core import flow
from scientific_ms.core.registry import Registry
from scientific_ms.core.scheduling import QUEUE_SECONDS, Scheduler
from scientific_ms.core.tasks import Task
from scientific_ms.slave import feed as feed_module
from scientific_ms.slave.feed import END, TaskFeed
from scientific_ms.wire.protocol import OK, TERMINATED, Answer, TaskMessage


def test_the_moving_average_starts_at_the_first_measurement_and_follows_the_rest():
    average = flow.MovingAverage()
    assert average.value is None
    assert average.add(1.0) == 1.0
    assert average.add(2.0) == pytest.approx(1.0 + flow.WEIGHT)
    for _ in range(100):
        average.add(0.01)
    assert average.value == pytest.approx(0.01, rel=1e-3)
    assert flow.MovingAverage(0.5).value == 0.5   # a hint, until measurements take over


def test_the_round_trip_is_the_quickest_recent_call():
    trip = flow.RoundTrip()
    assert trip.value is None
    assert trip.add(0.3) == 0.3
    assert trip.add(0.2) == 0.2
    assert trip.add(0.9) == 0.2          # a slow call (large payloads, a busy master) does not count
    for _ in range(flow.RTT_WINDOW):
        trip.add(0.5)                     # the quick ones leave the window: the link got slower
    assert trip.value == 0.5
    trip.add(0.1)
    assert trip.value == 0.1
    assert trip.settled and not flow.RoundTrip().settled


def test_the_queue_target_is_the_fixed_one_near_the_master_and_covers_the_round_trip_far_from_it():
    assert flow.queue_target(None) == flow.TARGET_QUEUE_SECONDS
    assert flow.queue_target(0.0003) == flow.TARGET_QUEUE_SECONDS    # a local master
    assert flow.queue_target(0.2) == pytest.approx(flow.RTT_FACTOR * 0.2)
    assert flow.queue_target(60.0) == flow.MAX_QUEUE_SECONDS
    targets = [flow.queue_target(rtt) for rtt in (0.001, 0.01, 0.05, 0.1, 0.2, 0.4)]
    assert targets == sorted(targets)


def test_a_slave_asks_for_more_tasks_as_its_measured_round_trip_grows():
    task = 0.005
    near = flow.tasks_wanted(task, flow.queue_target(0.0005))
    assert near == math.ceil(flow.TARGET_QUEUE_SECONDS / task)         # 20 ms of work, as before
    far = flow.tasks_wanted(task, flow.queue_target(0.2))
    assert far >= 0.2 / task                                          # at least a round trip of work
    wanted = [flow.tasks_wanted(task, flow.queue_target(rtt)) for rtt in (0.001, 0.02, 0.1, 0.2)]
    assert wanted == sorted(wanted) and wanted[0] < wanted[-1]
    assert flow.tasks_wanted(1e-9, flow.MAX_QUEUE_SECONDS) == flow.MAX_BATCH


def test_long_or_unknown_tasks_are_asked_for_one_at_a_time():
    assert flow.tasks_wanted(None) == 1
    assert not flow.prefetches(None)
    assert flow.tasks_wanted(flow.PREFETCH_BELOW) == 1
    assert not flow.prefetches(flow.PREFETCH_BELOW)
    # far from its master a slave also queues tasks shorter than its target
    assert flow.prefetches(0.1, flow.queue_target(0.2))
    assert flow.tasks_wanted(0.1, flow.queue_target(0.2)) == 4
    assert not flow.prefetches(1.0, flow.queue_target(0.2))


def test_the_master_grants_what_a_slave_asks_within_bounds():
    assert flow.queue_limit(None) == flow.TARGET_QUEUE_SECONDS
    assert flow.queue_limit(0.0) == flow.TARGET_QUEUE_SECONDS        # never less than the fixed target
    assert flow.queue_limit(float("nan")) == flow.TARGET_QUEUE_SECONDS
    assert flow.queue_limit(0.4) == 0.4
    assert flow.queue_limit(1e9) == flow.MAX_QUEUE_SECONDS           # no slave hoards a whole queue
    assert flow.queue_limit(float("inf")) == flow.MAX_QUEUE_SECONDS
    assert flow.may_queue(0.0, 0.005, 0.02)
    assert not flow.may_queue(0.02, 0.005, 0.02)                    # full
    assert not flow.may_queue(0.0, 0.03, 0.02)                      # longer than the queue


def test_answers_of_long_tasks_go_at_once():
    assert flow.answer_is_urgent(1.0) and not flow.answer_is_urgent(0.001)
    assert flow.frees_room(0.01) and not flow.frees_room(0.0001)


def test_the_scheduler_uses_the_policy_constants():
    assert QUEUE_SECONDS == flow.TARGET_QUEUE_SECONDS


def _busy_slave_batch(queue_seconds, estimate=0.005, waiting=1000):
    scheduler, registry = Scheduler(3), Registry()
    scheduler.durations.record("f", estimate)
    for n in range(1, waiting + 1):
        scheduler.enqueue(Task(f"f_{n}", "f", b"", n))
    proc = registry.add("slave", {"pid": 1, "host": "h"}, frozenset({"f"}), None, 0.0)
    return scheduler.select(proc, 1000, 1, queue_seconds=queue_seconds)


def test_the_scheduler_queues_what_a_far_slave_asks_for_and_no_more_than_the_bound():
    near = _busy_slave_batch(None)
    assert len(near) == 1 + round(flow.TARGET_QUEUE_SECONDS / 0.005)
    far = _busy_slave_batch(0.4)
    assert len(far) == 1 + round(0.4 / 0.005)
    greedy = _busy_slave_batch(1e6)
    assert len(greedy) == 1 + round(flow.MAX_QUEUE_SECONDS / 0.005)


def test_a_far_slave_gets_queued_tasks_shorter_than_its_target_but_not_longer():
    assert len(_busy_slave_batch(None, estimate=0.1)) == 1
    assert len(_busy_slave_batch(0.4, estimate=0.1)) == 1 + 4
    assert len(_busy_slave_batch(0.4, estimate=0.5)) == 1


def test_the_feed_and_the_scheduler_keep_no_policy_constants_of_their_own():
    for name in ("TARGET_QUEUE_SECONDS", "PREFETCH_BELOW", "MAX_BATCH", "ANSWER_DELAY"):
        assert not hasattr(feed_module, name), name


# ------------------------------------------------------------------ the feed follows the policy

class SlowMaster:
    """A fake connection whose every call takes at least ``trip`` s (a far master)."""

    def __init__(self, count, trip):
        self.tasks = [TaskMessage(f"t{n}", n, "f", b"", None) for n in range(count)]
        self.trip = trip
        self.calls = []   # (max_tasks, wait, queue_seconds, handed)

    def claim(self):
        pass

    def exchange(self, process_id, answers, max_tasks, wait, queue_seconds=None):
        time.sleep(self.trip)   # the link's delay: a floor under the measured round trip
        if wait and not self.tasks:
            return TERMINATED, [], []
        handed, self.tasks = self.tasks[:max_tasks], self.tasks[max_tasks:]
        self.calls.append((max_tasks, wait, queue_seconds, len(handed)))
        return OK, handed, []


def test_a_feed_far_from_its_master_asks_for_work_covering_its_round_trip():
    master = SlowMaster(count=200, trip=0.05)   # a round trip of 50 ms at least
    feed = TaskFeed(master, 1, rejoin=lambda process_id, connection: process_id)
    feed.start()
    ran = 0
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, f"the feed gave {ran} tasks of 200 in 60 s"
        task = feed.next_task(timeout=1)
        if task is None:
            continue   # woken with nothing (yet)
        if task is END:
            break
        ran += 1
        feed.put_answer(Answer(task.task_id, task.assignment, True, b"", "", 0.005))   # said to take 5 ms
    assert feed.stop(timeout=10)
    assert ran == 200
    fixed = flow.tasks_wanted(0.005)              # what a slave next to its master asks for
    assert max(call[0] for call in master.calls) >= flow.tasks_wanted(0.005, flow.queue_target(0.05))
    assert max(call[0] for call in master.calls) > fixed
    holds = [call[2] for call in master.calls if call[2] is not None]
    assert holds and min(holds) >= flow.RTT_FACTOR * 0.05   # it says how much it wants held
