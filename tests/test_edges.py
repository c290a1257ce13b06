"""Edge cases met by users: real scripts, real slave processes, real signals.

Each test runs the case as a user would meet it and checks what they see:
the process's exit, its files, its output.
"""

import concurrent.futures
import logging
import os
import signal
import textwrap
from pathlib import Path

import psutil
import pytest

import executor_functions as fx
from conftest import descendants_gone, wait_for
from scientific_ms import ConfigurationError, Executor, initializeMasterProcess, read_journal
from scientific_ms.master.journal_report import journal_progress
from scientific_ms.wire import discovery

HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(autouse=True)
def slaves_import_test_functions(monkeypatch):
    """Spawned slaves inherit the environment: let them import executor_functions."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))


def write_script(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def label_files():
    folder = discovery.settings.registry_dir()
    return sorted(p.name for p in folder.glob("*.json")) if folder.exists() else []


def short_lines(output, tmp_path):
    """Every line fits a terminal (the test's own long folder name counted as a short one)."""
    return all(len(line.replace(str(tmp_path), "/tmp/x")) <= 100 for line in output.splitlines())


def kill_marked(token):
    """SIGKILL every process whose environment carries ``token`` (the test's own processes only)."""
    killed = []
    for process in psutil.process_iter():
        try:
            if process.pid != os.getpid() and process.environ().get("EDGES_TOKEN") == token:
                process.kill()
                killed.append(process.pid)
        except psutil.Error:
            pass
    return descendants_gone(killed, 10)


# ---------------------------------------------------------------- a label computed per process

PER_PROCESS_LABEL = """\
    import os, sys, time
    from scientific_ms import MasterProcess, SlaveProcess, runJob

    # The code before the fix made each spawned slave a master of its own: cap the generations.
    depth = int(os.environ.get("EDGES_DEPTH", "0"))
    os.environ["EDGES_DEPTH"] = str(depth + 1)
    if depth >= 2:
        sys.exit(3)
    MARKS, STOP = sys.argv[1], sys.argv[2]

    class Master(MasterProcess):
        def run(self):
            with open(MARKS, "a") as marks:
                marks.write(f"master {os.getpid()} depth {depth}\\n")
            deadline = time.monotonic() + 60
            while not os.path.exists(STOP) and time.monotonic() < deadline:
                time.sleep(0.05)   # the test says when to end

    class Slave(SlaveProcess):
        def do_square(self, x):
            return x * x

    runJob(f"sweep-{os.getpid()}", Master, Slave, launch_slaves=2)
"""


def test_a_label_computed_per_process_never_makes_a_slave_a_master(processes, tmp_path):
    script = write_script(tmp_path / "sweep.py", PER_PROCESS_LABEL)
    marks, stop, token = tmp_path / "marks", tmp_path / "stop", f"edges-{os.getpid()}-{id(tmp_path)}"
    master = processes.python(script, marks, stop, env={"EDGES_TOKEN": token}, cwd=tmp_path)
    try:
        wait_for(lambda: "was spawned as a slave of" in processes.output(master), 60,
                 "the spawned slaves to refuse the label they were not spawned for")
        # Not replaced (a replacement would refuse too), and the master says no slave of its own is left.
        wait_for(lambda: "No slave of this master's own is left" in processes.output(master), 60,
                 "the master to say that its slaves refused")
        output = processes.output(master)
        assert output.count("was spawned as a slave of") == 2, output
        assert "starting a replacement" not in output, output
        assert f"'sweep-{master.pid}'" in output   # the label it was spawned for
        assert "fixed label" in output and "environment" in output
        assert "Traceback" not in output
        assert short_lines(output, tmp_path), output
        masters = marks.read_text().splitlines()
        assert len(masters) == 1 and masters[0].startswith(f"master {master.pid} "), masters
        stop.touch()
        code, output = processes.finish(master, 60)
        assert code == 0, output
    finally:
        stop.touch()
        assert kill_marked(token) == []
    assert len(marks.read_text().splitlines()) == 1


def test_initialize_master_process_in_a_slave_is_refused():
    discovery.set_slave_context(discovery.SlaveContext("job-a", None, None, None))
    try:
        with pytest.raises(ConfigurationError, match="spawned as a slave of 'job-a'"):
            initializeMasterProcess("job-b", use_name_server=False, port=0)
    finally:
        discovery.set_slave_context(None)
    assert label_files() == []


# ---------------------------------------------------------------- cancelled futures

def check_cancelled_futures_notify(executor, release, while_busy=True):
    blocker = executor.submit(fx.wait_for_file, release)
    futures = [executor.submit(fx.add, i) for i in range(10)]
    called = []
    for future in futures:
        future.add_done_callback(called.append)
    cancelled = [future for future in futures if future.cancel()]
    assert cancelled, "nothing could be cancelled"
    if not while_busy:
        # ProcessPoolExecutor notifies a cancelled future's waiters only when its manager thread
        # moves that future towards its call queue, which stays full while the blocker runs:
        # its cancelled futures reach wait() once the blocker ends. Ours do while it runs.
        Path(release).touch()
    done, not_done = concurrent.futures.wait(cancelled, timeout=8)
    assert not not_done and done == set(cancelled)
    assert set(concurrent.futures.as_completed(cancelled, timeout=8)) == set(cancelled)
    assert set(called) >= set(cancelled)
    late = []
    cancelled[0].add_done_callback(late.append)   # called at once, as for any future done
    assert late == [cancelled[0]]
    assert all(future.cancelled() and future.done() for future in cancelled)
    if while_busy:
        assert not blocker.done(), "the cancelled futures were to be notified while the blocker still ran"
    Path(release).touch()
    assert blocker.result(timeout=60) == "released"
    concurrent.futures.wait(futures, timeout=60)


def test_cancelled_futures_notify_wait_as_completed_and_callbacks(tmp_path):
    with concurrent.futures.ProcessPoolExecutor(1) as pool:    # the reference
        check_cancelled_futures_notify(pool, str(tmp_path / "release-pool"), while_busy=False)
    with Executor(slaves=1, use_name_server=False) as executor:
        check_cancelled_futures_notify(executor, str(tmp_path / "release-farm"))


# ---------------------------------------------------------------- signals

SIGNALLED = """\
    import sys
    from pathlib import Path
    import executor_functions as fx
    from scientific_ms import Executor, initializeMasterProcess

    kind, release = sys.argv[1], sys.argv[2]
    if kind == "initialize":
        slave_script = Path(release).with_name("slave.py")
        slave_script.write_text("import executor_functions as fx\\n"
                                "from scientific_ms import startSlaveProcess\\n"
                                "def do_wait(path):\\n"
                                "    return fx.wait_for_file(path)\\n"
                                "startSlaveProcess()\\n")
        master = initializeMasterProcess("signalled", slave_script=str(slave_script), use_name_server=False)
        master.launchSlaveJobs(1)
        master.wait_for_slaves(1, timeout=60)
        print("ready", flush=True)
        master.requestTask("wait", release)
        master.retrieveResult()
    elif kind == "with":   # Ctrl-C while the end of the with block waits for a call no slave runs
        with Executor("signalled", slaves=0, use_name_server=False) as executor:
            executor.submit(fx.wait_for_file, release)
            print("ready", flush=True)
    else:
        executor = Executor("signalled", slaves=1 if kind == "slaves" else 0, use_name_server=False)
        future = executor.submit(fx.wait_for_file, release)
        if kind == "slaves":
            executor.master.wait_for_slaves(1, timeout=60)
        print("ready", flush=True)
        future.result()
"""


@pytest.mark.parametrize("kind, sig", [("slaves", signal.SIGTERM), ("none", signal.SIGTERM),
                                       ("none", signal.SIGINT), ("with", signal.SIGINT),
                                       ("initialize", signal.SIGTERM)])
def test_a_signal_ends_an_executor_or_initialized_master_cleanly(processes, tmp_path, kind, sig):
    script = write_script(tmp_path / "signalled.py", SIGNALLED)
    process = processes.python(script, kind, tmp_path / "release", cwd=tmp_path)
    wait_for(lambda: "ready" in processes.output(process), 60, "the master to be ready")
    children = [child.pid for child in psutil.Process(process.pid).children(recursive=True)]
    assert label_files() == ["signalled.json"]
    process.send_signal(sig)
    code, output = processes.finish(process, 60)
    if sig == signal.SIGTERM:
        assert code == 128 + sig, output   # SystemExit(143): the process cleaned up
    else:
        assert code in (-sig, 128 + sig), output   # Python's own end on Ctrl-C
    assert label_files() == [], output
    assert descendants_gone(children, 30) == []


# ---------------------------------------------------------------- journal: resume message, files left

JOURNALED = """\
    import sys
    import executor_functions as fx
    from scientific_ms import Executor

    journal, count = sys.argv[1], int(sys.argv[2])
    with Executor("journaled", slaves=1, journal=journal, use_name_server=False) as executor:
        print(f"RESULTS {list(executor.map(fx.add, range(count)))}", flush=True)   # one write: the log shares the pipe
"""


def run_journaled(processes, tmp_path, count, name):
    script = write_script(tmp_path / "journaled.py", JOURNALED)
    process = processes.python(script, tmp_path / "job.db", count, name=name, cwd=tmp_path)
    code, output = processes.finish(process, 120)
    assert code == 0 and f"RESULTS {list(range(count))}" in output, output
    return output


def test_a_resumed_job_says_so_once_on_stderr(processes, tmp_path):
    output = run_journaled(processes, tmp_path, 3, "first")
    assert "journal" not in output, output   # a fresh job says nothing about its journal
    output = run_journaled(processes, tmp_path, 5, "second")
    notes = [line for line in output.splitlines() if "resuming" in line]
    assert len(notes) == 1, output
    assert "3 results read from the journal" in notes[0] and "2 tasks left" in notes[0], output
    assert short_lines(output, tmp_path), output


def test_a_clean_end_leaves_only_the_journal(processes, tmp_path):
    run_journaled(processes, tmp_path, 3, "first")
    assert sorted(p.name for p in tmp_path.glob("job.db*")) == ["job.db"]
    run_journaled(processes, tmp_path, 4, "second")   # the journal is still usable, its lock too
    assert sorted(p.name for p in tmp_path.glob("job.db*")) == ["job.db"]
    assert len(list(read_journal(tmp_path / "job.db"))) == 4   # reading it leaves nothing either
    assert journal_progress(tmp_path / "job.db")["tasks"]["finished"] == 4
    assert sorted(p.name for p in tmp_path.glob("job.db*")) == ["job.db"]


# ---------------------------------------------------------------- remote tracebacks show the source

FAILING = """\
    from scientific_ms import Executor


    def helper(x):
        return 1 / x


    def boom(x):
        y = x - 1
        return helper(y)


    if __name__ == "__main__":
        with Executor(slaves=1, use_name_server=False) as executor:
            executor.submit(boom, 1).result(timeout=60)
"""


def test_a_remote_traceback_shows_the_source_of_functions_sent_by_value(processes, tmp_path):
    script = write_script(tmp_path / "failing.py", FAILING)
    code, output = processes.finish(processes.python(script, cwd=tmp_path), 120)
    assert code == 1 and "ZeroDivisionError" in output, output
    assert f'File "{script}", line 10, in boom\n    return helper(y)' in output, output
    assert f'File "{script}", line 5, in helper\n    return 1 / x' in output, output
    assert "<dynamic-code>" not in output


# ---------------------------------------------------------------- Future.running()

def test_future_running_is_true_while_a_slave_runs_the_call(tmp_path):
    release, marker = tmp_path / "release", tmp_path / "started"
    with Executor(slaves=1, use_name_server=False) as executor:
        future = executor.submit(fx.wait_for_file, str(release), str(marker))
        assert not future.done()
        wait_for(marker.exists, 60, "the call to start")
        assert future.running() and not future.done()
        release.touch()
        assert future.result(timeout=60) == "released"
        assert not future.running() and future.done()


# ---------------------------------------------------------------- runJob's value

RETURNING = """\
    from scientific_ms import MasterProcess, SlaveProcess, runJob

    class Master(MasterProcess):
        def run(self):
            self.requestTask("square", 7)
            return {"answer": self.retrieveResult()[2]}

    class Slave(SlaveProcess):
        def do_square(self, x):
            return x * x

    print("RETURNED", runJob("returning", Master, Slave, launch_slaves=1), flush=True)
"""


def test_run_job_returns_what_run_returns(processes, tmp_path):
    script = write_script(tmp_path / "returning.py", RETURNING)
    code, output = processes.finish(processes.python(script, cwd=tmp_path), 120)
    assert code == 0, output
    assert "RETURNED {'answer': 49}" in output, output


# ---------------------------------------------------------------- a function holding a large value

def test_a_function_closing_over_a_large_value_warns_once(caplog):
    big = bytes(20 * 1024 * 1024)

    def size_of_big(offset):
        return len(big) + offset

    with caplog.at_level(logging.WARNING, logger="scientific_ms"):
        with Executor(slaves=1, use_name_server=False) as executor:
            assert executor.submit(size_of_big, 1).result(timeout=120) == len(big) + 1
            assert executor.submit(size_of_big, 2).result(timeout=120) == len(big) + 2
    warnings = [r.getMessage() for r in caplog.records if "size_of_big" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "'big'" in warnings[0] and "setGlobalState" in warnings[0] and "argument" in warnings[0]


# ---------------------------------------------------------------- a node's slaves when the master ends

def test_slaves_of_a_node_whose_master_ends_say_it_without_a_traceback(processes, tmp_path):
    """The end of a master is a normal event, even while the workers of ``slave -n 2`` are
    still fetching its code: a short message, exit status 0, no traceback."""
    from scientific_ms import MasterProcess
    master = MasterProcess("ended", use_name_server=False, port=0)
    try:
        script = tmp_path / "slave_code.py"
        script.write_text("from scientific_ms import startSlaveProcess\n"
                          "def do_f(x):\n    return x\n"
                          "startSlaveProcess()\n")
        master.store_slave_code(script.read_text(), str(script), [str(script)])
        node = processes.task_manager("slave", "ended", "-n", "2")
        wait_for(lambda: any(info.get("role") == "agent" for info in master.task_manager.status()["processes"]),
                 60, "the node's keeper to register")
    finally:
        master.shutdown()
    code, output = processes.finish(node, 60)
    assert "Traceback" not in output and "Error" not in output.replace("MasterEndedError", ""), output
    assert len(output.strip().splitlines()) <= 4, output
    assert code == 0, output


# ---------------------------------------------------------------- messages fit a terminal

def test_no_master_found_says_it_first_in_short_lines(processes, tmp_path):
    code, output = processes.finish(processes.task_manager("slave", "nobody"), 60)
    assert code == 1
    lines = output.strip().splitlines()
    assert lines[0].startswith("task_manager: no master found for label 'nobody'"), output
    assert short_lines(output, tmp_path), output
    assert "start the master first" in output and "nobody.json" in output


KILLED_MASTER = """\
    import threading
    from scientific_ms import initializeMasterProcess

    master = initializeMasterProcess("killed", use_name_server=False)
    master.wait_for_slaves(1, timeout=60)
    print("ready", flush=True)
    threading.Event().wait(120)   # until the test kills us
"""


def test_a_slave_whose_master_was_killed_says_it_once_in_short_lines(processes, tmp_path):
    script = write_script(tmp_path / "killed.py", KILLED_MASTER)
    master = processes.python(script, name="master", cwd=tmp_path)
    slave = processes.python(HERE / "slave_script.py", "killed", name="slave", cwd=tmp_path)
    wait_for(lambda: "ready" in processes.output(master), 60, "the slave to register")
    os.kill(master.pid, signal.SIGKILL)
    code, output = processes.finish(slave, 60)
    assert code != 0
    assert "trying to reach the master again" not in output, output
    assert "master is gone" in output or "lost its master" in output, output
    assert short_lines(output, tmp_path), output


KILLED_BUSY_MASTER = """\
    import threading
    from scientific_ms import initializeMasterProcess

    master = initializeMasterProcess("killed_busy", use_name_server=False)
    master.requestTask("work", 60.0, "busy")
    assert master.task_manager.wait_for_running(1, timeout=60), "the task never started"
    print("ready", flush=True)
    threading.Event().wait(120)   # until the test kills us
"""


def test_a_busy_slave_whose_keeper_finds_the_master_already_killed_exits(processes, tmp_path):
    """The master dies after the slave registered but before its keeper reached it: the keeper
    (which hears of the master only from its worker's hello) must say so; the worker, inside
    a 60 s handler, learns of the master only from its keeper."""
    slave = processes.python(HERE / "slave_script.py", "killed_busy", "1.0", name="slave", cwd=tmp_path)
    # The keeper is forked before the slave looks for its master; hold it until the master is dead.
    keeper = wait_for(lambda: psutil.Process(slave.pid).children(), 30, "the slave's keeper")[0]
    keeper.suspend()
    try:
        master = processes.python(write_script(tmp_path / "killed_busy.py", KILLED_BUSY_MASTER),
                                  name="master", cwd=tmp_path)
        wait_for(lambda: "ready" in processes.output(master), 60, "the slave to start its task")
        master.kill()
        master.wait(10)
    finally:
        keeper.resume()
    code, output = processes.finish(slave, 30)
    assert code == 1 and "lost its master" in output, output
