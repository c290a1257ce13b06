"""What forwarding the slaves' output costs a job: W1 with it on, next to off, in one run.

    python benchmarks/output.py [--repeat N] [--workers 2] [--tasks 20000]

W1 (``throughput.py``: tiny tasks, pure overhead) runs on two masters,
each with its own spawned slaves: one with ``slave_output=False`` (nothing
captured: the slaves run as before forwarding existed), one forwarding to
a file (every slave's stdout, stderr and logging captured; its lines go
with its ``exchange`` calls). On the forwarding master a third kind of run,
"W1 printing", has each task print one line as well: the slaves forward
their burst and then ``slave/output.py``'s rate, and drop and count the
rest. The kinds of run take turns, so that a change in the machine's load
touches each alike. Each figure is the best of N runs (the medians are
printed too); the ratios are tasks per second against W1 with the output
off (>= 0.95 is the goal; 1.00 means no cost).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from workloads import WORKLOADS  # noqa: E402

from scientific_ms import MasterProcess  # noqa: E402

LABEL = "output-benchmark"

SLAVE_CODE = '''
from workloads import inc as do_inc  # noqa: F401

from scientific_ms import startSlaveProcess


def do_say(x):
    print("task", x, "says hello")
    return x + 1


startSlaveProcess()
'''


def start_master(label, workers, **options):
    master = MasterProcess(label, use_name_server=False, port=0, **options)
    os.chdir(HERE)
    master.store_slave_code(SLAVE_CODE, str(HERE / "output_slave.py"))
    master.launchSlaveJobs(workers)
    master.wait_for_slaves(workers, timeout=60)
    return master


def run_w1(master, tasks, tag="inc"):
    """Seconds from the first request to the last result of ``tasks`` tiny tasks."""
    started = time.perf_counter()
    for value in range(tasks):
        master.requestTask(tag, value)
    for _ in range(tasks):
        master.retrieveResult(tag)
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=len(WORKLOADS["W1"][1]()))
    args = parser.parse_args()
    figures = {}

    def add(name, seconds):
        figures.setdefault(name, []).append(seconds)

    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "slaves.log"
        off = start_master(f"{LABEL}-off", args.workers, slave_output=False)
        on = start_master(f"{LABEL}-on", args.workers, slave_output=str(log))
        try:
            run_w1(off, 1000)   # warm-up
            run_w1(on, 1000)
            # Interleaved, in turns of changing order, so that a change of the machine's load
            # touches every kind alike.
            kinds = [("W1, output off", off, "inc"), ("W1, output forwarded", on, "inc"),
                     ("W1 printing a line per task, forwarded", on, "say")]
            for round_ in range(args.repeat):
                for name, master, tag in kinds[round_ % 3:] + kinds[:round_ % 3]:
                    add(name, run_w1(master, args.tasks, tag))
        finally:
            off.shutdown()
            on.shutdown()
        text = log.read_text() if log.exists() else ""
        lines = text.count("says hello")
        dropped = sum(int(line.split("(", 1)[1].split()[0]) for line in text.splitlines() if "lines dropped" in line)

    print(f"W1: {args.tasks} tiny tasks, {args.workers} workers, best of {args.repeat} runs, "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} cores")
    base = min(figures["W1, output off"])
    base_median = statistics.median(figures["W1, output off"])
    figures = {name: figures[name] for name, _, _ in kinds}
    print(f"{'':42} {'seconds':>8} {'tasks/s':>9} {'vs off':>7} {'(medians)':>10}")
    for name, runs in figures.items():
        seconds = min(runs)
        print(f"{name:42} {seconds:8.3f} {args.tasks / seconds:9.0f} {base / seconds:7.3f} "
              f"{base_median / statistics.median(runs):10.3f}")
    print(f"printed lines: {lines} forwarded, {dropped} dropped by the slaves' rate limit")


if __name__ == "__main__":
    main()
