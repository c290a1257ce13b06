"""CPU seconds used by each rank of an MPI job running W3, and the makespan.

    python benchmarks/mpi_cpu.py [--ranks 3] [--tasks 400] [--seconds 0.01] [--repeat 1]
                                 [--mpiexec PATH] [-- extra mpiexec flags]

W3 is 400 tasks that each sleep 10 ms; with 2 slave ranks (``--ranks 3``)
the ideal makespan is 2.00 s. The script runs itself under
``mpiexec -n RANKS`` (the job side, ``--job``) and reports:

* from inside the job: the master's CPU and wall time from its first
  ``requestTask`` to its last result (the makespan), and each slave's CPU
  while it had tasks and in total;
* from outside: the cumulative CPU of every process of the job (each rank's
  own process, and on slave ranks the forked slave below it), sampled with
  psutil every 0.1 s until it exits (the last sample of an idle process is
  its total).

CPU is user + system time. Nothing here is asserted; see docs/guide/mpi.md.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time

import psutil

LABEL = "mpi_cpu_w3"


def cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


# ---------------------------------------------------------------- the job (under mpiexec)

def job(tasks: int, seconds: float) -> None:
    from scientific_ms import MasterProcess, SlaveProcess, runJob

    me = psutil.Process()
    rank = os.environ.get("PMI_RANK") or os.environ.get("OMPI_COMM_WORLD_RANK") or os.environ.get("PMIX_RANK")
    print(f"BEFORE-RUNJOB rank={rank} pid={os.getpid()} cpu={cpu(me):.3f}", flush=True)

    class Master(MasterProcess):
        def run(self):
            c0, t0 = cpu(me), time.perf_counter()
            for _ in range(tasks):
                self.requestTask("sleep", seconds)
            for _ in range(tasks):
                self.retrieveResult("sleep")
            t1, c1 = time.perf_counter(), cpu(me)
            print(f"MASTER rank={rank} pid={os.getpid()} makespan={t1 - t0:.3f} cpu_w3={c1 - c0:.3f} "
                  f"cpu_total={c1:.3f}", flush=True)

    class Sleeper(SlaveProcess):
        first = None
        done = 0

        def do_sleep(self, s):
            if Sleeper.first is None:
                Sleeper.first = cpu(psutil.Process())   # this process: on slave ranks, the forked slave
            time.sleep(s)
            Sleeper.done += 1

        def start(self, namespace=None):
            try:
                super().start(namespace)
            finally:
                total = cpu(psutil.Process())
                during = total - (Sleeper.first if Sleeper.first is not None else total)
                print(f"SLAVE rank={rank} pid={os.getpid()} tasks={Sleeper.done} cpu_w3={during:.3f} "
                      f"cpu_total={total:.3f}", flush=True)

    runJob(LABEL, Master, Sleeper)


# ---------------------------------------------------------------- the driver

def find_mpiexec() -> str:
    from scientific_ms.mpi_program import find_mpiexec as found
    return found() or sys.exit("no mpiexec found (pip install mpich, or put one on PATH)")


class TreeSampler(threading.Thread):
    """Keeps the last cumulative CPU time seen for every process below ``root``."""

    def __init__(self, root: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.root = psutil.Process(root)
        self.interval = interval
        self.stop = threading.Event()
        self.seen = {}

    def run(self):
        while True:
            try:
                below = self.root.children(recursive=True)
            except psutil.Error:
                below = []
            for proc in below:
                try:
                    with proc.oneshot():
                        entry = self.seen.setdefault(proc.pid, {
                            "name": proc.name(), "ppid": proc.ppid(),
                            "rank": proc.environ().get("PMI_RANK"), "history": []})
                        entry["cpu"] = cpu(proc)
                        entry["history"].append((time.monotonic(), entry["cpu"]))
                except (psutil.Error, OSError):
                    pass
            if self.stop.wait(self.interval):
                return


def drive(args) -> None:
    mpiexec = args.mpiexec or find_mpiexec()
    command = [mpiexec, *args.flags, "-n", str(args.ranks), sys.executable, os.path.abspath(__file__),
               "--job", "--tasks", str(args.tasks), "--seconds", str(args.seconds)]
    env = dict(os.environ, SCIENTIFIC_MS_NAME_SERVER=os.environ.get("SCIENTIFIC_MS_NAME_SERVER", "0"))
    print("command:", " ".join(command))
    for run in range(args.repeat):
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        sampler = TreeSampler(process.pid)
        sampler.start()
        out, _ = process.communicate(timeout=300)
        wall = time.perf_counter() - started
        sampler.stop.set()
        sampler.join()
        print(f"\n--- run {run + 1}: mpiexec exit {process.returncode}, wall {wall:.2f} s "
              "(start-up and shut-down included)")
        for line in out.splitlines():
            if re.match(r"(BEFORE-RUNJOB|MASTER|SLAVE) ", line) is None:
                print("   ", line)
        before = {m["rank"]: float(m["cpu"]) for m in
                  (re.match(r"BEFORE-RUNJOB rank=(?P<rank>\S+) pid=\d+ cpu=(?P<cpu>\S+)", line)
                   for line in out.splitlines()) if m}
        for line in out.splitlines():
            if line.startswith(("MASTER ", "SLAVE ")):
                print("  job:", line)
        pythons = {pid: e for pid, e in sampler.seen.items() if e["name"].startswith("python")}
        for pid, entry in sorted(pythons.items(), key=lambda item: (item[1]["rank"] or "", item[0])):
            forked = entry["ppid"] in pythons
            role = ("slave (forked)" if forked else
                    "master" if entry["rank"] == "0" else "rank process (waits)")
            extra = ""
            if not forked and entry["rank"] in before:
                extra = f", of which before runJob {before[entry['rank']]:.3f} s"
            children = [e for e in pythons.values() if e["ppid"] == pid]
            if children and children[0]["history"]:
                forked_at = children[0]["history"][0][0]
                after = [c for t, c in entry["history"] if t >= forked_at]
                if after:
                    extra += f", while its slave ran {entry['cpu'] - after[0]:.3f} s"
            print(f"  outside: rank {entry['rank']} pid {pid} {role:22s} cpu {entry.get('cpu', 0):.3f} s{extra}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ranks", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=0.01)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--mpiexec")
    parser.add_argument("flags", nargs="*", help="extra mpiexec flags (after --)")
    args = parser.parse_args(argv)
    if args.job:
        job(args.tasks, args.seconds)
    else:
        drive(args)


if __name__ == "__main__":
    main()
