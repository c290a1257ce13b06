"""Affinity, each rule on its own and through the TaskManager with a fake clock: a task goes
preferably to the slave that last got its key; others pass it over about its estimated
duration at most, and a slave that passed one over asks again when that ends."""

import pickle
import threading
import time

import pytest

from conftest import wait_for
from scientific_ms.core.affinity import DEFAULT_PATIENCE, Affinities, Affinity, check_affinity
from scientific_ms.core.manager import TaskManager
from scientific_ms.core.registry import Registry
from scientific_ms.core.scheduling import Scheduler
from scientific_ms.core.tasks import Task
from scientific_ms.errors import ConfigurationError


def task(number, key=None, tag="f", priority=0):
    t = Task(f"{tag}_{number}", tag, b"", number, priority=priority)
    if key is not None:
        t.affinity = Affinity(key)
    return t


def slave(registry, tags=("f",)):
    return registry.add("slave", {"pid": 1, "host": "h"}, frozenset(tags), None, 0.0)


def ids(tasks):
    return [t.task_id for t in tasks]


class Farm:
    """A scheduler and two slaves, one, two; ``select`` as the task traffic calls it."""

    def __init__(self, estimate=1.0):
        self.rules, self.registry = Scheduler(3), Registry()
        if estimate is not None:
            self.rules.durations.expect("f", estimate)
        self.one, self.two = slave(self.registry), slave(self.registry)

    def add(self, *tasks):
        for t in tasks:
            self.rules.enqueue(t)

    def select(self, proc, count=1, now=0.0):
        return self.rules.select(proc, count, 2, now=now, find=self.registry.get)

    def own(self, proc, number, key):
        """Let ``proc`` get a task with ``key`` (it owns the key from then on)."""
        self.add(task(number, key))
        assert ids(self.select(proc)) == [f"f_{number}"]


def test_a_slave_takes_a_task_of_a_key_it_owns_before_older_ones():
    farm = Farm()
    farm.own(farm.one, 1, "A")
    farm.own(farm.two, 2, "B")
    farm.add(task(3, "A"), task(4, "B"), task(5, "A"), task(6))
    assert ids(farm.select(farm.two)) == ["f_4"]           # its own key, before the older f_3
    assert ids(farm.select(farm.one) + farm.select(farm.one)) == ["f_3", "f_5"]
    assert not farm.rules.affinity.waiting                 # no task with a key waits: no more work


def test_a_task_of_another_slaves_key_is_passed_over_until_it_waited_about_its_estimate():
    farm = Farm(estimate=1.0)
    farm.own(farm.one, 1, "A")
    farm.add(task(2, "A"), task(3))
    farm.rules.affinity.soonest = float("inf")
    assert ids(farm.select(farm.two, now=10.0)) == ["f_3"]   # the task behind it, without a key
    assert ids(farm.select(farm.two, now=10.5)) == []        # f_2 is left to slave one, for now
    assert farm.rules.affinity.soonest == 11.0               # when that ends: the slave asks again then
    assert ids(farm.select(farm.two, now=11.0)) == ["f_2"]
    farm.add(task(4, "A"))
    assert ids(farm.select(farm.one, now=11.0)) == []        # slave two owns "A" now
    assert ids(farm.select(farm.two, now=11.0)) == ["f_4"]


def test_a_tag_without_an_estimate_waits_the_default_patience():
    farm = Farm(estimate=None)
    farm.own(farm.one, 1, "A")
    farm.add(task(2, "A"))
    assert farm.select(farm.two, now=5.0) == []
    assert farm.rules.affinity.soonest == 5.0 + DEFAULT_PATIENCE


def test_patience_starts_when_a_slave_first_passes_the_task_over_and_again_when_requeued():
    farm = Farm(estimate=1.0)
    farm.own(farm.one, 1, "A")
    requeued = task(2, "A")
    farm.add(requeued)                          # queued at 0, behind a long queue, say
    assert farm.select(farm.two, now=3.0) == []   # first passed over at 3
    assert farm.select(farm.two, now=3.5) == []
    farm.rules.remove(requeued)                 # cancelled, say: the counts follow
    assert not farm.rules.affinity.waiting
    requeued.rescheduled = True
    farm.rules.enqueue(requeued, front=True)
    assert farm.select(farm.two, now=4.0) == []   # afresh: passed over at 4
    assert farm.select(farm.two, now=4.5) == []
    assert ids(farm.select(farm.two, now=5.0)) == ["f_2"]


def test_the_key_of_a_slave_that_left_has_no_owner():
    farm = Farm(estimate=100.0)
    farm.own(farm.one, 1, "A")
    farm.add(task(2, "A"))
    assert farm.select(farm.two) == []
    farm.registry.remove(farm.one.process_id)
    assert ids(farm.select(farm.two)) == ["f_2"]
    assert farm.rules.affinity.owner("A", farm.registry.get) is farm.two


def test_a_higher_priority_comes_before_a_key_the_slave_owns():
    farm = Farm()
    farm.own(farm.one, 1, "A")
    farm.add(task(2, "A"), task(3, priority=1), task(4, "A", priority=1))
    assert ids(farm.select(farm.one) + farm.select(farm.one) + farm.select(farm.one)) == ["f_4", "f_3", "f_2"]


def test_a_key_whose_owner_cannot_run_the_tag_is_no_reason_to_wait():
    farm = Farm(estimate=100.0)
    farm.rules.durations.expect("g", 100.0)
    both = slave(farm.registry, ("f", "g"))
    farm.own(farm.one, 1, "A")
    farm.add(task(2, "A", tag="g"))
    assert ids(farm.select(both)) == ["g_2"]


def test_retried_tasks_and_suspects_ignore_their_key():
    farm = Farm(estimate=100.0)
    farm.own(farm.one, 1, "A")
    retried, suspect = task(2, "A"), task(3, "A")
    retried.failed_on = [(farm.one.process_id, "slave one")]
    suspect.suspect = True
    farm.add(retried, suspect)
    assert ids(farm.select(farm.two)) == ["f_2"]
    farm.two.running.clear()
    assert ids(farm.select(farm.two)) == ["f_3"]


def test_the_map_of_owners_is_bounded_least_recently_assigned_first():
    owners = Affinities(max_keys=3)
    for number, key in enumerate("ABCAD"):
        owners.assigned(task(number, key), number)
    assert len(owners) == 3
    registry = Registry()
    slaves = {n: slave(registry) for n in range(5)}
    assert owners.owner("B", slaves.get) is None      # the oldest, forgotten
    assert owners.owner("A", slaves.get) is slaves[3]   # assigned again, kept
    assert owners.owner("D", slaves.get) is slaves[4]


def test_an_affinity_key_must_be_hashable():
    assert check_affinity(("db", 3)) == ("db", 3)
    with pytest.raises(ConfigurationError, match="affinity must be a hashable value"):
        check_affinity(["db"])


# ------------------------------------------------------------------ through the TaskManager


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def take_in_thread(tm, process_id, timeout):
    got = []
    thread = threading.Thread(target=lambda: got.extend(tm.take_tasks(process_id, 1, timeout)), daemon=True)
    thread.start()
    return thread, got


def test_an_idle_slave_that_passed_a_task_over_takes_it_once_its_patience_ends():
    clock = Clock()
    tm = TaskManager(clock=clock)
    busy, idle = (tm.register_process("slave", {"host": "h", "pid": n}, ["f"]) for n in (1, 2))
    tm.expect_duration("f", 0.2)
    tm.add_task("f", pickle.dumps(1), affinity="A")
    [first] = tm.take_tasks(busy)                  # slave "busy" owns "A" and runs its task
    thread, got = take_in_thread(tm, idle, 60.0)   # a long poll: it must not last that long
    wait_for(lambda: tm.slaves_waiting_for_work() == 1, what="the idle slave waits")
    task_id = tm.add_task("f", pickle.dumps(2), affinity="A")
    deadline = time.monotonic() + 10.0
    while thread.is_alive() and time.monotonic() < deadline:
        clock.now += 0.1                           # its patience (0.2 s) ends on the fake clock
        thread.join(0.05)
    assert not thread.is_alive(), "the idle slave was not woken when the task's patience ended"
    assert [t.task_id for t in got] == [task_id]
    tm.terminate()


def test_a_task_wakes_the_waiting_slave_that_owns_its_key():
    tm = TaskManager(clock=Clock())
    one, two = (tm.register_process("slave", {"host": "h", "pid": n}, ["f"]) for n in (1, 2))
    tm.expect_duration("f", 100.0)
    tm.add_task("f", pickle.dumps(1), affinity="A")
    [first] = tm.take_tasks(one)
    tm.store_answers(one, [(first.task_id, first.assignment, True, pickle.dumps(None), "")])
    other, other_got = take_in_thread(tm, two, 60.0)   # waiting longest: a plain task would wake it
    wait_for(lambda: tm.slaves_waiting_for_work() == 1, what="slave two waits")
    owner, owner_got = take_in_thread(tm, one, 60.0)
    wait_for(lambda: tm.slaves_waiting_for_work() == 2, what="both slaves wait")
    task_id = tm.add_task("f", pickle.dumps(2), affinity="A")
    owner.join(10.0)
    assert [t.task_id for t in owner_got] == [task_id]
    tm.add_task("f", pickle.dumps(3))   # a plain task: for slave two, which still waits
    other.join(10.0)
    assert len(other_got) == 1 and other_got[0].affinity is None
    tm.terminate()
