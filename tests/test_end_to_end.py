"""Whole jobs with real processes over real sockets: the examples, both styles, discovery."""

import os
import signal
import textwrap
import time

import pytest

from conftest import EXAMPLES, descendants_gone, wait_for
from scientific_ms import ConfigurationError, MasterProcess
from scientific_ms.wire import discovery

HERE = os.path.dirname(__file__)
SLAVE_SCRIPT = os.path.join(HERE, "slave_script.py")


def test_demo_runs_master_and_spawned_slaves(processes):
    code, out = processes.finish(processes.python(EXAMPLES / "master_slave_demo.py", cwd=EXAMPLES), 60)
    assert code == 0, out
    for x in ("(0.0, 0.0)", "(1.0, 1.0)", "(2.0, 1.4142135623730951)", "(3.0, 1.7320508075688772)"):
        assert x in out
    # The handler's exception arrives with the original object and the remote traceback.
    assert "raised ValueError('math domain error')" in out
    assert "in do_sqrt" in out and "math.sqrt(x)" in out


def test_global_state_example(processes):
    code, out = processes.finish(processes.python(EXAMPLES / "global_state.py", cwd=EXAMPLES), 60)
    assert code == 0, out
    total, expected = out.split()[1].rstrip(","), out.split()[3]
    assert total == expected


WAITING_MASTER = """
from scientific_ms import initializeMasterProcess
tasks = initializeMasterProcess("demo", slave_script={slave!r})
tasks.wait_for_slaves(2, timeout=60)
ids = [tasks.requestTask("sqrt", float(i)) for i in range(20)]
for _ in ids:
    tasks.retrieveResult("sqrt")
print("DONE", sum(p["tasks_done"] for p in tasks.task_manager.status()["processes"]))
"""


def test_example_master_with_spawned_slaves(processes):
    code, out = processes.finish(processes.python(EXAMPLES / "master.py", 2, cwd=EXAMPLES), 60)
    assert code == 0, out
    assert "(3.0, 1.7320508075688772)" in out and "raised ValueError" in out


@pytest.mark.parametrize("slaves_first", [False, True], ids=["master_first", "slaves_first"])
def test_two_scripts_with_hand_started_slaves(processes, tmp_path, slaves_first):
    """`python slave.py` and `task_manager slave demo`, started after the master or before it (waiting)."""
    script = tmp_path / "master.py"
    script.write_text(WAITING_MASTER.format(slave=str(EXAMPLES / "slave.py")))
    if not slaves_first:
        master = processes.python(script, cwd=tmp_path, name="master")
        wait_for(lambda: discovery.read_label_file("demo"), 30, "the label file")
    slave_a = processes.python(EXAMPLES / "slave.py", cwd=EXAMPLES, name="slave_a")
    slave_b = processes.task_manager("slave", *(["-w"] if slaves_first else []), "demo", cwd="/", name="slave_b")
    if slaves_first:
        master = processes.python(script, cwd=tmp_path, name="master")
    code, out = processes.finish(master, 60)
    assert code == 0, out
    assert "DONE 20" in out
    for slave in (slave_a, slave_b):
        code, out = processes.finish(slave, 10)
        assert code == 0, out
    assert discovery.read_label_file("demo") is None


def test_explicit_master_host(processes, tmp_path, monkeypatch):
    master = MasterProcess("explicit", use_name_server=False, port=0, secret=b"s3cret")
    try:
        other_registry = tmp_path / "elsewhere"      # the slave shares no label file
        env = {"SCIENTIFIC_MS_REGISTRY": str(other_registry), "SCIENTIFIC_MS_SECRET": "s3cret"}
        script = tmp_path / "explicit_slave.py"
        script.write_text(textwrap.dedent(f"""
            from scientific_ms import startSlaveProcess
            def do_double(x):
                return 2 * x
            startSlaveProcess("explicit", master_host="127.0.0.1:{master.port}")
        """))
        slave = processes.python(script, env=env)
        ids = {master.requestTask("double", i): i for i in range(10)}
        results = {}
        for _ in range(10):
            task_id, tag, value = master.retrieveResult("double")
            results[task_id] = value
        assert results == {task_id: 2 * i for task_id, i in ids.items()}
    finally:
        master.shutdown()
    assert processes.finish(slave, 10)[0] == 0


def test_name_server_registration_and_lookup(processes, tmp_path, name_server):
    master = MasterProcess("via_ns", port=0, secret=b"shared-secret")
    try:
        ns = discovery.locate_name_server()
        with ns:
            uri = ns.lookup("TaskManager.via_ns")
        assert uri.port == master.port
        script = tmp_path / "ns_slave.py"
        script.write_text("from scientific_ms import startSlaveProcess\n"
                          "def do_neg(x):\n    return -x\n"
                          "startSlaveProcess('via_ns')\n")
        env = {"SCIENTIFIC_MS_REGISTRY": str(tmp_path / "no-shared-home"),
               "SCIENTIFIC_MS_SECRET": "shared-secret"}
        slave = processes.python(script, env=env)
        master.requestTask("neg", 5)
        assert master.retrieveResult()[2] == -5
    finally:
        master.shutdown()
    assert processes.finish(slave, 10)[0] == 0
    with discovery.locate_name_server() as ns:
        assert "TaskManager.via_ns" not in ns.list()


MASTER_ENDINGS = textwrap.dedent("""
    import os, sys, time
    from scientific_ms import MasterProcess, SlaveProcess, runJob

    class Master(MasterProcess):
        def run(self):
            ids = [self.requestTask("work", 0.01, i) for i in range(6)]
            for _ in ids:
                self.retrieveResult("work")
            self.requestTask("work", 60.0, "long")       # keeps one slave busy
            assert self.task_manager.wait_for_running(1, timeout=60), "the long task never started"
            print("READY", flush=True)
            ending = sys.argv[1]
            if ending == "raise":
                raise RuntimeError("run() failed")
            if ending == "interrupt":
                time.sleep(60)                           # the test sends SIGINT

    class Worker(SlaveProcess):
        def do_work(self, seconds, value):
            time.sleep(seconds)
            return value

    runJob("endings", Master, Worker, launch_slaves=2, watchdog_period=5.0)
""")


@pytest.mark.parametrize("ending", ["return", "raise", "interrupt"])
def test_every_slave_exits_when_the_master_ends(processes, tmp_path, ending):
    script = tmp_path / "endings.py"
    script.write_text(MASTER_ENDINGS)
    master = processes.python(script, ending, cwd=tmp_path, name="master")
    wait_for(lambda: discovery.read_label_file("endings"), 30, "the label file")
    extra = processes.task_manager("slave", "endings", name="hand_started")
    wait_for(lambda: "READY" in processes.output(master), 30, "the master to be ready")
    slaves = [p.pid for p in psutil_children(master.pid)] + [extra.pid]
    assert len(slaves) == 3
    if ending == "interrupt":
        master.send_signal(signal.SIGINT)
    code, out = processes.finish(master, 30)
    ended = time.monotonic()
    assert (code == 0) == (ending == "return"), out
    if ending == "raise":
        assert "RuntimeError: run() failed" in out
    assert descendants_gone(slaves, timeout=5.0) == []
    print(f"\nmaster ended by {ending}: its 3 slaves (one busy) were gone "
          f"{time.monotonic() - ended:.2f} s after the master exited")
    assert discovery.read_label_file("endings") is None
    code, out = processes.finish(extra, 5)
    assert "finished" in out or code == 0, out


def psutil_children(pid):
    import psutil
    return wait_for(lambda: len(psutil.Process(pid).children()) == 2 and psutil.Process(pid).children(),
                    30, "two spawned slaves")


def test_every_slave_exits_with_a_message_when_the_master_is_killed(processes, tmp_path):
    """kill -9 of the master: spawned slaves (now orphans) and hand-started ones all exit."""
    slave_code = tmp_path / "doomed_slave.py"
    slave_code.write_text("import time\nfrom scientific_ms import startSlaveProcess\n"
                          "def do_work(seconds, value):\n    time.sleep(seconds)\n    return value\n"
                          "startSlaveProcess('doomed', watchdog_period=1.0)\n")
    script = tmp_path / "doomed_master.py"
    script.write_text(textwrap.dedent(f"""
        import time
        from scientific_ms import initializeMasterProcess
        master = initializeMasterProcess("doomed", slave_script={str(slave_code)!r})
        master.launchSlaveJobs(2)
        for i in range(3):
            master.requestTask("work", 60.0, i)
        master.wait_for_slaves(4, timeout=60)
        print("READY", flush=True)
        time.sleep(600)
    """))
    master = processes.python(script, name="master")
    wait_for(lambda: discovery.read_label_file("doomed"), 30, "the master")
    busy = processes.python(SLAVE_SCRIPT, "doomed", "1.0", name="busy")
    idle = processes.python(SLAVE_SCRIPT, "doomed", "1.0", name="idle")
    wait_for(lambda: "READY" in processes.output(master), 60, "four slaves, three of them busy")
    import psutil
    spawned = [child.pid for child in psutil.Process(master.pid).children()]
    assert len(spawned) == 2
    master.kill()
    killed = time.monotonic()
    for slave in (busy, idle):
        code, out = processes.finish(slave, 15)
        assert code == 1, out
        assert "lost its master" in out, out
    assert descendants_gone(spawned, timeout=15) == []
    print(f"\nkill -9 of the master: all 4 slaves (3 busy) gone {time.monotonic() - killed:.2f} s later")


def net_connections(pid):
    import psutil
    process = psutil.Process(pid)
    return (getattr(process, "net_connections", None) or process.connections)()


def test_global_state_is_fetched_at_most_once_per_slave(processes, tmp_path):
    master = MasterProcess("state", use_name_server=False, port=0)
    try:
        script = tmp_path / "state_slave.py"
        script.write_text(textwrap.dedent("""
            import os
            from scientific_ms import startSlaveProcess
            def do_size(table, scale, nested):
                return len(table) * scale + nested["inner"][0], os.getpid()
            startSlaveProcess("state")
        """))
        slaves = [processes.python(script, name=f"slave{i}") for i in range(2)]
        master.wait_for_slaves(2, timeout=60)      # both serve, so both must exit cleanly
        from scientific_ms import GlobalStateValue
        state = master.setGlobalState(table=bytes(500_000), scale=2)
        for _ in range(60):   # the placeholder may sit anywhere inside the parameters
            master.requestTask("size", GlobalStateValue(state, "table"), GlobalStateValue(state, "scale"),
                               {"inner": [GlobalStateValue(state, "scale")]})
        results = [master.retrieveResult(timeout=60)[2] for _ in range(60)]
        assert {value for value, pid in results} == {1_000_002}
        fetches = master.task_manager.data_fetches
        served_by = {pid for value, pid in results}
        assert fetches["state_1_table"] <= len(served_by) and fetches["state_1_scale"] <= len(served_by)
        master.deleteGlobalState(state)
        with pytest.raises(ConfigurationError, match=r"GlobalStateValue\(1, 'table'\) names a global state value "
                                                     "that was deleted or never set"):
            master.requestTask("size", 1, 1, {"inner": [GlobalStateValue(state, "table")]})
        with pytest.raises(ConfigurationError, match="never set"):
            master.requestTask("size", GlobalStateValue(99, "x"), 1, {})
        assert master.task_manager.counts()["waiting"] == {}
    finally:
        master.shutdown()
    for slave in slaves:
        assert processes.finish(slave, 15)[0] == 0


def test_secret_from_a_key_file(processes, tmp_path):
    key_file = tmp_path / "job.key"
    key_file.write_text("a secret shared through a file\n")
    key_file.chmod(0o600)
    master = MasterProcess("keyed", use_name_server=False, port=0,
                           secret=b"a secret shared through a file")
    try:
        env = {"SCIENTIFIC_MS_REGISTRY": str(tmp_path / "not-shared"),      # no label file to read
               "SCIENTIFIC_MS_KEY_FILE": str(key_file)}
        slave = processes.python(SLAVE_SCRIPT, "keyed", env=dict(env, SCIENTIFIC_MS_MASTER=f"127.0.0.1:{master.port}"))
        master.requestTask("pid")
        assert master.retrieveResult(timeout=60)[2] == slave.pid
        shown = processes.task_manager("show", "keyed", "-m", f"127.0.0.1:{master.port}", "-k", key_file,
                                       env={"SCIENTIFIC_MS_REGISTRY": str(tmp_path / "not-shared")})
        code, out = processes.finish(shown, 30)
        assert code == 0 and "active process" in out, out
    finally:
        master.shutdown()
