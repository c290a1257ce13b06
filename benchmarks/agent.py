"""Slaves behind a node agent next to slaves that speak to the master directly.

    python benchmarks/agent.py [--repeat 5] [--workers 2] [--only W1 W2 W3] [--relay]

Two masters run side by side in this process: one served by ``--workers``
``task_manager slave LABEL`` processes (each its own connections), the
other by one ``task_manager slave LABEL -n WORKERS`` node agent. The
workloads of throughput.py run on each in turn (W1 = 20,000 tasks x + 1,
W2 = 200 tasks of 1 MB in and out, W3 = 400 tasks of 10 ms); each figure is
the best of ``--repeat`` runs, from the first request to the last result,
with the master's CPU time per task. The ratio is agent / direct in tasks
per second: above 1 the agent is faster.

With ``--relay``, a third master is served by the same node agent relaying
its workers' calls (``slave/relay.py``; ``SCIENTIFIC_MS_RELAY_WORKERS=1``,
whatever ``--workers``), and the ratios relayed / agent are printed too.
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from throughput import run_scientific_ms  # noqa: E402
from workloads import WORKLOADS  # noqa: E402

from scientific_ms import MasterProcess  # noqa: E402


def start(label, workers, agent, relay=False):
    master = MasterProcess(label, use_name_server=False, port=0)
    master.store_slave_code((HERE / "bench_slave.py").read_text(), str(HERE / "bench_slave.py"))
    command = [sys.executable, "-m", "scientific_ms", "slave", label, "-m", f"127.0.0.1:{master.port}"]
    env = dict(os.environ, SCIENTIFIC_MS_SECRET=master.secret.decode(),
               SCIENTIFIC_MS_RELAY_WORKERS="1" if relay else "0")
    if agent:
        slaves = [subprocess.Popen(command + ["-n", str(workers)], env=env, cwd=HERE)]
    else:
        slaves = [subprocess.Popen(command, env=env, cwd=HERE) for _ in range(workers)]
    master.wait_for_slaves(workers, timeout=60)
    return master, slaves


def stop(master, slaves):
    """Shut the master down and reap the slave processes started for it."""
    master.shutdown()
    for slave in slaves:
        try:
            slave.wait(30)
        except subprocess.TimeoutExpired:
            slave.kill()
            slave.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=sorted(WORKLOADS))
    parser.add_argument("--relay", action="store_true", help="also a node agent that relays its workers' calls")
    args = parser.parse_args()
    me = psutil.Process()
    systems = {"direct": start("agent-bench-direct", args.workers, agent=False),
               "agent": start("agent-bench-agent", args.workers, agent=True)}
    if args.relay:
        systems["relayed"] = start("agent-bench-relayed", args.workers, agent=True, relay=True)
    figures = {}
    try:
        for name in args.only:
            function, make_parameters, _ = WORKLOADS[name]
            parameters = list(make_parameters())
            for _ in range(args.repeat):
                for system, (master, _) in systems.items():   # alternating, so that noise hits both
                    cpu = sum(me.cpu_times()[:2])
                    seconds, count = run_scientific_ms(master, function, parameters)
                    cpu = sum(me.cpu_times()[:2]) - cpu
                    best = figures.get((name, system))
                    if best is None or seconds < best[0]:
                        figures[name, system] = (seconds, count, cpu)
    finally:
        for master, slaves in systems.values():
            stop(master, slaves)
    print(f"{args.workers} slaves, best of {args.repeat} runs, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores")
    print(f"{'workload':8} {'slaves':8} {'seconds':>8} {'tasks/s':>9} {'master CPU/task':>16}")
    for (name, system), (seconds, count, cpu) in figures.items():
        print(f"{name:8} {system:8} {seconds:8.3f} {count / seconds:9.0f} {cpu / count * 1e6:13.1f} us")
    print("ratios (agent / direct, tasks per second; >1 means the agent is faster):")
    for name in args.only:
        direct, agent = figures[name, "direct"][0], figures[name, "agent"][0]
        print(f"  {name}: {direct / agent:.2f}")
    if args.relay:
        print("ratios (relayed / agent and relayed / direct, tasks per second; >1 means relayed is faster):")
        for name in args.only:
            direct, agent, relayed = (figures[name, system][0] for system in ("direct", "agent", "relayed"))
            print(f"  {name}: {agent / relayed:.2f}  {direct / relayed:.2f}")


if __name__ == "__main__":
    main()
