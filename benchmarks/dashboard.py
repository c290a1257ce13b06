"""What an open dashboard costs a job: W1 with a page polled every second, next to no page, in one run.

    python benchmarks/dashboard.py [--repeat N] [--workers 2] [--tasks 20000]

W1 (``throughput.py``: tiny tasks, pure overhead) runs on two masters, each
with its own spawned slaves (the idle ones wait without using the CPU). On
the first, without a dashboard, runs with no page alternate with runs while
``task_manager dashboard LABEL`` (another process, reading the master's
status over the wire) is polled as an open page polls it: ``/api/state``
once a second, from a process of its own as a browser would. On the second,
started with ``dashboard=True``, runs while no
one looks alternate with runs while its own page is polled. The four kinds
of run take turns, so that a change in the machine's load touches each
alike. Each figure is the best of N runs, start-up excluded (the medians
are printed too); the ratios are tasks per second against the runs with no
page (>= 0.95 is the goal; 1.00 means no cost), and the last lines compare
each master's runs with a page open to its own runs with no page.
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from workloads import WORKLOADS  # noqa: E402

from scientific_ms import MasterProcess  # noqa: E402
from scientific_ms.dashboard.published import dashboard_url  # noqa: E402

LABEL = "dashboard-benchmark"


class Page:
    """What an open page does to its dashboard: ask for ``/api/state`` once a second, from a
    process of its own, as a browser does (in the master's process, reading each answer
    would cost the master's own interpreter what a browser never costs it)."""

    POLL = """
import sys, time, urllib.request
request = urllib.request.Request(sys.argv[1], headers={"Authorization": "Bearer " + sys.argv[2]})
interval = float(sys.argv[3])
polls = size = 0
print("ready", flush=True)
try:
    while True:
        with urllib.request.urlopen(request, timeout=30) as answer:
            size = len(answer.read())
        polls += 1
        print(polls, size, flush=True)
        time.sleep(interval)
except KeyboardInterrupt:
    pass
"""

    def __init__(self, url: str, interval: float = 1.0):
        base, token = url.split("?token=")
        self._process = subprocess.Popen([sys.executable, "-c", self.POLL, base + "api/state", token, str(interval)],
                                         stdout=subprocess.PIPE, text=True)
        self._process.stdout.readline()   # "ready": polling from now on
        self.polls = 0
        self.size = 0   # bytes of the last answer

    def close(self):
        self._process.send_signal(signal.SIGINT)
        lines = self._process.communicate(timeout=30)[0].split()
        if len(lines) >= 2:
            self.polls, self.size = int(lines[-2]), int(lines[-1])


def start_master(label, workers, **options):
    master = MasterProcess(label, use_name_server=False, port=0, **options)
    os.chdir(HERE)
    master.store_slave_code((HERE / "bench_slave.py").read_text(), str(HERE / "bench_slave.py"))
    master.launchSlaveJobs(workers)
    master.wait_for_slaves(workers, timeout=60)
    return master


def run_w1(master, tasks):
    """Seconds from the first request to the last result of ``tasks`` tiny tasks."""
    started = time.perf_counter()
    for value in range(tasks):
        master.requestTask("inc", value)
    for _ in range(tasks):
        master.retrieveResult("inc")
    return time.perf_counter() - started


def timed(master, tasks, page_url=None):
    page = Page(page_url) if page_url else None
    try:
        return run_w1(master, tasks)
    finally:
        if page is not None:
            page.close()


def start_cli_dashboard(label):
    """``task_manager dashboard LABEL --port 0`` in a process of its own; (process, URL)."""
    process = subprocess.Popen([sys.executable, "-m", "scientific_ms", "dashboard", label, "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = process.stdout.readline().strip()
    if not url.startswith("http://"):
        process.kill()
        process.wait()
        raise SystemExit(f"task_manager dashboard printed no URL (exit code {process.poll()})")
    return process, url


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=len(WORKLOADS["W1"][1]()))
    args = parser.parse_args()
    figures = {}

    def best(name, seconds):
        figures.setdefault(name, []).append(seconds)

    plain = start_master(f"{LABEL}-plain", args.workers)
    served = start_master(f"{LABEL}-served", args.workers, dashboard=0)
    cli = None
    try:
        cli, cli_url = start_cli_dashboard(plain.label)
        served_url = dashboard_url(served.label)
        run_w1(plain, 1000)   # warm-up
        run_w1(served, 1000)
        # Interleaved, so that a change of the machine's load touches every mode alike.
        for _ in range(args.repeat):
            best("no page", timed(plain, args.tasks))
            best("task_manager dashboard, page polled", timed(plain, args.tasks, cli_url))
            best("dashboard=True, no page", timed(served, args.tasks))
            best("dashboard=True, page polled", timed(served, args.tasks, served_url))
    finally:
        if cli is not None:
            cli.send_signal(signal.SIGINT)
            cli.wait(30)
        plain.shutdown()
        served.shutdown()

    print(f"W1: {args.tasks} tiny tasks, {args.workers} workers, best of {args.repeat} runs, "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} cores")
    base = min(figures["no page"])
    base_median = statistics.median(figures["no page"])
    print(f"{'':40} {'seconds':>8} {'tasks/s':>9} {'vs no page':>11} {'(medians)':>10}")
    for name, runs in figures.items():
        seconds = min(runs)
        print(f"{name:40} {seconds:8.3f} {args.tasks / seconds:9.0f} {base / seconds:11.3f} "
              f"{base_median / statistics.median(runs):10.3f}")
    # The figures the goal is about: a page open against the same master's runs with no page.
    print(f"tasks per second with a page open / with no page, best runs (goal >= 0.95); "
          f"load average {os.getloadavg()[0]:.2f}:")
    for name, against, note in (("task_manager dashboard, page polled", "no page", "same master"),
                                ("dashboard=True, page polled", "dashboard=True, no page", "same master"),
                                ("dashboard=True, page polled", "no page", "the other master")):
        ratio = min(figures[against]) / min(figures[name])
        print(f"  {name:37} / {against:25} {ratio:6.3f}x  {'met' if ratio >= 0.95 else 'NOT met':7}  ({note})")


if __name__ == "__main__":
    main()
