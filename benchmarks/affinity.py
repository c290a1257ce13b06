"""Affinity: tasks that load their key's data once per slave, with and without ``affinity=key``.

    python benchmarks/affinity.py [--keys 8] [--tasks 200] [--load 0.2] [--work 0.02] [--repeat 2]

An Executor with 2 slaves runs ``tasks`` calls of ``workloads.load_and_nap``,
the keys in turn: a call sleeps ``load`` s the first time its slave meets
its key (loading a database or a model), then ``work`` s. Printed: the
makespan (best of ``repeat``, a fresh Executor each time) with and without
``options(affinity=key)``, and the loads each made (the fewer, the better:
ideally each key is loaded on one slave only).
"""

import argparse
import concurrent.futures
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import workloads  # noqa: E402

from scientific_ms import Executor  # noqa: E402


def run(keys: int, tasks: int, load: float, work: float, affinity: bool):
    """(makespan, loads) of one run on a fresh Executor of 2 slaves."""
    with Executor(slaves=2, use_name_server=False) as ex:
        ex.submit(workloads.inc, 1).result(60)   # both slaves up before the clock starts
        ex.master.wait_for_slaves(2, timeout=60)
        started = time.perf_counter()
        futures = []
        for n in range(tasks):
            key = f"key{n % keys}"
            submit = ex.options(affinity=key).submit if affinity else ex.submit
            futures.append(submit(pid_and_key, key, load, work))
        ran = [future.result(120) for future in concurrent.futures.as_completed(futures)]
        return time.perf_counter() - started, len(set(ran))


def pid_and_key(key, load, work):
    return os.getpid(), workloads.load_and_nap(key, load, work)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=8)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--load", type=float, default=0.2)
    parser.add_argument("--work", type=float, default=0.02)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    print(f"2 slaves, {args.tasks} tasks over {args.keys} keys, a load of {args.load} s per key and slave, "
          f"{args.work} s of work per task; best of {args.repeat}")
    for affinity in (False, True):
        best = min(run(args.keys, args.tasks, args.load, args.work, affinity) for _ in range(args.repeat))
        print(f"{'affinity=key' if affinity else 'no affinity':>13}: {best[0]:6.2f} s, "
              f"{best[1]} loads (at least {args.keys})")


if __name__ == "__main__":
    main()
