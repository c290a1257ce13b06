"""Resources, each rule on its own and through the TaskManager with a fake clock: what a
host offers and a task needs (parsing), holding, cores, GPU ids, unmet needs."""

import pickle

import pytest

from scientific_ms.core import unserved
from scientific_ms.core.manager import TaskManager
from scientific_ms.core.needs import Need, offer_text, parse_need, parse_offer
from scientific_ms.errors import ConfigurationError
from scientific_ms.wire.protocol import tasks_from_wire, tasks_to_wire

G = 1024 ** 3


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def manager():
    return TaskManager(clock=Clock())


def host(tm, workers, resources=None, tags=("f", "g")):
    """An agent (a keeper of -n N) offering ``resources``, and its workers' ids."""
    info = {"host": "h", "pid": 1, "resources": parse_offer(resources) if resources else {}}
    agent = tm.register_process("agent", info)
    return [tm.register_process("slave", {"host": "h", "pid": 2 + n, "agent": agent}, tags)
            for n in range(workers)]


def lone(tm, resources, tags=("f", "g")):
    return tm.register_process("slave", {"host": "l", "pid": 9, "resources": parse_offer(resources)}, tags)


def add(tm, count, tag="f", need=None):
    return [tm.add_task(tag, pickle.dumps((n,)), need=need) for n in range(count)]


def answer(tm, worker, tasks):
    tm.store_answers(worker, [(t.task_id, t.assignment, True, pickle.dumps(None), "") for t in tasks])


# ------------------------------------------------------------------ what hosts offer and tasks need

def test_offers_parse_counts_ids_and_memory_units():
    assert parse_offer("gpu=2,memory=64G") == {"gpu": [0, 1], "memory": 64 * G}
    assert parse_offer("gpu=2,3,cores=8") == {"gpu": [2, 3], "cores": 8}
    assert parse_offer({"gpu": [1], "memory": 512 * 1024 ** 2}) == {"gpu": [1], "memory": 512 * 1024 ** 2}
    assert parse_offer("memory=1.5T")["memory"] == int(1.5 * 1024 ** 4)
    assert offer_text("gpu=2,3,memory=1G", "x") == f"gpu=2,3,memory={G}"
    assert offer_text("gpu=2", "x") == "gpu=2"


@pytest.mark.parametrize("text, says", [
    ("gpus=2", "unknown resource 'gpus'"),
    ("memory=lots", "memory must be bytes or a size like 64G"),
    ("cores=0", "cores must be a whole number >= 1"),
    ("gpu=1,1", "a GPU id is given twice"),
    ("memory", "is not KIND=VALUE"),
])
def test_a_bad_offer_says_what_is_wrong_and_how_to_write_it(text, says):
    with pytest.raises(ConfigurationError, match=says):
        parse_offer(text, "--resources")


def test_needs_parse_and_needing_nothing_is_none():
    assert parse_need({"gpu": 1, "memory": "8G", "cores": 4}) == Need(1, 8 * G, 4)
    assert parse_need("gpu=1") == Need(gpu=1)
    assert parse_need({}) is None and parse_need({"cores": 1}) is None
    with pytest.raises(ConfigurationError, match="unknown resource"):
        parse_need({"disk": 3})
    with pytest.raises(ConfigurationError, match="gpu must be a whole number"):
        parse_need({"gpu": -1})


# ------------------------------------------------------------------ GPUs: ids, holding

def test_each_running_task_gets_its_own_gpu_ids_and_a_third_waits_for_one():
    tm = manager()
    a, b, c = host(tm, 3, "gpu=2")
    add(tm, 3, need=Need(gpu=1))
    first, second = tm.take_tasks(a), tm.take_tasks(b)
    assert [t.gpus for t in first + second] == [(0,), (1,)]
    assert tm.take_tasks(c) == []   # both GPUs held
    answer(tm, a, first)
    third = tm.take_tasks(c)
    assert [t.gpus for t in third] == [(0,)]   # the id given back


def test_gpu_ids_declared_are_the_ones_given():
    tm = manager()
    (a,) = host(tm, 1, "gpu=4,6")
    add(tm, 1, need=Need(gpu=2))
    assert tm.take_tasks(a)[0].gpus == (4, 6)


def test_a_task_with_resources_starts_alone_on_an_idle_worker():
    tm = manager()
    (a,) = host(tm, 1, "gpu=2")
    tm.expect_duration("f", 0.0)   # short: would be prefetched in batches
    add(tm, 3, need=Need(gpu=1))
    assert len(tm.take_tasks(a, max_tasks=10)) == 1   # not two, though a second GPU is free


def test_gpus_held_by_a_lost_slave_are_given_back():
    tm = manager()
    a, b = host(tm, 2, "gpu=1")
    add(tm, 1, need=Need(gpu=1))
    assert tm.take_tasks(a)[0].gpus == (0,)
    tm.process_lost(a, "test")
    assert tm.take_tasks(b)[0].gpus == (0,)


def test_plain_tasks_go_on_while_the_gpus_are_taken():
    tm = manager()
    a, b = host(tm, 2, "gpu=1")
    add(tm, 2, "g", need=Need(gpu=1))
    add(tm, 1, "f")
    tm.take_tasks(a)
    assert [t.tag for t in tm.take_tasks(b)] == ["f"]   # the second gpu task is passed over


def test_the_wire_carries_gpu_ids_and_none_for_plain_tasks():
    tm = manager()
    (a,) = host(tm, 1, "gpu=2")
    add(tm, 1, need=Need(gpu=2))
    records, _ = tasks_to_wire(tm.take_tasks(a))
    assert tasks_from_wire(records, None)[0].gpus == (0, 1)
    tm2 = manager()
    (b,) = host(tm2, 1)
    add(tm2, 1)
    records, _ = tasks_to_wire(tm2.take_tasks(b))
    assert tasks_from_wire(records, None)[0].gpus is None


# ------------------------------------------------------------------ memory, cores

def test_memory_is_held_while_a_task_runs():
    tm = manager()
    a, b = host(tm, 2, "memory=10G")
    add(tm, 2, need=Need(memory=6 * G))
    assert len(tm.take_tasks(a)) == 1
    assert tm.take_tasks(b) == []   # 6G + 6G > 10G


def test_a_task_needing_all_cores_runs_alone_and_its_host_keeps_them_for_it():
    tm = manager()
    a, b = host(tm, 2)   # cores: its two workers
    add(tm, 1, "g")
    plain = tm.take_tasks(b)
    add(tm, 1, "f", need=Need(cores=2))
    add(tm, 3, "g")
    assert tm.take_tasks(a) == []   # b runs: a waits for its cores, takes nothing else
    answer(tm, b, plain)
    wide = tm.take_tasks(b)   # the first to ask once both cores are free
    assert [t.tag for t in wide] == ["f"]
    assert tm.take_tasks(a) == []   # it holds both cores: a stays idle
    answer(tm, b, wide)
    assert [t.tag for t in tm.take_tasks(a)] == ["g"]


def test_a_busy_worker_prefetches_nothing_while_its_host_keeps_cores_for_a_wide_task():
    tm = manager()
    a, b = host(tm, 2)
    tm.expect_duration("g", 0.0)   # short: b would prefetch them
    add(tm, 1, "g")
    running = tm.take_tasks(b)
    add(tm, 1, "f", need=Need(cores=2))
    add(tm, 3, "g")
    assert tm.take_tasks(a) == []   # waits for b's core
    assert tm.take_tasks(b, max_tasks=5) == []   # b gets nothing queued meanwhile
    answer(tm, b, running)
    assert [t.tag for t in tm.take_tasks(a)] == ["f"]


def test_declared_cores_cap_the_workers_that_run_at_once():
    tm = manager()
    a, b, c = host(tm, 3, "cores=2")
    add(tm, 3)
    assert len(tm.take_tasks(a)) == 1 and len(tm.take_tasks(b)) == 1
    assert tm.take_tasks(c) == []


def test_hosts_have_their_own_pools():
    tm = manager()
    (a,) = host(tm, 1, "gpu=1")
    (b,) = host(tm, 1, "gpu=1")
    add(tm, 2, need=Need(gpu=1))
    assert tm.take_tasks(a)[0].gpus == (0,) and tm.take_tasks(b)[0].gpus == (0,)


def test_a_lone_slave_offers_its_own_resources():
    tm = manager()
    solo = lone(tm, "gpu=1")
    add(tm, 1, need=Need(gpu=1))
    assert tm.take_tasks(solo)[0].gpus == (0,)


def test_a_default_per_tag_applies_unless_the_request_says():
    tm = manager()
    a, b = host(tm, 2, "gpu=1")
    tm.set_resources("f", Need(gpu=1))
    add(tm, 2)
    assert len(tm.take_tasks(a)) == 1 and tm.take_tasks(b) == []
    add(tm, 1, "g")
    assert [t.tag for t in tm.take_tasks(b)] == ["g"]


# ------------------------------------------------------------------ unmet needs

def test_a_need_no_host_offers_is_reported_with_the_largest_offer():
    tm = manager()
    host(tm, 2, "gpu=1,memory=4G")
    lone(tm, "gpu=2,memory=8G")
    add(tm, 1, need=Need(gpu=1, memory=16 * G))
    add(tm, 1, "g", need=Need(gpu=2))   # the lone slave can
    status = tm.status()
    assert status["unmet_needs"] == [{"tag": "f", "need": "gpu=1,memory=16G",
                                      "largest_offer": "gpu=2,memory=8G,cores=1"}]
    message = unserved.describe("job", status)
    assert "tag 'f' needs gpu=1,memory=16G; the largest offer is gpu=2,memory=8G,cores=1" in message
    assert "--resources" in message


def test_the_unmet_warning_comes_after_a_while_and_goes_when_the_need_is_met():
    clock = Clock()
    tm = TaskManager(clock=clock)
    host(tm, 1, "memory=4G")
    add(tm, 1, need=Need(memory=16 * G))
    watch = unserved.UnservedTags("job", clock)
    assert watch.check(tm.status) is None
    clock.now = unserved.FIRST_WARNING_SECONDS + 1
    assert "needs memory=16G" in watch.check(tm.status)
    host(tm, 1, "memory=32G")
    clock.now += 2 * unserved.CHECK_SECONDS
    assert watch.check(tm.status) is None and tm.status()["unmet_needs"] == []


def test_a_host_that_left_offers_nothing_more():
    tm = manager()
    (big,) = host(tm, 1, "gpu=2")
    (small,) = host(tm, 1, "gpu=1")
    add(tm, 1, need=Need(gpu=2))
    assert tm.status()["unmet_needs"] == []
    tm.unregister_process(big)
    [entry] = tm.status()["unmet_needs"]
    assert entry["need"] == "gpu=2" and entry["largest_offer"].startswith("gpu=1,")
    assert tm.take_tasks(small) == []


def test_an_idle_worker_of_a_host_whose_cores_are_held_steals_nothing():
    clock = Clock()
    tm = TaskManager(clock=clock)
    a, b = host(tm, 2)
    (other,) = host(tm, 1)
    tm.expect_duration("g", 0.0)
    add(tm, 1, "f", need=Need(cores=2))
    assert len(tm.take_tasks(a)) == 1           # holds both cores of its host
    add(tm, 1, "g")
    assert len(tm.take_tasks(other)) == 1
    add(tm, 3, "g")
    queued = tm.take_tasks(other, max_tasks=5)  # short: queued behind the one it runs
    assert queued
    clock.now += 60                             # long enough to be taken over
    assert tm.take_tasks(b) == []               # but b's host has no core free


def test_cores_kept_for_a_worker_that_left_are_kept_no_longer():
    tm = manager()
    a, b = host(tm, 2, tags=("f",))   # a runs "f" only...
    c = tm.register_process("slave", {"host": "h", "pid": 7, "agent": tm.status()["processes"][0]["id"]}, ("g",))
    add(tm, 1, "g")
    running = tm.take_tasks(c)                 # ...c "g" only; c holds a core
    add(tm, 1, "f", need=Need(cores=3))
    assert tm.take_tasks(a) == []              # a waits for the three cores
    add(tm, 1, "g")
    answer(tm, c, running)
    assert tm.take_tasks(c) == []              # kept for a's task
    tm.unregister_process(a)
    tm.unregister_process(b)
    assert [t.tag for t in tm.take_tasks(c)] == ["g"]   # nobody left waits for them


def test_the_status_shows_what_a_host_offers_and_lends():
    tm = manager()
    (a,) = host(tm, 1, "gpu=2,memory=8G")
    add(tm, 1, need=Need(gpu=1, memory=G))
    tm.take_tasks(a)
    [agent] = [p for p in tm.status()["processes"] if p["role"] == "agent"]
    assert agent["resources"] == {"gpu": 2, "gpu_ids": [0, 1], "memory": 8 * G, "cores": 1,
                                  "free_gpu_ids": [1], "memory_held": G}


def test_the_wire_carries_the_cores_a_task_holds_and_none_without_resources():
    tm = manager()
    a, b = host(tm, 2, "cores=8,gpu=1")
    add(tm, 1, need=Need(cores=4))
    add(tm, 1, "g", need=Need(gpu=1))
    records, _ = tasks_to_wire(tm.take_tasks(a))
    assert tasks_from_wire(records, None)[0].cores == 4
    records, _ = tasks_to_wire(tm.take_tasks(b))
    assert tasks_from_wire(records, None)[0][-2:] == ((0,), 1)   # a GPU task holds its one core
    tm2 = manager()
    (c,) = host(tm2, 1, "cores=8")
    add(tm2, 1)
    records, _ = tasks_to_wire(tm2.take_tasks(c))
    assert tasks_from_wire(records, None)[0].cores is None
