"""Small tasks over a slow link: a master and its slaves on two hosts joined by a delayed link.

    sudo python benchmarks/delayed_link.py [OLD] [NEW] [--delays 100 200] [--slaves 2]
                                           [--task-ms 5 50] [--seconds 2] [--rounds 1]

Two throwaway hosts (Linux network namespaces, as tests/netns.py makes
them) are joined by a veth pair whose two ends each delay their packets
by half of a round trip (``tc qdisc ... netem delay``); where the kernel
has no netem, the slaves reach the master through a relay on the
master's host that delays each direction by half a round trip instead
(benchmarks/delay_relay.py). A master runs on
one host, ``--slaves`` slave processes on the other; the master times
tasks that sleep ``--task-ms`` ms each, about ``--seconds`` s of work per
slave, from the first request to the last result, after a warm-up that
lets the slaves measure their tasks and their link. The ideal is every
slave busy all the time: slaves / task time tasks per second.

Each figure is measured with two trees of scientific_ms, OLD (default
/work/main) and NEW (default the checkout holding this file), alternating
which goes first from round to round; every process of a run imports the
tree through PYTHONPATH. It prints tasks/s, the share of the ideal, and
the ratio new / old (above 1: the new tree is faster). Needs root and
iproute2 (with the netem queueing discipline).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUBNET = "10.231.7"
PORT = 7791
RELAY_PORT = 7792
SECRET = "delayed-link-benchmark-secret"


def do_nap(seconds):
    """The slaves' task: sleep (the CPU stays free for the master and the other slave)."""
    time.sleep(seconds)
    return seconds


# ---------------------------------------------------------------- the children

def serve_as_slave(label):
    from scientific_ms import startSlaveProcess
    startSlaveProcess(label, wait=True, wait_timeout=60)


def run_master(label, slaves, task_seconds, count):
    """Time ``count`` naps on ``slaves`` slaves; print JSON."""
    import scientific_ms
    from scientific_ms import MasterProcess
    master = MasterProcess(label, use_name_server=False, port=PORT)
    print("listening", flush=True)   # the slaves may start
    try:
        master.wait_for_slaves(slaves, timeout=60)
        # Warm-up: the master learns the tasks' duration, each slave its tasks' and its round trip.
        warm = max(20, count // 10)
        for _ in range(warm):
            master.requestTask("nap", task_seconds)
        for _ in range(warm):
            master.retrieveResult(timeout=120)
        started = time.perf_counter()
        for _ in range(count):
            master.requestTask("nap", task_seconds)
        for _ in range(count):
            master.retrieveResult(timeout=300)
        elapsed = time.perf_counter() - started
    finally:
        master.shutdown()
    print(json.dumps({"seconds": elapsed, "tasks": count, "tree": str(Path(scientific_ms.__file__).parents[1])}))


# ---------------------------------------------------------------- the hosts

def run(command, check=True):
    return subprocess.run(command, check=check, capture_output=True, text=True)


def netem_works():
    """Can this kernel delay packets (the netem queueing discipline)?"""
    host = f"dlprobe{os.getpid() % 100000}"
    run(["ip", "netns", "add", host])
    try:
        return run(["ip", "netns", "exec", host, "tc", "qdisc", "add", "dev", "lo", "root", "netem",
                    "delay", "1ms"], check=False).returncode == 0
    finally:
        run(["ip", "netns", "del", host], check=False)


class Link:
    """Hosts m (the master) and s (the slaves), joined by a veth pair delayed by ``rtt_ms`` in all
    (by netem, or by a relay on m: ``self.port`` is where the slaves find the master)."""

    def __init__(self, rtt_ms, netem):
        self.relay = None
        self.hosts = []
        try:
            self._make(rtt_ms, netem)
        except BaseException:
            self.remove()
            raise

    def _make(self, rtt_ms, netem):
        prefix = f"dl{os.getpid() % 100000}"
        self.master_host, self.slave_host = f"{prefix}_m", f"{prefix}_s"
        for host in (self.master_host, self.slave_host):
            run(["ip", "netns", "add", host])
            self.hosts.append(host)
            run(["ip", "netns", "exec", host, "ip", "link", "set", "lo", "up"])
        end_m, end_s = f"{prefix}m", f"{prefix}s"
        run(["ip", "link", "add", end_m, "type", "veth", "peer", "name", end_s])
        for end, host, address in ((end_m, self.master_host, 1), (end_s, self.slave_host, 2)):
            run(["ip", "link", "set", end, "netns", host])
            run(["ip", "netns", "exec", host, "ip", "addr", "add", f"{SUBNET}.{address}/24", "dev", end])
            run(["ip", "netns", "exec", host, "ip", "link", "set", end, "up"])
            if rtt_ms and netem:
                run(["ip", "netns", "exec", host, "tc", "qdisc", "add", "dev", end, "root", "netem",
                     "delay", f"{rtt_ms / 2:g}ms", "limit", "100000"])
        self.master_address = f"{SUBNET}.1"
        self.port = PORT
        if rtt_ms and not netem:
            self.relay = subprocess.Popen(
                self.command(self.master_host, sys.executable, HERE / "delay_relay.py", self.master_address,
                             RELAY_PORT, "127.0.0.1", PORT, rtt_ms / 2), stdout=subprocess.PIPE, text=True)
            if self.relay.stdout.readline().strip() != "listening":
                raise SystemExit("the delay relay did not start")
            self.port = RELAY_PORT

    def remove(self):
        if self.relay is not None:
            self.relay.terminate()
            self.relay.wait(timeout=30)
        for host in self.hosts:
            run(["ip", "netns", "del", host], check=False)

    def command(self, host, *args):
        return ["ip", "netns", "exec", host, *map(str, args)]


def measure(link, tree, slaves, task_seconds, count, registry):
    """One run of ``tree``: tasks per second."""
    env = dict(os.environ, PYTHONPATH=str(tree), SCIENTIFIC_MS_SECRET=SECRET, SCIENTIFIC_MS_REGISTRY=registry,
               SCIENTIFIC_MS_MASTER=f"{link.master_address}:{link.port}")
    label = f"delayed{os.getpid()}"
    me = Path(__file__).resolve()
    master = subprocess.Popen(link.command(link.master_host, sys.executable, me, "--child", "master", label,
                                           slaves, task_seconds, count),
                              env=env, cwd=tree, stdout=subprocess.PIPE, text=True)
    if master.stdout.readline().strip() != "listening":
        master.kill()
        master.wait()
        raise SystemExit(f"the master of {tree} did not start")
    workers = [subprocess.Popen(link.command(link.slave_host, sys.executable, me, "--child", "slave", label),
                                env=env, cwd=tree, stdout=subprocess.DEVNULL)
               for _ in range(slaves)]
    try:
        out, _ = master.communicate(timeout=900)
    finally:
        for process in [master, *workers]:
            if process.poll() is None:
                try:
                    process.wait(timeout=30)   # the slaves end with their master
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    if master.returncode != 0:
        raise SystemExit(f"the master of {tree} failed (exit {master.returncode})")
    figures = json.loads(out.strip().splitlines()[-1])
    if Path(figures["tree"]).resolve() != Path(tree).resolve():
        raise SystemExit(f"the run meant for {tree} imported scientific_ms from {figures['tree']}")
    return figures["tasks"] / figures["seconds"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", nargs="?", default="/work/main", help="the tree compared against")
    parser.add_argument("new", nargs="?", default=str(HERE.parent), help="the tree measured")
    parser.add_argument("--delays", type=float, nargs="+", default=[100.0, 200.0],
                        help="round trips of the link, ms (half each way)")
    parser.add_argument("--slaves", type=int, default=2)
    parser.add_argument("--task-ms", type=float, nargs="+", default=[5.0, 50.0])
    parser.add_argument("--seconds", type=float, default=2.0, help="ideal run time of a measurement")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        role, label, *rest = args.child
        if role == "slave":
            serve_as_slave(label)
        else:
            run_master(label, int(rest[0]), float(rest[1]), int(rest[2]))
        return
    if os.geteuid() != 0:
        raise SystemExit("this benchmark makes network namespaces: run it as root")
    trees = {"old": Path(args.old).resolve(), "new": Path(args.new).resolve()}
    netem = netem_works()
    print(f"old: {trees['old']}\nnew: {trees['new']}\n{args.slaves} slave(s) on the far host, "
          f"best of {args.rounds} round(s); delayed by "
          f"{'netem' if netem else 'a relay (no netem in this kernel)'}\n")
    print(f"{'round trip':>10} {'task':>6} {'ideal/s':>8} {'old/s':>8} {'of ideal':>8} "
          f"{'new/s':>8} {'of ideal':>8} {'new/old':>8}")
    with tempfile.TemporaryDirectory() as registry:
        for rtt in args.delays:
            link = Link(rtt, netem)
            try:
                for task_ms in args.task_ms:
                    task_seconds = task_ms / 1000
                    ideal = args.slaves / task_seconds
                    count = max(20, round(ideal * args.seconds))
                    rates = {"old": [], "new": []}
                    for round_number in range(args.rounds):
                        order = ("old", "new") if round_number % 2 == 0 else ("new", "old")
                        for name in order:
                            rates[name].append(measure(link, trees[name], args.slaves, task_seconds, count,
                                                       registry))
                    old, new = max(rates["old"]), max(rates["new"])
                    spread = "" if args.rounds < 2 else \
                        f"   (medians {statistics.median(rates['old']):.1f} / {statistics.median(rates['new']):.1f})"
                    print(f"{rtt:>8g}ms {task_ms:>4g}ms {ideal:>8.1f} {old:>8.1f} {old / ideal:>8.0%} "
                          f"{new:>8.1f} {new / ideal:>8.0%} {new / old:>7.2f}x{spread}", flush=True)
            finally:
                link.remove()


if __name__ == "__main__":
    main()
