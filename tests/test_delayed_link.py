"""A slave far from its master (a link with a 100 ms round trip) asks for enough work to cover it.

The master and the slave run on two hosts (network namespaces, tests/netns.py);
the link is delayed by netem, or, where the kernel has none, by a relay on
the master's host (benchmarks/delay_relay.py). No timing is asserted: the
test reads, at the master, how many tasks the slave asked for, how much
work it asked to hold, and how many tasks one exchange handed it.
"""

import os
import subprocess
import sys
import textwrap

from conftest import wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLAVE_SCRIPT = os.path.join(ROOT, "tests", "slave_script.py")
RELAY = os.path.join(ROOT, "benchmarks", "delay_relay.py")
SECRET = "delayed-link-test-secret"
ROUND_TRIP_MS = 100
TASKS = 40
TASK_SECONDS = 0.005

#: A master that records every take_tasks call (max_tasks, queue_seconds, tasks handed),
#: runs TASKS tasks of TASK_SECONDS on one slave and prints what it saw.
MASTER = textwrap.dedent("""
    import sys
    from scientific_ms import MasterProcess
    from scientific_ms.core.manager import TaskManager

    label, count, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    calls = []
    take_tasks = TaskManager.take_tasks

    def recording(self, process_id, max_tasks=1, timeout=0.0, queue_seconds=None):
        tasks = take_tasks(self, process_id, max_tasks, timeout, queue_seconds)
        calls.append((max_tasks, queue_seconds, len(tasks)))
        return tasks

    TaskManager.take_tasks = recording
    master = MasterProcess(label, use_name_server=False)
    master.wait_for_slaves(1, timeout=60)
    ids = {master.requestTask("work", seconds, i) for i in range(count)}
    values = set()
    for _ in range(count):
        task_id, tag, (value, pid) = master.retrieveResult(timeout=120)
        ids.discard(task_id)
        values.add(value)
    print("DONE", len(ids), sorted(values) == list(range(count)), flush=True)
    print("ASKED", max(c[0] for c in calls), flush=True)
    print("HOLD", max((c[1] for c in calls if c[1] is not None), default=0.0), flush=True)
    print("BATCH", max(c[2] for c in calls), flush=True)
    master.shutdown()
""")


def netem_works(namespace):
    probe = subprocess.run(["ip", "netns", "exec", namespace, "tc", "qdisc", "add", "dev", "lo", "root",
                            "netem", "delay", "1ms"], capture_output=True)
    subprocess.run(["ip", "netns", "exec", namespace, "tc", "qdisc", "del", "dev", "lo", "root"],
                   capture_output=True)
    return probe.returncode == 0


def delay(hosts, namespace, end, one_way_ms):
    subprocess.run(hosts.command(namespace, "tc", "qdisc", "add", "dev", end, "root", "netem", "delay",
                                 f"{one_way_ms}ms"), check=True, capture_output=True)


def test_a_slave_behind_a_slow_link_asks_for_more_than_the_fixed_queue(hosts, processes, tmp_path):
    master_host, slave_host = hosts.host("m"), hosts.host("s")
    hosts.link(master_host, slave_host, "10.215.1")
    port = 7768
    env = {"SCIENTIFIC_MS_SECRET": SECRET, "SCIENTIFIC_MS_PORT": str(port),
           "SCIENTIFIC_MS_REGISTRY": str(tmp_path / "registry")}
    address = f"10.215.1.1:{port}"
    if netem_works(master_host):
        delay(hosts, master_host, hosts.links[(master_host, slave_host)], ROUND_TRIP_MS // 2)
        slave_end = f"{hosts.prefix}b{len(hosts.links) - 1}"   # as Hosts.link names the other end
        delay(hosts, slave_host, slave_end, ROUND_TRIP_MS // 2)
    else:   # no netem in this kernel: the slave reaches the master through a delaying relay
        relay = processes.start(hosts.command(master_host, sys.executable, RELAY, "10.215.1.1", port + 1,
                                              "127.0.0.1", port, ROUND_TRIP_MS / 2), name="relay")
        wait_for(lambda: "listening" in processes.output(relay), 30, "the relay to listen")
        address = f"10.215.1.1:{port + 1}"
    (tmp_path / "master.py").write_text(MASTER)
    master = processes.start(hosts.command(master_host, sys.executable, tmp_path / "master.py", "delayed",
                                           TASKS, TASK_SECONDS), env=env, name="master")
    slave = processes.start(hosts.command(slave_host, sys.executable, SLAVE_SCRIPT, "delayed"),
                            env=dict(env, SCIENTIFIC_MS_MASTER=address), name="slave")
    code, out = processes.finish(master, 120)
    assert code == 0, out
    assert "DONE 0 True" in out, out
    seen = dict(line.split(" ", 1) for line in out.splitlines() if line.split(" ", 1)[0] in ("ASKED", "HOLD", "BATCH"))
    fixed_batch = 1 + round(0.02 / TASK_SECONDS)   # the task it runs and 20 ms of work queued behind it
    assert int(seen["ASKED"]) > fixed_batch, out                       # more than one task, and than 20 ms' worth
    assert float(seen["HOLD"]) >= 2 * ROUND_TRIP_MS / 1000 * 0.99, out   # it asked to hold two round trips
    assert int(seen["BATCH"]) > fixed_batch, out                       # and the master granted it
    code, output = processes.finish(slave, 60)
    assert code == 0, output
    print(f"\ndelayed link: the slave asked for up to {seen['ASKED']} tasks, to hold {float(seen['HOLD']):.3f} s,"
          f" and got up to {seen['BATCH']} in one exchange")
