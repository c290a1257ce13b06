"""scientific_ms.Pool: multiprocessing.Pool's interface, its examples run unchanged, on real slaves."""

import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import executor_functions as fx
import pool_functions as pf
from conftest import descendants_gone, wait_for
from scientific_ms import ConfigurationError, Executor, Pool, RemoteTraceback, SerializationError

pytestmark = pytest.mark.timeout(120)

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def slaves_import_test_functions(monkeypatch):
    """Spawned slaves inherit the environment: let them import the test functions."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))


@pytest.fixture(scope="module")
def pool():
    """One Pool of two local slaves for the tests that only call (slaves start once)."""
    with Pool(2, use_name_server=False) as shared:
        yield shared


def requested(pool):
    return pool.executor.master.task_manager.counters["requested"]


# ------------------------------------------------------------------ the multiprocessing docs' examples

def test_the_examples_of_the_multiprocessing_docs(pool, tmp_path):
    # https://docs.python.org/3/library/multiprocessing.html#using-a-pool-of-workers, with the slave's
    # time.sleep(10) replaced by a call that waits for the test to release it.
    assert pool.map(pf.f, range(10)) == [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]
    assert sorted(pool.imap_unordered(pf.f, range(10))) == [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]
    res = pool.apply_async(pf.f, (20,))
    assert res.get(timeout=60) == 400
    res = pool.apply_async(os.getpid, ())
    assert res.get(timeout=60) in pool.executor.master.spawned_slaves
    multiple_results = [pool.apply_async(os.getpid, ()) for i in range(4)]
    assert {res.get(timeout=60) for res in multiple_results} <= set(pool.executor.master.spawned_slaves)
    release = tmp_path / "release"
    res = pool.apply_async(fx.wait_for_file, (str(release),))
    with pytest.raises(multiprocessing.TimeoutError):
        res.get(timeout=1)
    with pytest.raises(TimeoutError):   # the builtin one catches it too
        res.get(timeout=0)
    assert not res.ready()
    release.touch()
    assert res.get(timeout=60) == "released" and res.successful()


def test_imap_starmap_and_the_async_variants(pool):
    assert list(pool.imap(pf.f, range(10))) == [x * x for x in range(10)]
    assert list(pool.imap(pf.f, (x for x in range(25)), chunksize=4)) == [x * x for x in range(25)]
    assert sorted(pool.imap_unordered(pf.f, iter(range(25)), chunksize=3)) == sorted(x * x for x in range(25))
    assert list(pool.imap(pf.f, [])) == []
    assert pool.starmap(pow, [(2, 5), (3, 2)]) == [32, 9]
    assert pool.starmap_async(fx.add, [(1, 2), (3, 4)]).get(timeout=60) == [3, 7]
    assert pool.apply(fx.add, (1,), {"y": 2}) == 3
    assert pool.map(pf.f, []) == []
    got = []
    result = pool.map_async(pf.f, range(5), callback=got.append)
    assert result.get(timeout=60) == [0, 1, 4, 9, 16] and got == [[0, 1, 4, 9, 16]]
    result = pool.apply_async(pf.f, (3,), callback=got.append)
    assert result.get(timeout=60) == 9 and got[-1] == 9
    assert pool.map(lambda x: x + 1, range(3)) == [1, 2, 3]   # a lambda goes by value


def test_a_call_s_exception_is_raised_in_the_caller_with_the_remote_traceback(pool):
    errors = []
    result = pool.apply_async(fx.fail, ("boom",), error_callback=errors.append)
    result.wait(60)
    assert result.ready() and not result.successful()
    assert len(errors) == 1 and isinstance(errors[0], ValueError) and str(errors[0]) == "boom"
    with pytest.raises(ValueError, match="boom") as caught:
        result.get()
    assert isinstance(caught.value.__cause__, RemoteTraceback) and "raise ValueError" in str(caught.value.__cause__)
    with pytest.raises(ValueError, match="invalid literal"):
        pool.map(int, ["1", "2", "x", "4"], chunksize=1)
    errors.clear()
    assert pool.map_async(int, ["y"], error_callback=errors.append).wait(60) is None
    assert isinstance(errors[0], ValueError)
    iterator = pool.imap(int, ["1", "z", "3"])
    assert next(iterator) == 1
    with pytest.raises(ValueError):
        next(iterator)
    assert next(iterator) == 3   # as multiprocessing's imap of chunksize 1: the others still come
    with pytest.raises(SerializationError):
        pool.apply_async(pf.f, (threading.Lock(),))
    errors.clear()
    with pytest.raises(SerializationError):   # in the third chunk: the first two are withdrawn if waiting
        pool.map_async(pf.f, [1, 2, threading.Lock()], chunksize=1, error_callback=errors.append)
    assert len(errors) == 1 and isinstance(errors[0], SerializationError)


def test_chunksize_batches_calls_per_task_and_map_computes_one_as_multiprocessing_does(pool):
    before = requested(pool)
    assert pool.map(pf.f, range(23), chunksize=5) == [x * x for x in range(23)]
    assert requested(pool) - before == 5
    before = requested(pool)
    assert pool.map(pf.f, range(100)) == [x * x for x in range(100)]   # 2 slaves: chunks of 13
    assert requested(pool) - before == 8
    before = requested(pool)
    assert list(pool.imap(pf.f, range(10), chunksize=4)) == [x * x for x in range(10)]
    assert requested(pool) - before == 3
    with pytest.raises(ValueError, match="chunksize"):
        pool.map(pf.f, range(3), chunksize=0)


def test_imap_next_with_a_timeout(pool, tmp_path):
    release = tmp_path / "release"
    iterator = pool.imap(fx.add_or_block, [1, 2], chunksize=1)
    assert iterator.next(timeout=60) == 1
    blocked = pool.imap(fx.wait_for_file, [str(release)])
    with pytest.raises(multiprocessing.TimeoutError):
        blocked.next(timeout=0.5)
    release.touch()
    assert blocked.next(timeout=60) == "released"
    with pytest.raises(StopIteration):
        blocked.next(timeout=60)


# ------------------------------------------------------------------ life cycle and options

def test_close_join_and_a_closed_pool_refuses_work():
    pool = Pool(1, use_name_server=False)
    try:
        with pytest.raises(ValueError, match="still running"):
            pool.join()
        results = [pool.apply_async(pf.f, (x,)) for x in range(5)]
        iterator = pool.imap(pf.f, range(5))
        pool.close()
        with pytest.raises(ValueError, match="Pool not running"):
            pool.apply_async(pf.f, (1,))
        pool.join()
        assert [r.get(timeout=0) for r in results] == [0, 1, 4, 9, 16]
        assert list(iterator) == [0, 1, 4, 9, 16]
        assert pool.executor.master.task_manager.terminated
    finally:
        pool.terminate()
    with pytest.raises(NotImplementedError):
        pickle.dumps(pool)


def test_terminate_fails_the_calls_not_done(tmp_path):
    pool = Pool(1, use_name_server=False)
    started = tmp_path / "started"
    running = pool.apply_async(fx.wait_for_file, (str(tmp_path / "never"), str(started)))
    waiting = pool.apply_async(pf.f, (3,))
    mapped = pool.map_async(pf.f, range(10), chunksize=2)
    wait_for(started.exists, 60, "the call to start")
    pool.terminate()
    for result in (running, waiting, mapped):
        assert result.ready() and not result.successful()
        with pytest.raises(RuntimeError):
            result.get(timeout=0)
    pool.join()


def test_the_initializer_runs_once_in_each_slave_before_its_first_call():
    with Pool(2, pf.configure, (42,), use_name_server=False) as pool:
        answers = pool.map(pf.read_configuration, range(40), chunksize=1)
        assert {value for value, _pid in answers} == {42}
    with pytest.raises(ConfigurationError, match="maxtasksperchild"):
        Pool(2, maxtasksperchild=10)
    with pytest.raises(ValueError, match="processes"):
        Pool(0)
    with pytest.raises(TypeError, match="initializer"):
        Pool(1, initializer=42)


def test_a_pool_on_a_given_executor_leaves_it_running(tmp_path):
    with Executor(slaves=1, use_name_server=False) as ex:
        with Pool(executor=ex) as pool:
            assert pool.map(pf.f, range(5)) == [0, 1, 4, 9, 16]
        assert ex.submit(pf.f, 4).result(timeout=60) == 16
        pool = Pool(executor=ex)
        release, started = tmp_path / "release", tmp_path / "started"
        blocked = pool.apply_async(fx.wait_for_file, (str(release), str(started)))
        mapped = pool.map_async(pf.f, range(10), chunksize=2)
        wait_for(started.exists, 60, "the call to start")
        pool.terminate()   # withdraws the map's tasks (the slave may hold some: they run later)
        with pytest.raises(RuntimeError, match="terminated"):
            mapped.get(timeout=0)
        release.touch()
        assert blocked.get(timeout=60) == "released"
        assert ex.submit(pf.f, 5).result(timeout=60) == 25
        with pytest.raises(ConfigurationError, match="executor"):
            Pool(2, executor=ex)


def test_a_pool_served_by_the_slaves_of_its_label(processes):
    with Pool(label=f"pool-{os.getpid()}", use_name_server=False) as pool:
        result = pool.map_async(pf.f, range(20))
        slave = processes.task_manager("slave", pool.label, name="slave")
        assert result.get(timeout=60) == [x * x for x in range(20)]
        pool.close()
        pool.join()
    code, output = processes.finish(slave, 60)
    assert code == 0, output


def test_a_slave_killed_during_a_map_loses_nothing():
    with Pool(2, use_name_server=False, slave_restarts=1) as pool:
        master = pool.executor.master
        wait_for(lambda: len(master.spawned_slaves) >= 2, 30, "two slave processes")
        master.wait_for_slaves(2, timeout=30)
        victim = master.spawned_slaves[0]
        counters = master.task_manager.counters
        result = pool.map_async(fx.square_with_pid, range(300), chunksize=3)   # 100 tasks of 30 ms
        wait_for(lambda: counters["delivered"] >= 10, 60, "the map to be under way")
        os.kill(victim, signal.SIGKILL)
        answers = result.get(timeout=100)
        assert [value for value, _pid in answers] == [x * x for x in range(300)]
        assert victim in {pid for _value, pid in answers}
        assert counters["processes_lost"] == 1 and counters["rescheduled"] >= 1
        assert counters["delivered"] == counters["requested"] == 100   # each chunk delivered once


def test_leaving_the_with_block_ends_the_slaves():
    start = time.monotonic()
    with Pool(1, use_name_server=False) as pool:
        assert pool.apply(pf.f, (2,)) == 4
        pids = list(pool.executor.master.spawned_slaves)
    assert pool.executor.master.task_manager.terminated
    assert not descendants_gone(pids, 30), "the slaves outlived their pool"
    assert time.monotonic() - start < 120


def test_importing_the_package_imports_neither_the_pools_nor_joblib():
    code = "import sys, scientific_ms; print(sorted(m for m in ('joblib', 'scientific_ms.pools') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out
