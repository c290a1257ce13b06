"""Load balance: makespan against the ideal, next to multiprocessing.Pool and ProcessPoolExecutor.

    python benchmarks/balance.py [--repeat N] [--only W4 W5 ...]

Every workload runs on 2 workers, the clock from the first request to the
last result; the ideal is max(total work / workers, longest task), and for
W6 the second worker joins 1 s late. Tasks sleep, so the figures measure
scheduling, not CPU contention.

- W3: 400 tasks of 10 ms (uniform);
- W4: 50 tasks of a few microseconds of one tag, then 400 tasks of 10 ms of another;
- W5: 300 tasks with heavy-tailed durations (most a few ms, a few of 100+ ms; seeded);
- W6: 400 tasks of 10 ms, all queued before the second worker is started, 1 s
  later; its ideal counts from the moment that worker connected (starting
  a Python process is not scheduling), and the time it took is printed;
- W8: one 1 s task among 200 tasks of 10 ms.

Each scientific_ms run uses a fresh master and fresh slaves, so nothing is
learned from an earlier workload. Pool uses ``imap_unordered`` with
chunksize 1, ProcessPoolExecutor ``submit``; neither can add a worker
late, so they do not run W6.
"""

import argparse
import concurrent.futures
import multiprocessing
import os
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from workloads import inc, nap, time_executor, time_pool  # noqa: E402

from scientific_ms import MasterProcess  # noqa: E402

WORKERS = 2
LATE_JOIN = 1.0


def heavy_tail(count=300, seed=5):
    rng = random.Random(seed)
    return [min(0.6, 0.002 * rng.paretovariate(1.1)) for _ in range(count)]


#: name -> list of (tag, parameter) in request order; each tag's function sleeps or adds
WORKLOADS = {
    "W3": lambda: [("nap", 0.01)] * 400,
    "W4": lambda: [("inc", i) for i in range(50)] + [("nap", 0.01)] * 400,
    "W5": lambda: [("nap", s) for s in heavy_tail()],
    "W6": lambda: [("nap", 0.01)] * 400,
    "W8": lambda: [("nap", 1.0)] + [("nap", 0.01)] * 200,
}
FUNCTIONS = {"inc": inc, "nap": nap}


def ideal(name, tasks, joined=None):
    work = sum(p for tag, p in tasks if tag == "nap")
    longest = max(p for tag, p in tasks if tag == "nap")
    if name == "W6":   # one worker alone until the second connected, then both
        return joined + max(0.0, work - joined) / WORKERS
    return max(work / WORKERS, longest)


def start_master(workers):
    master = MasterProcess(f"balance-{os.getpid()}", use_name_server=False, port=0)
    master.store_slave_code((HERE / "bench_slave.py").read_text(), str(HERE / "bench_slave.py"))
    if workers:
        master.launchSlaveJobs(workers)
        master.wait_for_slaves(workers, timeout=60)
    return master


def run_scientific_ms(name, tasks):
    master = start_master(1 if name == "W6" else WORKERS)
    try:
        started = time.perf_counter()
        for tag, parameter in tasks:
            master.requestTask(tag, parameter)
        if name == "W6":
            # join, counted from the last request, without holding up the results
            joined = time.perf_counter() + LATE_JOIN
            results = 0
            while time.perf_counter() < joined:
                try:
                    master.retrieveResult(timeout=max(0.001, joined - time.perf_counter()))
                    results += 1
                except TimeoutError:
                    pass
            launched = time.perf_counter()
            master.launchSlaveJobs(1)
            master.wait_for_slaves(2, timeout=60)
            joined = time.perf_counter() - started
            print(f"W6: the second worker connected {time.perf_counter() - launched:.2f} s after it was started")
        else:
            results, joined = 0, None
        per_slave = {}
        for _ in range(len(tasks) - results):
            master.retrieveResult()
        elapsed = time.perf_counter() - started
        for process in master.task_manager.status()["processes"]:
            if process["role"] != "master":
                per_slave[process["pid"]] = process["tasks_done"]
        stolen = master.task_manager.counters["stolen"]
    finally:
        master.shutdown()
    return elapsed, sorted(per_slave.values()), stolen, joined


def call(item):
    tag, parameter = item
    return FUNCTIONS[tag](parameter)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=sorted(WORKLOADS))
    args = parser.parse_args()
    os.chdir(HERE)
    rows = []
    with multiprocessing.Pool(WORKERS) as pool, \
            concurrent.futures.ProcessPoolExecutor(WORKERS) as executor:
        for name in args.only:
            tasks = WORKLOADS[name]()
            runs = [run_scientific_ms(name, tasks) for _ in range(args.repeat)]
            best = min(runs, key=lambda run: run[0] / ideal(name, tasks, run[3]))
            pool_s = None if name == "W6" else min(time_pool(pool, call, tasks) for _ in range(args.repeat))
            executor_s = None if name == "W6" else min(time_executor(executor, call, tasks)
                                                       for _ in range(args.repeat))
            rows.append((name, ideal(name, tasks, best[3]), best[:3], pool_s, executor_s, best[3]))
    print(f"{WORKERS} workers, best of {args.repeat} runs, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores; makespan in seconds, and its ratio to the ideal")
    print(f"{'':4} {'ideal':>6} {'scientific_ms':>17} {'tasks per slave':>16} {'stolen':>6} "
          f"{'Pool':>14} {'ProcessPool':>14}")
    for name, best_ideal, (ours, per_slave, stolen), pool_s, executor_s, _joined in rows:
        def cell(seconds, best_ideal=best_ideal):
            return f"{'-':>14}" if seconds is None else f"{seconds:7.3f} ({seconds / best_ideal:4.2f})"
        print(f"{name:4} {best_ideal:6.3f} {ours:8.3f} ({ours / best_ideal:4.2f})   "
              f"{'/'.join(map(str, per_slave)):>16} {stolen:6} {cell(pool_s)} {cell(executor_s)}")


if __name__ == "__main__":
    main()
