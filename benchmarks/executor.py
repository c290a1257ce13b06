"""The Executor next to ProcessPoolExecutor, multiprocessing.Pool and mpi4py.futures, in one run.

    python benchmarks/executor.py [--repeat N] [--tasks 20000] [--chunksize 64]

Three figures, each the best and the median of N rounds, with 2 workers
everywhere. In each round every pool is started, measured and shut down in
turn: only one runs at a time (a pool's idle threads cannot slow another's
master), and a slow spell of the machine falls on all of them rather than
on one:

* submit: ``--tasks`` calls ``x + 1`` submitted one by one, results taken
  with ``as_completed`` (Pool has no futures: its figure is
  ``imap_unordered(chunksize=1)``, the closest it has);
* map: ``map(x + 1, range(10 * tasks), chunksize)`` in order, against
  ``Pool.imap`` and ``ProcessPoolExecutor.map`` with the same chunksize;
* start-up: from creating the pool to the first result.

mpi4py.futures runs in a child ``mpiexec -n 3 python -m mpi4py.futures``
(rank 0 runs this file with ``--mpi4py``); it is skipped, with the
reason printed, where mpi4py or mpiexec is missing or the run fails.
"""

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from workloads import inc  # noqa: E402

WORKERS = 2


def timed(function):
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def submit_as_completed(executor, tasks):
    futures = [executor.submit(inc, i) for i in range(tasks)]
    total = sum(f.result() for f in concurrent.futures.as_completed(futures))
    assert total == tasks * (tasks + 1) // 2, total


def map_in_order(mapper, items, chunksize):
    total = sum(mapper(inc, range(items), chunksize=chunksize))
    assert total == items * (items + 1) // 2, total


def pool_unordered(pool, tasks):
    total = sum(pool.imap_unordered(inc, range(tasks), chunksize=1))
    assert total == tasks * (tasks + 1) // 2, total


def startup(make, first):
    """Seconds from creating a pool to its first result, and the pool."""
    started = time.perf_counter()
    pool = make()
    first(pool)
    seconds = time.perf_counter() - started
    return seconds, pool


def executor_round(make, args):
    """Start a concurrent.futures executor, measure it once, shut it down: {kind: seconds}."""
    seconds, executor = startup(make, lambda ex: ex.submit(inc, 0).result())
    with executor:
        return {"startup": seconds,
                "submit": timed(lambda: submit_as_completed(executor, args.tasks)),
                "map": timed(lambda: map_in_order(executor.map, 10 * args.tasks, args.chunksize))}


def pool_round(args):
    seconds, pool = startup(lambda: multiprocessing.Pool(WORKERS), lambda p: p.apply(inc, (0,)))
    with pool:
        return {"startup": seconds,
                "submit": timed(lambda: pool_unordered(pool, args.tasks)),
                "map": timed(lambda: map_in_order(pool.imap, 10 * args.tasks, args.chunksize))}


def record(figures, system, seconds_by_kind):
    for kind, seconds in seconds_by_kind.items():
        figures.setdefault((kind, system), []).append(seconds)


def run_local(args, figures):
    from scientific_ms import Executor
    for _ in range(args.repeat):
        record(figures, "scientific_ms",
               executor_round(lambda: Executor(slaves=WORKERS, use_name_server=False), args))
        record(figures, "ProcessPoolExecutor",
               executor_round(lambda: concurrent.futures.ProcessPoolExecutor(WORKERS), args))
        record(figures, "Pool", pool_round(args))


def run_mpi4py(args, figures):
    """mpi4py.futures in a child MPI job; returns None, or the reason it was skipped."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed"
    mpiexec = shutil.which("mpiexec") or str(Path(sys.executable).parent / "mpiexec")
    if not os.access(mpiexec, os.X_OK):
        return "no mpiexec on PATH or next to this Python"
    command = [mpiexec, "-n", str(WORKERS + 1), sys.executable, "-m", "mpi4py.futures", __file__, "--mpi4py",
               "--repeat", str(args.repeat), "--tasks", str(args.tasks), "--chunksize", str(args.chunksize)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as error:
        return f"{' '.join(command[:3])} failed: {error}"
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return f"mpiexec exited with {done.returncode}: {(done.stderr or done.stdout).strip()[-300:]}"
    for key, runs in json.loads(lines[-1]).items():
        figures[tuple(key.split("/"))] = runs
    return None


def mpi4py_child(args):
    """Rank 0 of ``mpiexec -n 3 python -m mpi4py.futures``: measure MPIPoolExecutor, print JSON."""
    from mpi4py.futures import MPIPoolExecutor
    figures = {}
    for round in range(args.repeat):
        runs = executor_round(lambda: MPIPoolExecutor(WORKERS), args)
        if round:   # under python -m mpi4py.futures the workers outlive an executor: only the first starts them
            del runs["startup"]
        record(figures, "mpi4py.futures", runs)
    print(json.dumps({"/".join(key): value for key, value in figures.items()}))


def report(args, figures, skipped):
    print(f"{WORKERS} workers, {args.repeat} rounds (each pool started, measured once, shut down, in turn), "
          f"best and median, "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} cores")
    if skipped:
        print(f"mpi4py.futures skipped: {skipped}")
    peers = ["ProcessPoolExecutor", "Pool", "mpi4py.futures"]
    rows = [("submit", f"submit {args.tasks} x+1, as_completed (Pool: imap_unordered chunksize 1)", args.tasks),
            ("map", f"map {10 * args.tasks} x+1, chunksize {args.chunksize} (Pool: imap)", 10 * args.tasks),
            ("startup", "start-up to the first result", None)]
    for kind, title, count in rows:
        print(f"\n{title}\n  {'':20} {'best':>9} {'median':>9}")
        ours = figures[kind, "scientific_ms"]
        for system in ["scientific_ms"] + peers:
            if (kind, system) not in figures:
                continue
            runs = figures[kind, system]
            best, median = min(runs), statistics.median(runs)
            line = f"  {system:20} {best:7.3f} s {median:7.3f} s"
            if count:
                line += f" {count / best:9.0f} tasks/s (best)"
            if system != "scientific_ms":
                # A ratio above 1 says scientific_ms took less time.
                line += (f"   scientific_ms is {best / min(ours):.2f}x (best), "
                         f"{median / statistics.median(ours):.2f}x (median) as fast")
            print(line)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--chunksize", type=int, default=64)
    parser.add_argument("--mpi4py", action="store_true", help=argparse.SUPPRESS)   # the child MPI job
    parser.add_argument("--no-mpi4py", action="store_true", help="skip mpi4py.futures")
    args = parser.parse_args()
    if args.mpi4py:
        mpi4py_child(args)
        return
    figures = {}
    run_local(args, figures)
    skipped = "--no-mpi4py given" if args.no_mpi4py else run_mpi4py(args, figures)
    report(args, figures, skipped)


if __name__ == "__main__":
    main()
