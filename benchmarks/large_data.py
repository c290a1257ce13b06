"""Large values: scientific_ms next to multiprocessing.Pool and ProcessPoolExecutor, in one run.

    python benchmarks/large_data.py [--repeat N] [--only W2 W7]

W2 = 200 tasks sending 1 MB of bytes and returning them; W7 = 200 tasks
sending a numpy array of 8 MB (float64) and returning it; W7r = W7 with a
read-only array, which scientific_ms sends from its own memory instead of
a snapshot (the others treat both alike). Each system has
2 workers; each figure is the best (and the median) of N runs, start-up
excluded: the clock runs from the first request to the last result. The
systems take turns within each repeat, so a busy moment on the machine
hits them all. Pool uses ``imap_unordered`` with chunksize 1,
ProcessPoolExecutor ``submit`` and ``as_completed``.
"""

import argparse
import concurrent.futures
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

import numpy

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from throughput import start_master  # noqa: E402
from workloads import MB, echo, time_executor, time_pool  # noqa: E402

WORKERS = 2
#: name -> parameters of each task (all tasks echo their parameter)
WORKLOADS = {
    "W2": lambda: [bytes(MB)] * 200,
    "W7": lambda: [numpy.ones(MB)] * 200,   # 8 MB each
    "W7r": lambda: [read_only(numpy.ones(MB))] * 200,
}


def read_only(array):
    array.flags.writeable = False
    return array


def run_scientific_ms(master, parameters):
    started = time.perf_counter()
    for value in parameters:
        master.requestTask("echo", value)
    for _ in parameters:
        master.retrieveResult("echo")
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=sorted(WORKLOADS))
    args = parser.parse_args()

    systems = ("scientific_ms", "Pool", "ProcessPoolExecutor")
    times = {}
    master = start_master(WORKERS)
    try:
        with multiprocessing.Pool(WORKERS) as pool, \
                concurrent.futures.ProcessPoolExecutor(WORKERS) as executor:
            runs = {"scientific_ms": lambda p: run_scientific_ms(master, p),
                    "Pool": lambda p: time_pool(pool, echo, p),
                    "ProcessPoolExecutor": lambda p: time_executor(executor, echo, p)}
            for name in args.only:
                parameters = WORKLOADS[name]()
                for _ in range(args.repeat):
                    for system in systems:
                        times.setdefault((name, system), []).append(runs[system](parameters))
    finally:
        master.shutdown()

    print(f"{WORKERS} workers, best and median of {args.repeat} runs, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores; ms per task")
    print(f"{'':4} " + " ".join(f"{system:>22}" for system in systems))
    for name in args.only:
        count = len(WORKLOADS[name]())
        cells = [f"{min(times[name, s]) / count * 1e3:9.3f} ({statistics.median(times[name, s]) / count * 1e3:7.3f})"
                 for s in systems]
        print(f"{name:4} " + " ".join(f"{cell:>22}" for cell in cells))
    print("ratios, best of each (the other system's time / scientific_ms's; >1 means scientific_ms is faster):")
    for name in args.only:
        ours = min(times[name, "scientific_ms"])
        print(f"  {name}: " + ", ".join(f"{s} {min(times[name, s]) / ours:.2f}" for s in systems[1:]))


if __name__ == "__main__":
    main()
