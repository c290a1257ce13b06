"""Several hosts (network namespaces): a cut link, and a master killed on another host."""

import os
import re
import textwrap

from conftest import wait_for

SLAVE_SCRIPT = os.path.join(os.path.dirname(__file__), "slave_script.py")
SECRET = "partition-test-secret"

MASTER = textwrap.dedent("""
    import sys, time
    from scientific_ms import initializeMasterProcess
    master = initializeMasterProcess("partition", use_name_server=False)
    master.wait_for_slaves(2, timeout=60)
    ids = [master.requestTask("marked_work", 0.3, i, sys.argv[1]) for i in range(int(sys.argv[2]))]
    print("REQUESTED", flush=True)
    for _ in ids:
        task_id, tag, value = master.retrieveResult()
        print("RESULT", task_id, value, flush=True)
    counters = master.task_manager.counters
    print("COUNTERS", counters["processes_lost"], counters["rescheduled"],
          counters["duplicates_dropped"], flush=True)
""")


def marker_pids(folder, value):
    return {int(name.split("-")[1]) for name in os.listdir(folder) if name.endswith(f"-{value}")}


def results_exactly_once(out, count):
    """Check a partition master's output: ``count`` results, each once and right.
    Returns its COUNTERS line: (slaves lost, tasks rescheduled, late answers dropped)."""
    results = re.findall(r"^RESULT (\S+) (\d+)$", out, re.M)
    assert len(results) == count and len({task_id for task_id, _ in results}) == count, out
    assert sorted(int(value) for _, value in results) == list(range(count))
    return tuple(map(int, re.search(r"^COUNTERS (\d+) (\d+) (\d+)$", out, re.M).groups()))


def test_a_cut_link_reschedules_and_duplicates_nothing(hosts, processes, tmp_path):
    master_host, host_a, host_b = hosts.host("m"), hosts.host("a"), hosts.host("b")
    hosts.link(master_host, host_a, "10.213.1")
    hosts.link(master_host, host_b, "10.213.2")
    markers = tmp_path / "markers"
    markers.mkdir()
    (tmp_path / "master.py").write_text(MASTER)
    env = {"SCIENTIFIC_MS_SECRET": SECRET, "SCIENTIFIC_MS_PORT": "7766"}
    master = processes.start(hosts.command(master_host, os.sys.executable, tmp_path / "master.py", markers, 24),
                             env=env, name="master")
    slave_a = processes.start(hosts.command(host_a, os.sys.executable, SLAVE_SCRIPT, "partition", 0.25),
                              env=dict(env, SCIENTIFIC_MS_MASTER="10.213.1.1:7766"), name="slave_a")
    slave_b = processes.start(hosts.command(host_b, os.sys.executable, SLAVE_SCRIPT, "partition", 0.25),
                              env=dict(env, SCIENTIFIC_MS_MASTER="10.213.2.1:7766"), name="slave_b")
    # Cut host a's link while its slave is inside a task.
    wait_for(lambda: any(name.startswith(f"started-{slave_a.pid}-") for name in os.listdir(markers)),
             60, "slave a to start a task")
    held = [name.rsplit("-", 1)[1] for name in os.listdir(markers) if name.startswith(f"started-{slave_a.pid}-")]
    hosts.cut(master_host, host_a)
    # The master stops hearing from a (4 x 0.25 s) and b runs a's task.
    wait_for(lambda: slave_b.pid in marker_pids(markers, held[-1]), 60, "slave b to take over a's task")
    hosts.mend(master_host, host_a)
    code, out = processes.finish(master, 90)
    assert code == 0, out
    lost, rescheduled, dropped = results_exactly_once(out, 24)
    assert lost >= 1 and rescheduled >= 1, out
    for slave in (slave_a, slave_b):
        code, out = processes.finish(slave, 60)
        assert code == 0, out
    print(f"\npartition: {lost} slave declared dead, {rescheduled} task(s) rescheduled, "
          f"{dropped} late answer(s) dropped, 24/24 results exactly once")


def test_slaves_on_another_host_exit_when_the_master_is_killed(hosts, processes, tmp_path):
    master_host, host_a = hosts.host("m"), hosts.host("a")
    hosts.link(master_host, host_a, "10.213.3")
    (tmp_path / "master.py").write_text(textwrap.dedent("""
        import time
        from scientific_ms import initializeMasterProcess
        master = initializeMasterProcess("remote", use_name_server=False)
        master.requestTask("work", 60.0, "busy")
        master.wait_for_slaves(2, timeout=60)
        assert master.task_manager.wait_for_running(1, timeout=60), "the task never started"
        print("READY", flush=True)
        time.sleep(600)
    """))
    env = {"SCIENTIFIC_MS_SECRET": SECRET, "SCIENTIFIC_MS_PORT": "7766"}
    master = processes.start(hosts.command(master_host, os.sys.executable, tmp_path / "master.py"),
                             env=env, name="master")
    slave_env = dict(env, SCIENTIFIC_MS_MASTER="10.213.3.1:7766")
    busy = processes.start(hosts.command(host_a, os.sys.executable, SLAVE_SCRIPT, "remote", 1.0),
                           env=slave_env, name="busy")
    idle = processes.start(hosts.command(host_a, os.sys.executable, SLAVE_SCRIPT, "remote", 1.0),
                           env=slave_env, name="idle")
    wait_for(lambda: "READY" in processes.output(master), 60, "both slaves to join, one busy")
    master.kill()
    for slave in (busy, idle):
        code, out = processes.finish(slave, 30)
        assert code == 1 and "lost its master" in out, out



def test_a_slave_on_another_host_finds_its_master_by_the_label_file(hosts, processes, tmp_path):
    """Hosts sharing a home directory: no address, no secret, no name server: only the label."""
    master_host, host_a = hosts.host("m"), hosts.host("a")
    hosts.link(master_host, host_a, "10.213.4")
    (tmp_path / "master.py").write_text(textwrap.dedent("""
        from scientific_ms import initializeMasterProcess
        master = initializeMasterProcess("shared_home", use_name_server=False)
        ids = [master.requestTask("pid") for _ in range(5)]
        print("PIDS", sorted({master.retrieveResult()[2] for _ in ids}), flush=True)
    """))
    master = processes.start(hosts.command(master_host, os.sys.executable, tmp_path / "master.py"),
                             name="master")
    slave = processes.start(hosts.command(host_a, os.sys.executable, SLAVE_SCRIPT, "shared_home"),
                            name="slave")
    code, out = processes.finish(master, 60)
    assert code == 0, out
    assert f"PIDS [{slave.pid}]" in out
    assert processes.finish(slave, 30)[0] == 0
