"""scientific_ms.Pool next to multiprocessing.Pool, side by side in one run.

    python benchmarks/pool.py [--repeat N]

With 2 workers each, the best and the median of N rounds; in each round
both pools are started, measured and terminated in turn (only one runs at a
time, and a slow spell of the machine falls on both):

* ``map`` of 1000 tiny calls (``x + 1``), default chunksize (both compute
  the same one: about four chunks per worker), and with chunksize 1;
* ``map`` of 100 calls of 10 ms each (``time.sleep(0.01)``: the same for
  both on a loaded machine), default chunksize;
* start-up: from creating the pool to its first result.

A ratio above 1 says scientific_ms took less time.
"""

import argparse
import multiprocessing
import os
import signal
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from workloads import inc, nap  # noqa: E402

WORKERS = 2
TINY, NAPS = 1000, 100


def timed(function):
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def measure(make):
    """Start a pool, measure it once, terminate it: {kind: seconds}."""
    started = time.perf_counter()
    pool = make()
    pool.apply(inc, (0,))
    figures = {"startup": time.perf_counter() - started}
    with pool:
        expected = TINY * (TINY + 1) // 2
        figures["tiny"] = timed(lambda: _check(sum(pool.map(inc, range(TINY))), expected))
        figures["tiny1"] = timed(lambda: _check(sum(pool.map(inc, range(TINY), chunksize=1)), expected))
        figures["naps"] = timed(lambda: _check(len(pool.map(nap, [0.01] * NAPS)), NAPS))
    return figures


def _check(got, expected):
    assert got == expected, (got, expected)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    import scientific_ms
    systems = {"scientific_ms.Pool": lambda: scientific_ms.Pool(WORKERS, use_name_server=False),
               # Its workers are forks of this process, where the Executor turned SIGTERM into SystemExit:
               # they get the default back, so that terminate() ends them quietly.
               "multiprocessing.Pool": lambda: multiprocessing.Pool(WORKERS, signal.signal,
                                                                     (signal.SIGTERM, signal.SIG_DFL))}
    runs = {}
    for _ in range(args.repeat):
        for system, make in systems.items():
            for kind, seconds in measure(make).items():
                runs.setdefault((kind, system), []).append(seconds)
    print(f"{WORKERS} workers, {args.repeat} rounds (each pool started, measured once, terminated, in turn), "
          f"best and median, Python {sys.version.split()[0]}, {os.cpu_count()} cores")
    rows = [("tiny", f"map of {TINY} x+1, default chunksize"), ("tiny1", f"map of {TINY} x+1, chunksize 1"),
            ("naps", f"map of {NAPS} 10-ms calls, default chunksize"), ("startup", "start-up to the first result")]
    for kind, title in rows:
        print(f"\n{title}\n  {'':22} {'best':>10} {'median':>10}")
        ours = runs[kind, "scientific_ms.Pool"]
        for system in systems:
            best, median = min(runs[kind, system]), statistics.median(runs[kind, system])
            line = f"  {system:22} {1000 * best:7.1f} ms {1000 * median:7.1f} ms"
            if system != "scientific_ms.Pool":
                line += (f"   scientific_ms is {best / min(ours):.2f}x (best), "
                         f"{median / statistics.median(ours):.2f}x (median) as fast")
            print(line)


if __name__ == "__main__":
    main()
