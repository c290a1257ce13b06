"""Local slaves forked from a warm template (``master/forkserver.py``, ``master/template.py``),
with real processes: results, preloaded modules, no inherited master sockets, the end of a
killed master, replacements, and spawning still there."""

import contextlib
import os
import signal
import sys
import textwrap
import time

import psutil
import pytest

from conftest import descendants_gone, wait_for
from scientific_ms import ConfigurationError, Executor, MasterProcess
from scientific_ms.master import forkserver

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the fork server needs os.fork")


def pid_and_modules(names):
    return os.getpid(), {name: name in sys.modules for name in names}


def pid_and_draw(_):
    import time

    import numpy
    time.sleep(0.05)   # work long enough that both slaves take tasks
    return os.getpid(), float(numpy.random.random())   # numpy's global state: copied by fork


def ppid_of(pid):
    return psutil.Process(pid).ppid()


def connections(pid):
    process = psutil.Process(pid)
    return getattr(process, "net_connections", process.connections)("inet")   # psutil < 6: only the latter


def kill_all(pids):
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def tree(pid):
    with contextlib.suppress(psutil.NoSuchProcess):
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    return []


def test_forked_slaves_produce_results_and_come_from_the_template():
    with Executor(slaves=2, use_name_server=False, port=0, start_method="forkserver") as executor:
        assert list(executor.map(abs, range(-20, 0))) == list(range(20, 0, -1))
        pids = wait_for(lambda: len(executor.master.spawned_slaves) == 2 and executor.master.spawned_slaves,
                        30, "two slaves")
        templates = {ppid_of(pid) for pid in pids}
        assert len(templates) == 1 and os.getpid() not in templates, "the slaves are not forks of one template"
        template = psutil.Process(templates.pop())
        assert template.ppid() == os.getpid()
    assert descendants_gone([template.pid, *pids], 30) == []


def test_preloaded_modules_are_imported_before_the_first_task():
    with Executor(slaves=1, use_name_server=False, port=0, preload=["emcee"]) as executor:
        pid, found = executor.submit(pid_and_modules, ["emcee"]).result(timeout=60)
    assert found == {"emcee": True}
    with Executor(slaves=1, use_name_server=False, port=0, start_method="spawn") as executor:
        pid, found = executor.submit(pid_and_modules, ["emcee"]).result(timeout=60)
    assert found == {"emcee": False}, "this check cannot tell preloading apart"


def test_each_forked_slave_draws_its_own_random_numbers():
    with Executor(slaves=2, use_name_server=False, port=0, preload=["numpy"]) as executor:
        # Both slaves there before the map: otherwise the first could take every task.
        executor.master.wait_for_slaves(2, timeout=60)
        draws = list(executor.map(pid_and_draw, range(40)))
    first = {}
    for pid, draw in draws:
        first.setdefault(pid, draw)
    assert len(first) == 2, f"one slave took every task: {draws}"
    assert len(set(first.values())) == 2, f"two slaves started with the same random state: {first}"


def test_forked_slaves_and_their_template_hold_no_socket_of_the_master():
    with Executor(slaves=2, use_name_server=False, port=0, start_method="forkserver") as executor:
        executor.submit(abs, -1).result(timeout=60)
        master = executor.master
        pids = wait_for(lambda: len(master.spawned_slaves) == 2 and master.spawned_slaves, 30, "two slaves")
        template = ppid_of(pids[0])
        listening = {c.laddr.port for c in connections(os.getpid()) if c.status == "LISTEN"}
        assert master.port in listening
        assert connections(template) == []
        for pid in pids + tree(pids[0]) + tree(pids[1]):
            held = connections(pid)
            assert all(c.laddr.port not in listening for c in held), (pid, held)


def test_a_killed_slave_is_replaced_through_the_template():
    with Executor(slaves=2, use_name_server=False, port=0, start_method="forkserver") as executor:
        master = executor.master
        pids = wait_for(lambda: len(master.spawned_slaves) == 2 and master.spawned_slaves, 30, "two slaves")
        template = ppid_of(pids[0])
        os.kill(pids[0], signal.SIGKILL)
        wait_for(lambda: master.slave_replacements == 1 and len(master.spawned_slaves) == 2, 60,
                 "a replacement for the killed slave")
        new = set(master.spawned_slaves) - set(pids)
        assert len(new) == 1 and ppid_of(new.pop()) == template
        assert list(executor.map(abs, range(-10, 0))) == list(range(10, 0, -1))


def test_spawn_still_starts_slaves_as_children_of_the_master():
    with Executor(slaves=2, use_name_server=False, port=0, start_method="spawn") as executor:
        assert executor.submit(abs, -3).result(timeout=60) == 3
        pids = wait_for(lambda: len(executor.master.spawned_slaves) == 2 and executor.master.spawned_slaves,
                        30, "two slaves")
        assert all(ppid_of(pid) == os.getpid() for pid in pids)


def test_bad_options_are_refused_before_anything_starts():
    with pytest.raises(ConfigurationError, match="start_method"):
        MasterProcess("badmethod", use_name_server=False, port=0, start_method="fork")
    with pytest.raises(ConfigurationError, match="preload"):
        MasterProcess("badpreload", use_name_server=False, port=0, preload="numpy")


def test_warm_start_serves_the_next_executor_and_ends_with_close_shared():
    try:
        template = forkserver.warm_start(preload=["emcee"], wait=True)
        with Executor(slaves=1, use_name_server=False, port=0) as executor:
            pid, found = executor.submit(pid_and_modules, ["emcee"]).result(timeout=60)
            assert found == {"emcee": True} and ppid_of(pid) == template
    finally:
        forkserver.close_shared()
    assert descendants_gone([template], 30) == []


KILLED_MASTER = textwrap.dedent("""
    import time
    from scientific_ms import Executor
    executor = Executor(slaves=2, use_name_server=False, port=0, start_method="forkserver")
    assert executor.submit(abs, -1).result(timeout=60) == 1
    while len(executor.master.spawned_slaves) < 2:
        time.sleep(0.05)
    print("SLAVES", *executor.master.spawned_slaves, flush=True)
    time.sleep(600)
""")


def test_a_killed_master_takes_its_template_and_slaves_along(processes, tmp_path):
    script = tmp_path / "killed.py"
    script.write_text(KILLED_MASTER)
    master = processes.python(script, cwd=tmp_path)
    line = wait_for(lambda: next((line for line in processes.output(master).splitlines()
                                  if line.startswith("SLAVES")), None), 90, "the master's slaves")
    slaves = [int(pid) for pid in line.split()[1:]]
    everything = tree(master.pid)
    try:
        assert set(slaves) <= set(everything)
        assert all(ppid_of(pid) != master.pid for pid in slaves), "a slave was spawned, not forked"
        master.kill()
        killed = time.monotonic()
        master.wait(30)
        assert descendants_gone(everything, 20) == [], processes.output(master)
        print(f"\nkill -9 of the master: its fork server and {len(everything) - 1} slave and keeper "
              f"processes gone {time.monotonic() - killed:.2f} s later")
    finally:
        kill_all(everything)


LEAVING_SLAVE = textwrap.dedent("""
    from scientific_ms import SlaveProcess
    from scientific_ms.wire import discovery

    done = []

    def do_once(x):
        done.append(x)
        return x

    class OneTask(SlaveProcess):
        def terminationTest(self):
            return bool(done)

    OneTask(discovery.current_slave_context().label).start({"do_once": do_once})
""")


def test_a_forked_slave_that_leaves_on_purpose_is_not_replaced(tmp_path):
    """The supervisor's leaving pipe reaches the forked slave: its goodbye is told from a death."""
    master = MasterProcess("leaving", use_name_server=False, port=0, start_method="forkserver")
    pids = []
    try:
        master.store_slave_code(LEAVING_SLAVE, str(tmp_path / "leaving_slave.py"), ["leaving_slave.py"])
        master.launchSlaveJobs(1)
        pids = wait_for(lambda: master.spawned_slaves, 60, "the slave")
        assert ppid_of(pids[0]) != os.getpid(), "the slave was spawned, not forked"
        master.requestTask("once", 7)
        assert master.retrieveResult(timeout=60)[2] == 7
        wait_for(lambda: not master.spawned_slaves, 60, "the slave to leave")
        assert master.slave_replacements == 0
    finally:
        master.shutdown()
        kill_all(pids)


def test_the_default_preload_is_the_installed_packages_main_uses(processes, tmp_path):
    (tmp_path / "mine.py").write_text("VALUE = 1\n")
    script = tmp_path / "uses.py"
    script.write_text("import json\nimport mine\nimport psutil\nfrom numpy import array\n"
                      "from scientific_ms.master.forkserver import main_modules\nprint('MODULES', main_modules())\n")
    code, output = processes.finish(processes.python(script, cwd=tmp_path), 60)
    assert code == 0 and "MODULES ['numpy']" in output, output


def test_a_fork_server_that_dies_while_importing_gives_way_to_spawning(tmp_path, monkeypatch, caplog):
    (tmp_path / "ends_its_process.py").write_text("import os\nos._exit(3)\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    with caplog.at_level("WARNING", logger="scientific_ms"):
        with Executor(slaves=1, use_name_server=False, port=0, preload=["ends_its_process"]) as executor:
            assert executor.submit(abs, -5).result(timeout=60) == 5
            [pid] = wait_for(lambda: executor.master.spawned_slaves, 30, "the slave")
            assert ppid_of(pid) == os.getpid(), "the slave was not spawned"
    assert any("spawning this slave" in record.getMessage() for record in caplog.records)


def test_an_executor_forks_its_slaves_from_a_template_when_that_pays(monkeypatch):
    from scientific_ms.executor.executor import default_start_method
    monkeypatch.delenv("SCIENTIFIC_MS_PRELOAD", raising=False)
    monkeypatch.setattr(forkserver, "main_modules", lambda: [])
    cores = os.cpu_count() or 1
    assert default_start_method(0, None) == "spawn"                 # no local slave
    assert default_start_method(1, None) == "spawn"                 # nothing to share: imports side by side
    assert default_start_method(cores + 1, None) == "forkserver"    # more slaves than cores
    assert default_start_method(1, ["json"]) == "forkserver"        # preload=
    monkeypatch.setenv("SCIENTIFIC_MS_PRELOAD", "json")
    assert default_start_method(1, None) == "forkserver"
    monkeypatch.delenv("SCIENTIFIC_MS_PRELOAD")
    monkeypatch.setattr(forkserver, "main_modules", lambda: ["numpy"])   # the program's __main__ uses it
    assert default_start_method(1, None) == "forkserver"
