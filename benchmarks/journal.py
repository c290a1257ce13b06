"""The journal's cost: W1 and W3 with a journal against without, 2 slaves, in one run.

    python benchmarks/journal.py [--repeat N] [--workers 2]

W1 = 20,000 tasks x + 1 (pure overhead: the journal's worst case), W3 =
400 tasks sleeping 10 ms. Each run gets a fresh master, fresh slaves and a
fresh journal (a journal already holding the answers would serve them
from disk); runs with and without a journal alternate, and each figure is
the best of N. The clock runs from the first request to the last result.
Goal: W1 at least 0.8x, W3 unchanged.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from throughput import run_scientific_ms  # noqa: E402
from workloads import WORKLOADS  # noqa: E402

from scientific_ms import MasterProcess  # noqa: E402


def timed_run(name, workers, journal):
    master = MasterProcess("journal-benchmark", use_name_server=False, port=0, journal=journal)
    try:
        master.store_slave_code((HERE / "bench_slave.py").read_text(), str(HERE / "bench_slave.py"))
        master.launchSlaveJobs(workers)
        master.wait_for_slaves(workers, timeout=60)
        function, make_parameters, _ = WORKLOADS[name]
        parameters = list(make_parameters())
        seconds, count = run_scientific_ms(master, function, parameters)
        assert count == len(parameters)
        return seconds
    finally:
        master.shutdown()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=["W1", "W3"])
    args = parser.parse_args()
    os.chdir(HERE)
    best = {}
    with tempfile.TemporaryDirectory(prefix="journal-benchmark-") as folder:
        for name in args.only:
            for repeat in range(args.repeat):
                for system in ("no journal", "journal"):
                    journal = os.path.join(folder, f"{name}-{repeat}.db") if system == "journal" else None
                    seconds = timed_run(name, args.workers, journal)
                    best[name, system] = min(seconds, best.get((name, system), float("inf")))
    print(f"{args.workers} slaves, best of {args.repeat} runs, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores")
    print(f"{'workload':8} {'system':12} {'seconds':>8} {'tasks/s':>9}")
    for name in args.only:
        count = len(list(WORKLOADS[name][1]()))
        for system in ("no journal", "journal"):
            seconds = best[name, system]
            print(f"{name:8} {system:12} {seconds:8.3f} {count / seconds:9.0f}")
    print("ratios (with a journal / without, tasks per second; 1.00 = no cost):")
    for name in args.only:
        print(f"  {name}: {best[name, 'no journal'] / best[name, 'journal']:.2f}")


if __name__ == "__main__":
    main()
