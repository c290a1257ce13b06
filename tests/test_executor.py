"""The Executor: concurrent.futures on the farm, with real slave processes on real sockets."""

import concurrent.futures
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

import executor_functions as fx
from conftest import EXAMPLES, wait_for
from scientific_ms import Executor, RemoteTraceback, SerializationError, SlaveLostError, TaskTimeLimitError
from scientific_ms.errors import ConfigurationError

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def slaves_import_test_functions(monkeypatch):
    """Spawned slaves inherit the environment: let them import executor_functions."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))


@pytest.fixture
def executor():
    with Executor(slaves=2, use_name_server=False) as ex:
        yield ex


def slave_pids(ex, count):
    wait_for(lambda: len(ex.master.spawned_slaves) >= count, 20, f"{count} slave processes")
    ex.master.wait_for_slaves(count, timeout=30)
    return ex.master.spawned_slaves


def test_submit_map_wait_and_as_completed(executor):
    futures = [executor.submit(fx.add, i, y=10) for i in range(50)]
    done, not_done = concurrent.futures.wait(futures, timeout=60)
    assert not not_done
    assert sorted(f.result() for f in concurrent.futures.as_completed(futures)) == list(range(10, 60))
    assert list(executor.map(fx.add, range(20), range(20))) == [2 * i for i in range(20)]
    assert list(executor.map(fx.add, range(23), chunksize=4)) == list(range(23))


def test_lambdas_and_closures_go_by_value(executor):
    offset = 7

    def shifted(x):
        return x + offset

    assert executor.submit(lambda x: x * 3, 5).result(timeout=60) == 15
    assert list(executor.map(shifted, range(5), chunksize=2)) == [7, 8, 9, 10, 11]
    # an argument that refers to __main__-less code (a closure) goes by value too
    assert executor.submit(fx.add, 1, y=2).result(timeout=60) == 3


def test_remote_exception_is_raised_with_the_remote_traceback_as_cause(executor):
    future = executor.submit(fx.fail, "bad input 42")
    with pytest.raises(ValueError, match="bad input 42") as caught:
        future.result(timeout=60)
    cause = caught.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "in fail" in cause.traceback and "raise ValueError(message)" in cause.traceback
    assert isinstance(future.exception(), ValueError)
    with pytest.raises(ValueError):   # map raises the first failure when it reaches it
        list(executor.map(fx.fail, ["x", "y"]))


def test_an_unpicklable_argument_raises_in_submit(executor):
    with pytest.raises(SerializationError, match=r"submit\(add, \.\.\.\): argument #2 \(lock\)"):
        executor.submit(fx.add, 1, threading.Lock())
    with pytest.raises(SerializationError, match="keyword argument 'y'"):
        executor.submit(fx.add, 1, y=threading.Lock())
    with pytest.raises(SerializationError, match="map item 2"):
        executor.map(fx.add, [1, threading.Lock()], chunksize=2)
    with pytest.raises(SerializationError, match=r"submit\(add, \.\.\.\): argument #1 \(lock\)"):
        executor.map(fx.add, [threading.Lock()])
    with pytest.raises(SerializationError, match="argument #2 of map item 1"):
        executor.map(fx.add, [1, 2], [threading.Lock(), 3], chunksize=2)
    assert executor.master.task_manager.counters["requested"] == 0   # nothing reached the queue


def test_a_map_that_fails_in_the_middle_of_submitting_withdraws_what_it_queued():
    with Executor(slaves=0, use_name_server=False) as ex:
        with pytest.raises(SerializationError, match="map item 1"):
            ex.map(fx.add, [1] * 6 + [threading.Lock()], chunksize=2)   # three chunks went in ...
        counters = ex.master.task_manager.counters
        assert counters["requested"] == counters["cancelled"] == 3      # ... and were withdrawn


def test_a_map_left_early_or_timed_out_withdraws_its_waiting_calls():
    with Executor(slaves=0, use_name_server=False) as ex:
        counters = ex.master.task_manager.counters
        in_order = ex.map(fx.add, range(4))
        in_order.close()                                   # stopped before reading anything
        assert counters["cancelled"] == 4
        chunked = ex.map(fx.add, range(10), chunksize=2)
        del chunked                                        # dropped: its generator is closed
        assert counters["cancelled"] == 4 + 5
        with pytest.raises(TimeoutError):
            next(ex.map(fx.add, range(3), timeout=0.05))   # no slave: the first result never comes
        assert counters["cancelled"] == 9 + 3              # the one waited for included
        assert ex.master.task_manager.counts()["waiting"] == {}


def test_shutdown_cancel_futures_cancels_a_pending_map():
    ex = Executor(slaves=0, use_name_server=False)
    results = ex.map(fx.add, range(6), chunksize=2)
    ex.shutdown(wait=True, cancel_futures=True)
    with pytest.raises(concurrent.futures.CancelledError):
        next(results)
    assert ex.master.task_manager.counters["cancelled"] == 3


def test_a_slave_busy_with_a_long_call_hands_in_the_answers_it_has(tmp_path):
    """Answers of short calls do not wait in the slave for the long call queued behind them."""
    release = tmp_path / "release"
    with Executor(slaves=1, use_name_server=False) as ex:
        assert list(ex.map(fx.add_or_block, range(200))) == list(range(200))   # durations measured: short
        short = [ex.submit(fx.add_or_block, i) for i in range(300)]
        long = ex.submit(fx.add_or_block, -1, str(release))   # same function: the slave may queue it
        try:
            done, _ = concurrent.futures.wait(short, timeout=30)
            assert len(done) == len(short), "the answers of short calls stayed in the slave"
        finally:
            release.touch()   # unblocks the long call, whatever happened
        assert long.result(timeout=60) == "released"
        assert [f.result() for f in short] == list(range(300))


def test_time_limit_raises_a_timeout_error(executor):
    future = executor.options(time_limit=0.5).submit(time.sleep, 60)
    with pytest.raises(TaskTimeLimitError, match="time limit of 0.5 s") as caught:
        future.result(timeout=60)
    assert isinstance(caught.value, TimeoutError)
    assert executor.submit(fx.add, 2, 3).result(timeout=60) == 5   # the slave went on serving
    with pytest.raises(ConfigurationError, match="time_limit"):
        executor.options(time_limit=-1)


def test_cancel_withdraws_a_waiting_call_and_never_runs_it(tmp_path):
    release, started = tmp_path / "release", tmp_path / "started"
    with Executor(slaves=0, use_name_server=False) as ex:
        blocker = ex.submit(fx.wait_for_file, str(release), str(started))
        doomed = [ex.submit(fx.touch, str(tmp_path / f"ran{i}")) for i in range(5)]
        kept = ex.submit(fx.touch, str(tmp_path / "kept"))
        assert all(f.cancel() for f in doomed)
        assert all(f.cancelled() and f.done() for f in doomed)
        assert ex.master.task_manager.counts()["waiting"] == {"wait_for_file": 1, "touch": 1}
        ex.master.launchSlaveJobs(1)
        wait_for(started.exists, 30, "the blocking call to start")
        assert not blocker.cancel()          # running: too late
        release.touch()
        assert blocker.result(timeout=60) == "released"
        assert kept.result(timeout=60) == str(tmp_path / "kept")
        assert not blocker.cancelled() and not kept.cancel()
    assert not any((tmp_path / f"ran{i}").exists() for i in range(5))
    with pytest.raises(concurrent.futures.CancelledError):
        doomed[0].result()


def test_shutdown_cancel_futures_and_submit_after_shutdown(tmp_path):
    ex = Executor(slaves=0, use_name_server=False)
    futures = [ex.submit(fx.add, i) for i in range(100)]
    with pytest.raises(TimeoutError):
        futures[0].result(timeout=0.05)
    assert concurrent.futures.wait(futures, timeout=0.05).not_done == set(futures)
    ex.shutdown(wait=True, cancel_futures=True)
    assert all(f.cancelled() for f in futures)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(fx.add, 1)
    assert ex.master.task_manager.terminated


def test_a_slave_killed_in_the_middle_of_a_map_changes_no_result():
    with Executor(slaves=2, use_name_server=False, slave_restarts=1) as ex:
        victim = slave_pids(ex, 2)[0]
        results = ex.map(fx.square_with_pid, range(300))
        seen = []
        for x, (value, pid) in zip(range(300), results):
            assert value == x * x
            seen.append(pid)
            if len(seen) == 40:
                os.kill(victim, signal.SIGKILL)
        counters = ex.master.task_manager.counters
        assert len(seen) == 300 and victim in seen
        assert counters["processes_lost"] == 1 and counters["rescheduled"] >= 1
        assert counters["delivered"] == counters["requested"] == 300   # each future completed once
        assert not ex._slots


def test_a_stopped_slave_that_comes_back_late_completes_no_future_twice(monkeypatch):
    # Slaves without keepers: a kept worker declared dead is killed, one without comes back late.
    monkeypatch.setenv("SCIENTIFIC_MS_KEEPER", "0")
    with Executor(slaves=2, use_name_server=False, watchdog_period=0.5) as ex:
        victim = slave_pids(ex, 2)[0]
        counters = ex.master.task_manager.counters
        results = ex.map(fx.square_with_pid, range(200))
        values = []
        for _x, (value, _pid) in zip(range(200), results):
            values.append(value)
            if len(values) == 30:
                os.kill(victim, signal.SIGSTOP)
                wait_for(lambda: counters["processes_lost"] == 1, 30, "the stopped slave to be declared dead")
                os.kill(victim, signal.SIGCONT)   # it comes back and answers what it held, late
        assert values == [x * x for x in range(200)]
        assert counters["delivered"] == counters["requested"] == 200
        assert not ex._slots   # no answer left over for a future already completed


def test_a_poison_call_raises_slave_lost_error():
    with Executor(slaves=1, use_name_server=False, max_slave_losses=2, slave_restarts=3) as ex:
        future = ex.submit(fx.die)
        with pytest.raises(SlaveLostError, match="lost its slave 2 times"):
            future.result(timeout=60)
        assert ex.submit(fx.add, 1, y=1).result(timeout=60) == 2   # a replacement slave serves on


def test_task_manager_show_names_the_functions_and_slave_joins(processes, tmp_path):
    with Executor(slaves=0, use_name_server=False, watchdog_period=30) as ex:
        futures = [ex.submit(fx.add, i) for i in range(3)] + [ex.submit(fx.square_with_pid, 2)]
        show = processes.task_manager("show", "-v", ex.label, name="show")
        code, output = processes.finish(show)
        assert code == 0, output
        assert "4 waiting tasks\n  add: 3\n  square_with_pid: 1" in output
        assert "no connected slave handles tag 'add'" in output
        slave = processes.task_manager("slave", ex.label, name="slave")   # joins as it joins runJob jobs
        assert [f.result(timeout=60) for f in futures[:3]] == [0, 1, 2]
        assert futures[3].result(timeout=60)[0] == 4
        release, started = tmp_path / "release", tmp_path / "started"
        blocked = ex.submit(fx.wait_for_file, str(release), str(started))
        wait_for(started.exists, 30, "the call to start")
        code, output = processes.finish(processes.task_manager("show", "-v", ex.label, name="show2"))
        assert "1 running tasks\n  wait_for_file: 1" in output and " wait_for_file_" in output, output
        release.touch()
        assert blocked.result(timeout=60) == "released"
        status = ex.master.task_manager.status()
    code, output = processes.finish(slave)
    assert code == 0, output
    assert [p["watchdog_period"] for p in status["processes"] if p["role"] == "slave"] == [30]


def test_bad_arguments_are_named():
    with pytest.raises(ConfigurationError, match="slaves"):
        Executor(slaves=-1)
    with pytest.raises(ConfigurationError, match="options are those of MasterProcess"):
        Executor(use_name_server=False, colour="red")
    with Executor(slaves=0, use_name_server=False) as ex:
        with pytest.raises(TypeError, match="callable"):
            ex.submit(42)
        with pytest.raises(ConfigurationError, match="chunksize"):
            ex.map(fx.add, [1], chunksize=0)


def test_the_example_runs(processes):
    env = {"PYTHONPATH": os.environ["PYTHONPATH"]}
    code, output = processes.finish(processes.python(EXAMPLES / "executor_demo.py", env=env), timeout=90)
    assert code == 0, output
    assert "map: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in output


def test_leaving_the_with_block_on_an_error_does_not_wait_for_running_calls(tmp_path):
    started = tmp_path / "started"
    with pytest.raises(KeyboardInterrupt):
        with Executor(slaves=1, use_name_server=False) as ex:
            running = ex.submit(fx.wait_for_file, str(tmp_path / "never"), str(started))
            waiting = ex.submit(fx.add, 1)
            wait_for(started.exists, 30, "the call to start")
            raise KeyboardInterrupt
    assert waiting.cancelled()
    with pytest.raises(RuntimeError, match="shut down before this call was done"):
        running.result(timeout=30)
    assert ex.master.task_manager.terminated


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a test certificate")
def test_master_options_pass_through_tls_and_a_given_label(tmp_path):
    from test_tls import make_certificate
    cert, key = make_certificate(tmp_path, "executor")
    with Executor("tls-executor", slaves=1, use_name_server=False, port=0, tls_cert=cert, tls_key=key) as ex:
        assert ex.label == "tls-executor" and ex.master.tls_cert == cert
        assert ex.submit(fx.add, 20, y=22).result(timeout=60) == 42   # the slave verified the certificate


def test_importable_functions_go_by_reference_unless_registered_by_value():
    import pickle

    import cloudpickle

    from scientific_ms.executor import calls
    by_reference = pickle.dumps(fx.add, protocol=5)
    assert calls.dumps_function(fx.add) == by_reference
    cloudpickle.register_pickle_by_value(fx)
    try:
        assert calls.dumps_function(fx.add) != by_reference   # cloudpickle sends its code
    finally:
        cloudpickle.unregister_pickle_by_value(fx)
