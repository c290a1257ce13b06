"""Slaves that leave on their own: on SIGTERM (a batch system's walltime) and when idle.

Real slave processes against a real master in this process. A slave that
gets SIGTERM gives back the tasks it has not started, finishes (or, after
its grace, abandons) the running one, says goodbye and exits 0; the master
reschedules at once and counts why it left. Every result arrives once.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import wait_for
from scientific_ms import ConfigurationError, MasterProcess, SlaveProcess, startSlaveProcess
from scientific_ms.slave.departure import IdleClock

pytestmark = pytest.mark.timeout(60)

#: A slave whose first run of each task sleeps ``seconds`` and whose reruns are quick, so
#: that an abandoned task finishes soon elsewhere; each execution leaves a marker.
SLAVE = textwrap.dedent("""\
    import os, sys, time
    from scientific_ms import startSlaveProcess

    def do_step(value, seconds, marker_dir):
        first = not os.path.exists(os.path.join(marker_dir, f"ran-{value}"))
        open(os.path.join(marker_dir, f"ran-{value}"), "a").close()
        with open(os.path.join(marker_dir, f"started-{value}-{os.getpid()}"), "w"):
            pass
        if first:
            time.sleep(seconds)
        return value, os.getpid()

    startSlaveProcess(sys.argv[1], wait=True)
    """)


@pytest.fixture
def slave_script(tmp_path):
    path = tmp_path / "departing_slave.py"
    path.write_text(SLAVE)
    return path


def started(marker_dir, value, pid):
    return (marker_dir / f"started-{value}-{pid}").exists()


def collect(master, n, timeout=30.0):
    """``n`` results as {task_id: value}; fails on a duplicate."""
    results = {}
    for _ in range(n):
        task_id, tag, (value, pid) = master.retrieveResult("step", timeout=timeout)
        assert task_id not in results, f"{task_id} delivered twice"
        results[task_id] = value
    return results


@pytest.mark.parametrize("grace, first_seconds, outcome", [
    ("30", 1.5, "finished"),      # the running task ends within the grace: its answer is kept
    ("0.3", 60.0, "abandoned"),   # it would not: abandoned after 0.3 s, it runs again elsewhere
])
def test_sigterm_mid_task_gives_tasks_back_and_every_result_arrives_once(
        processes, slave_script, tmp_path, grace, first_seconds, outcome):
    markers = tmp_path / "markers"
    markers.mkdir()
    master = MasterProcess("term", use_name_server=False, port=0)
    try:
        env = {"SCIENTIFIC_MS_TERM_GRACE": grace}
        first = processes.python(slave_script, "term", env=env, name="first")
        master.wait_for_slaves(1, timeout=30)
        long_id = master.requestTask("step", 0, first_seconds, str(markers))
        wait_for(lambda: started(markers, 0, first.pid), 20, "the first slave to start the long task")
        others = [master.requestTask("step", i, 0.0, str(markers)) for i in range(1, 6)]
        first.send_signal(signal.SIGTERM)
        code, out = processes.finish(first, 30)
        assert code == 0, out
        assert "got SIGTERM" in out
        counters = master.task_manager.counters
        assert counters["left_sigterm"] == 1 and counters["processes_lost"] == 0
        if outcome == "abandoned":
            assert "abandoning it" in out
        # The queue waits for another slave; nothing was lost with the first.
        processes.python(slave_script, "term", name="second")
        results = collect(master, 6)
        assert set(results) == {long_id, *others}
        assert sorted(results.values()) == list(range(6))
        assert counters["duplicates_dropped"] == 0 and counters["finished"] == 6
        ran_long = sorted(path.name for path in markers.glob("started-0-*"))
        assert len(ran_long) == (1 if outcome == "finished" else 2), ran_long
        # The first slave started nothing after the signal.
        assert not any(started(markers, i, first.pid) for i in range(1, 6))
    finally:
        master.shutdown()


def test_sigterm_while_idle_leaves_at_once_with_exit_0(processes, slave_script):
    master = MasterProcess("idleterm", use_name_server=False, port=0)
    try:
        slave = processes.python(slave_script, "idleterm", name="slave")
        master.wait_for_slaves(1, timeout=30)
        slave.send_signal(signal.SIGTERM)
        code, out = processes.finish(slave, 15)
        assert code == 0, out
        assert master.task_manager.counters["left_sigterm"] == 1
        assert master.task_manager.wait_until_no_slaves(5)
    finally:
        master.shutdown()


def test_idle_slaves_leave_and_show_reports_it(processes, slave_script, tmp_path):
    """One slave from ``task_manager slave --idle-timeout``, one from the environment variable."""
    markers = tmp_path / "markers"
    markers.mkdir()
    master = MasterProcess("idle", use_name_server=False, port=0)
    try:
        master.store_slave_code(slave_script.read_text(), str(slave_script), [str(slave_script), "idle"])
        by_option = processes.task_manager("slave", "idle", "--idle-timeout", "1", name="by_option")
        by_variable = processes.python(slave_script, "idle", env={"SCIENTIFIC_MS_IDLE_TIMEOUT": "1.5"},
                                       name="by_variable")
        ids = [master.requestTask("step", i, 0.0, str(markers)) for i in range(4)]
        assert set(collect(master, 4)) == set(ids)
        for slave in (by_option, by_variable):
            code, out = processes.finish(slave, 30)
            assert code == 0, out
            assert "idle timeout" in out
        assert master.task_manager.counters["left_idle"] == 2
        assert master.task_manager.counters["processes_lost"] == 0
        show = subprocess.run([sys.executable, "-m", "scientific_ms", "show", "idle"],
                              capture_output=True, text=True, timeout=30)
        assert "2 slaves left when idle, 0 on SIGTERM" in show.stdout, show.stdout + show.stderr
        report = json.loads(subprocess.run([sys.executable, "-m", "scientific_ms", "show", "idle", "--json"],
                                           capture_output=True, text=True, timeout=30).stdout)
        assert report["slaves_left"] == {"idle": 2, "sigterm": 0} and report["slaves"] == 0
        # The master lives on: a new slave still gets work.
        late = processes.python(slave_script, "idle", env={"SCIENTIFIC_MS_IDLE_TIMEOUT": "1"}, name="late")
        master.requestTask("step", 9, 0.0, str(markers))
        assert master.retrieveResult("step", timeout=30)[2][0] == 9
        assert processes.finish(late, 30)[0] == 0
    finally:
        master.shutdown()


def test_a_slave_waiting_for_its_master_waits_no_longer_than_its_idle_timeout(processes, slave_script, tmp_path):
    """An array task that starts after its master finished must not hold its allocation forever."""
    by_option = processes.task_manager("slave", "gone", "-w", "--idle-timeout", "0.5", name="by_option")
    by_script = processes.python(slave_script, "gone", env={"SCIENTIFIC_MS_IDLE_TIMEOUT": "0.5"}, name="by_script")
    for slave in (by_option, by_script):      # the script calls startSlaveProcess(label, wait=True)
        code, out = processes.finish(slave, 30)
        assert code == 0, out
        assert "no master of 'gone' came within the idle timeout (0.5 s); leaving" in out


@pytest.mark.parametrize("bad", [-1, 0, "10", float("nan"), True])
def test_a_bad_idle_timeout_is_refused_naming_it(bad):
    with pytest.raises(ConfigurationError, match="idle_timeout"):
        SlaveProcess("x", idle_timeout=bad)


@pytest.mark.parametrize("option, variable, expected", [
    (["--idle-timeout", "-5"], None, "argument --idle-timeout: must be > 0, got -5"),
    (["--idle-timeout", "soon"], None, "argument --idle-timeout: expected a number, got 'soon'"),
    ([], "-2", "SCIENTIFIC_MS_IDLE_TIMEOUT='-2': expected a number of seconds > 0"),
    ([], "later", "SCIENTIFIC_MS_IDLE_TIMEOUT='later': expected a number of seconds > 0"),
])
def test_bad_idle_timeouts_on_the_command_line_name_the_option(option, variable, expected):
    env = dict(os.environ, **({"SCIENTIFIC_MS_IDLE_TIMEOUT": variable} if variable else {}))
    result = subprocess.run([sys.executable, "-m", "scientific_ms", "slave", "nobody", *option],
                            capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode in (1, 2) and expected in result.stderr, result.stderr


def test_start_slave_process_reports_a_bad_idle_timeout(monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_info:
        startSlaveProcess("x", idle_timeout=-3)
    assert exit_info.value.code == 1
    assert "idle_timeout=-3" in capsys.readouterr().err


def test_idle_clock():
    now = [100.0]
    clock = IdleClock(2.0, clock=lambda: now[0])
    assert clock.wait(5.0) == 2.0 and not clock.expired()
    now[0] += 1.5
    assert clock.wait(5.0) == pytest.approx(0.5) and not clock.expired()
    now[0] += 0.5
    assert clock.expired() and clock.wait(5.0) == 0.0
    clock.busy()
    assert not clock.expired()
    assert IdleClock(None).wait(5.0) == 5.0 and not IdleClock(None).expired()
