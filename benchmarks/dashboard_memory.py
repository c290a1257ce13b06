"""Whether a master's memory stays flat over many tasks, with its dashboard's page open and without.

    python benchmarks/dashboard_memory.py [--tasks 1000000] [--every 100000] [--workers 2]
                                          [--modes dashboard,plain] [--poll 1.0]

Each mode runs ``--tasks`` tiny tasks (W1's ``inc``, one in a thousand
failing with a TypeError, so that failures are recorded too) through a
master of this process with spawned slaves, ``--window`` tasks outstanding
at a time (each result retrieved, one task requested), and prints the
master's RSS (psutil) and Python's allocated blocks every ``--every``
tasks. ``dashboard``: a master with ``dashboard=True`` whose page is polled
once a second (``--poll``) throughout: its history and failures are
computed at each poll, and the size of its answer is printed (it grows
while the history fills its bounded lists, ``dashboard/history.py``).
``plain``: no dashboard, what the master alone keeps per finished and
retrieved task. The growth printed is from the first sample (the start-up
and the first window's allocations behind it) to the last, per task. Run
one mode per process (``--modes plain``) to see its RSS alone: memory a
first mode freed is reused by the second without RSS moving.
"""

import argparse
import gc
import os
import sys
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from dashboard import Page, start_master  # noqa: E402

from scientific_ms.dashboard.published import dashboard_url  # noqa: E402
from scientific_ms.errors import TaskRaisedException  # noqa: E402

LABEL = "dashboard-memory"

#: One task in this many fails (inc(None) raises TypeError).
FAIL_EVERY = 1000


def parameter(index):
    return None if index % FAIL_EVERY == FAIL_EVERY - 1 else index


def run(master, tasks, every, window, page):
    """Run ``tasks`` tasks, ``window`` outstanding; returns [(tasks answered, RSS bytes, seconds)]."""
    process = psutil.Process()
    samples = []
    started = time.perf_counter()
    requested = answered = failed = 0
    while requested < min(window, tasks):
        master.requestTask("inc", parameter(requested))
        requested += 1
    while answered < tasks:
        try:
            master.retrieveResult("inc")
        except TaskRaisedException:
            failed += 1
        answered += 1
        if requested < tasks:
            master.requestTask("inc", parameter(requested))
            requested += 1
        if answered % every == 0:
            gc.collect()
            samples.append((answered, process.memory_info().rss, time.perf_counter() - started))
            polls = f", page polled {page.polls} times ({page.size / 1024:.0f} KiB)" if page is not None else ""
            print(f"  {answered:>9} tasks  RSS {samples[-1][1] / 2**20:8.1f} MiB  "
                  f"{sys.getallocatedblocks():>9} Python blocks  {samples[-1][2]:7.1f} s{polls}", flush=True)
    expected = tasks // FAIL_EVERY
    assert failed == expected, f"{failed} tasks failed, {expected} expected"
    return samples


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--every", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=10_000, help="tasks outstanding at a time")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--modes", default="dashboard,plain", help="dashboard, plain or both (comma-separated)")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between two polls of the page")
    args = parser.parse_args()
    print(f"{args.tasks} tiny tasks ({args.tasks // FAIL_EVERY} failing), {args.window} outstanding, "
          f"{args.workers} workers, Python {sys.version.split()[0]}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    for mode in args.modes.split(","):
        print(f"{mode}:", flush=True)
        master = start_master(f"{LABEL}-{mode}", args.workers, **({"dashboard": 0} if mode == "dashboard" else {}))
        page = Page(dashboard_url(master.label), args.poll) if mode == "dashboard" else None
        try:
            samples = run(master, args.tasks, args.every, args.window, page)
            held = sum(sum(by_tag.values()) for by_tag in master.task_manager.status()["tasks"].values())
        finally:
            if page is not None:
                page.close()
            master.shutdown()
        first, last = samples[0], samples[-1]
        growth = last[1] - first[1]
        print(f"  from {first[0]} to {last[0]} tasks: {growth / 2**20:+.1f} MiB "
              f"({growth / (last[0] - first[0]):+.1f} bytes per task); tasks still held: {held}; "
              f"{last[0] / last[2]:.0f} tasks/s", flush=True)


if __name__ == "__main__":
    main()
