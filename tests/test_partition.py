"""Several hosts (network namespaces): a cut link, and a master killed on another host."""

import os
import re
import textwrap

from conftest import wait_for

SLAVE_SCRIPT = os.path.join(os.path.dirname(__file__), "slave_script.py")
SECRET = "partition-test-secret"

#: A master of LABEL that waits for SLAVES slaves, then runs 24 marked tasks; with a
#: SLAVE_SCRIPT, it stores that as the slave code (for a node agent's slaves).
MASTER = textwrap.dedent("""
    import sys
    from scientific_ms import initializeMasterProcess
    markers, label, slaves = sys.argv[1], sys.argv[2], int(sys.argv[3])
    master = initializeMasterProcess(label, use_name_server=False)
    if len(sys.argv) > 4:
        slave_script = sys.argv[4]
        with open(slave_script) as source:
            master.store_slave_code(source.read(), slave_script, [slave_script, label, "0.25"])
    master.wait_for_slaves(slaves, timeout=60)
    ids = [master.requestTask("marked_work", 0.3, i, markers) for i in range(24)]
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


def start_partition_master(hosts, processes, tmp_path, subnet, env, *arguments):
    """Hosts m, a and b, a and b linked to m on ``subnet``.1 and .2, and MASTER on m
    (``arguments``: LABEL SLAVES [SLAVE_SCRIPT]). Returns (m, a, b, markers, master)."""
    master_host, host_a, host_b = hosts.host("m"), hosts.host("a"), hosts.host("b")
    hosts.link(master_host, host_a, f"{subnet}.1")
    hosts.link(master_host, host_b, f"{subnet}.2")
    markers = tmp_path / "markers"
    markers.mkdir()
    (tmp_path / "master.py").write_text(MASTER)
    master = processes.start(hosts.command(master_host, os.sys.executable, tmp_path / "master.py", markers,
                                           *arguments), env=env, name="master")
    return master_host, host_a, host_b, markers, master


def cut_until_taken_over(hosts, processes, master_host, cut_host, markers, task, taker, master, others):
    """Cut ``cut_host`` off the master until ``taker`` runs ``task`` instead, mend the link,
    and let the job end: 24 results, each exactly once; each of ``others`` exits cleanly.
    Returns (slaves lost, tasks rescheduled, late answers dropped, the master's output)."""
    hosts.cut(master_host, cut_host)
    # The master stops hearing from the cut host (4 x 0.25 s); the taker runs its task.
    wait_for(lambda: taker.pid in marker_pids(markers, task), 60, f"another host to take over task {task}")
    hosts.mend(master_host, cut_host)
    code, out = processes.finish(master, 90)
    assert code == 0, out
    counters = results_exactly_once(out, 24)
    for process in others:
        code, output = processes.finish(process, 60)
        assert code == 0, output
    return (*counters, out)


def test_a_cut_link_reschedules_and_duplicates_nothing(hosts, processes, tmp_path):
    env = {"SCIENTIFIC_MS_SECRET": SECRET, "SCIENTIFIC_MS_PORT": "7766"}
    master_host, host_a, host_b, markers, master = start_partition_master(
        hosts, processes, tmp_path, "10.213", env, "partition", 2)
    slave_a = processes.start(hosts.command(host_a, os.sys.executable, SLAVE_SCRIPT, "partition", 0.25),
                              env=dict(env, SCIENTIFIC_MS_MASTER="10.213.1.1:7766"), name="slave_a")
    slave_b = processes.start(hosts.command(host_b, os.sys.executable, SLAVE_SCRIPT, "partition", 0.25),
                              env=dict(env, SCIENTIFIC_MS_MASTER="10.213.2.1:7766"), name="slave_b")
    # Cut host a's link while its slave is inside a task.
    wait_for(lambda: any(name.startswith(f"started-{slave_a.pid}-") for name in os.listdir(markers)),
             60, "slave a to start a task")
    held = [name.rsplit("-", 1)[1] for name in os.listdir(markers) if name.startswith(f"started-{slave_a.pid}-")]
    lost, rescheduled, dropped, out = cut_until_taken_over(hosts, processes, master_host, host_a, markers,
                                                           held[-1], slave_b, master, (slave_a, slave_b))
    assert lost >= 1 and rescheduled >= 1, out
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
