"""Throughput of scientific_ms next to multiprocessing.Pool, measured in one run.

    python benchmarks/throughput.py [--repeat N] [--workers 2]

W1 = 20,000 tasks x + 1 (pure overhead), W2 = 200 tasks sending 1 MB and
returning 1 MB, W3 = 400 tasks sleeping 10 ms (ideal makespan 2.00 s with
2 workers). Each figure is the best of N runs, start-up excluded: the
clock runs from the first request to the last result.
"""

import argparse
import functools
import multiprocessing
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from workloads import WORKLOADS  # noqa: E402

from scientific_ms import MasterProcess  # noqa: E402


def run_pool(pool, function, parameters):
    started = time.perf_counter()
    count = sum(1 for _ in pool.imap_unordered(function, parameters, chunksize=1))
    return time.perf_counter() - started, count


def run_scientific_ms(master, function, parameters):
    tag = {"inc": "inc", "echo": "echo", "nap": "nap"}[function.__name__]
    started = time.perf_counter()
    for value in parameters:
        master.requestTask(tag, value)
    count = 0
    for _ in parameters:
        master.retrieveResult(tag)
        count += 1
    return time.perf_counter() - started, count


def start_master(workers):
    master = MasterProcess("throughput-benchmark", use_name_server=False, port=0)
    source = (HERE / "bench_slave.py").read_text()
    os.chdir(HERE)
    master.store_slave_code(source, str(HERE / "bench_slave.py"))
    master.launchSlaveJobs(workers)
    master.wait_for_slaves(workers, timeout=60)
    return master


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=sorted(WORKLOADS))
    args = parser.parse_args()

    figures = {}
    master = start_master(args.workers)
    try:
        with multiprocessing.Pool(args.workers) as pool:
            for name in args.only:
                function, make_parameters, _ = WORKLOADS[name]
                parameters = list(make_parameters())
                systems = (("Pool.imap_unordered", functools.partial(run_pool, pool, function, parameters)),
                           ("scientific_ms", functools.partial(run_scientific_ms, master, function, parameters)))
                for system, run in systems:
                    best = min(run()[0] for _ in range(args.repeat))
                    figures[name, system] = (best, len(parameters))
    finally:
        master.shutdown()

    print(f"{args.workers} workers, best of {args.repeat} runs, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores")
    print(f"{'workload':8} {'system':20} {'seconds':>8} {'tasks/s':>9} {'us/task':>9}")
    for (name, system), (seconds, count) in figures.items():
        print(f"{name:8} {system:20} {seconds:8.3f} {count / seconds:9.0f} {seconds / count * 1e6:9.1f}")
    print("ratios (scientific_ms / Pool, tasks per second; >1 means faster):")
    for name in args.only:
        pool_s = figures[name, "Pool.imap_unordered"][0]
        ours_s = figures[name, "scientific_ms"][0]
        print(f"  {name}: {pool_s / ours_s:.2f}")


if __name__ == "__main__":
    main()
