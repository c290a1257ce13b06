"""The Executor next to ProcessPoolExecutor, multiprocessing.Pool and mpi4py.futures, in one run.

    python benchmarks/executor.py [--repeat N] [--tasks 20000] [--chunksize 64]

Three figures, each the best of N runs, with 2 workers everywhere:

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
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from workloads import inc  # noqa: E402

WORKERS = 2


def best_of(repeat, run):
    return min(run() for _ in range(repeat))


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
    """Seconds from creating a pool to its first result, and the pool's shutdown."""
    started = time.perf_counter()
    pool = make()
    first(pool)
    seconds = time.perf_counter() - started
    return seconds, pool


def measure_executor(executor, args, figures, name):
    executor.submit(inc, 0).result()   # every worker warmed up by the runs below
    figures["submit", name] = best_of(args.repeat, lambda: timed(lambda: submit_as_completed(executor, args.tasks)))
    figures["map", name] = best_of(args.repeat, lambda: timed(
        lambda: map_in_order(executor.map, 10 * args.tasks, args.chunksize)))


def run_local(args, figures):
    from scientific_ms import Executor

    def ours():
        return Executor(slaves=WORKERS, use_name_server=False)

    for _ in range(args.repeat):
        seconds, executor = startup(ours, lambda ex: ex.submit(inc, 0).result())
        figures["startup", "scientific_ms"] = min(seconds, figures.get(("startup", "scientific_ms"), 1e9))
        executor.shutdown()
        seconds, pool = startup(lambda: concurrent.futures.ProcessPoolExecutor(WORKERS),
                                lambda ex: ex.submit(inc, 0).result())
        figures["startup", "ProcessPoolExecutor"] = min(seconds, figures.get(("startup", "ProcessPoolExecutor"), 1e9))
        pool.shutdown()
        seconds, pool = startup(lambda: multiprocessing.Pool(WORKERS), lambda p: p.apply(inc, (0,)))
        figures["startup", "Pool"] = min(seconds, figures.get(("startup", "Pool"), 1e9))
        pool.terminate()
        pool.join()

    with ours() as executor:
        measure_executor(executor, args, figures, "scientific_ms")
    with concurrent.futures.ProcessPoolExecutor(WORKERS) as executor:
        measure_executor(executor, args, figures, "ProcessPoolExecutor")
    with multiprocessing.Pool(WORKERS) as pool:
        pool.apply(inc, (0,))
        figures["submit", "Pool"] = best_of(args.repeat, lambda: timed(lambda: pool_unordered(pool, args.tasks)))
        figures["map", "Pool"] = best_of(args.repeat, lambda: timed(
            lambda: map_in_order(pool.imap, 10 * args.tasks, args.chunksize)))


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
    for key, seconds in json.loads(lines[-1]).items():
        figures[tuple(key.split("/"))] = seconds
    return None


def mpi4py_child(args):
    """Rank 0 of ``mpiexec -n 3 python -m mpi4py.futures``: measure MPIPoolExecutor, print JSON."""
    from mpi4py.futures import MPIPoolExecutor
    figures = {}
    seconds, executor = startup(lambda: MPIPoolExecutor(WORKERS), lambda ex: ex.submit(inc, 0).result())
    figures["startup", "mpi4py.futures"] = seconds
    with executor:
        measure_executor(executor, args, figures, "mpi4py.futures")
    print(json.dumps({"/".join(key): value for key, value in figures.items()}))


def report(args, figures, skipped):
    print(f"{WORKERS} workers, best of {args.repeat} runs, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores")
    if skipped:
        print(f"mpi4py.futures skipped: {skipped}")
    peers = ["ProcessPoolExecutor", "Pool", "mpi4py.futures"]
    rows = [("submit", f"submit {args.tasks} x+1, as_completed (Pool: imap_unordered chunksize 1)", args.tasks),
            ("map", f"map {10 * args.tasks} x+1, chunksize {args.chunksize} (Pool: imap)", 10 * args.tasks)]
    for kind, title, count in rows:
        print(f"\n{title}")
        ours = figures[kind, "scientific_ms"]
        for system in ["scientific_ms"] + peers:
            if (kind, system) not in figures:
                continue
            seconds = figures[kind, system]
            ratio = "" if system == "scientific_ms" else f"   scientific_ms is {seconds / ours:.2f}x as fast"
            print(f"  {system:20} {seconds:7.3f} s {count / seconds:9.0f} tasks/s{ratio}")
    print("\nstart-up to the first result")
    ours = figures["startup", "scientific_ms"]
    for system in ["scientific_ms"] + peers:
        if ("startup", system) in figures:
            seconds = figures["startup", system]
            ratio = "" if system == "scientific_ms" else f"   ratio {ours / seconds:.2f} (scientific_ms / peer)"
            print(f"  {system:20} {seconds:7.3f} s{ratio}")


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
