"""The journal's cost: W1 and W3 with a journal against without, 2 slaves, in one run.

    python benchmarks/journal.py [--repeat N] [--workers 2]

W1 = 20,000 tasks x + 1 (pure overhead: the journal's worst case), W3 =
400 tasks sleeping 10 ms. Each run gets a fresh master, fresh slaves and a
fresh journal (a journal already holding the answers would serve them
from disk); runs with and without a journal alternate. Each figure is the
best and the median of N runs: on a machine shared with other work the
two can differ a lot. The clock runs from the first request to the last
result. Goal: W1 at least 0.8x, W3 unchanged.
"""

import argparse
import os
import statistics
import sys
import tempfile
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
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=["W1", "W3"])
    args = parser.parse_args()
    os.chdir(HERE)
    times = {}
    with tempfile.TemporaryDirectory(prefix="journal-benchmark-") as folder:
        for name in args.only:
            for repeat in range(args.repeat):
                for system in ("no journal", "journal"):
                    journal = os.path.join(folder, f"{name}-{repeat}.db") if system == "journal" else None
                    times.setdefault((name, system), []).append(timed_run(name, args.workers, journal))
    print(f"{args.workers} slaves, {args.repeat} runs each, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"{'workload':8} {'system':12} {'best s':>8} {'median s':>9} {'best tasks/s':>13}")
    for name in args.only:
        count = len(list(WORKLOADS[name][1]()))
        for system in ("no journal", "journal"):
            seconds = times[name, system]
            print(f"{name:8} {system:12} {min(seconds):8.3f} {statistics.median(seconds):9.3f} "
                  f"{count / min(seconds):13.0f}")
    print("ratios (with a journal / without, tasks per second; 1.00 = no cost):")
    for name in args.only:
        plain, journaled = times[name, "no journal"], times[name, "journal"]
        print(f"  {name}: best {min(plain) / min(journaled):.2f}, "
              f"median {statistics.median(plain) / statistics.median(journaled):.2f}")


if __name__ == "__main__":
    main()
