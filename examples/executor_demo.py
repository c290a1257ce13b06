"""concurrent.futures on the farm: no do_<tag> handlers, no task-id bookkeeping.

    python executor_demo.py

starts an Executor with two slaves on this machine. More slaves can join from
other shells or machines while it runs, with ``task_manager slave LABEL``
(the label is printed). Under MPI, ``mpiexec -n 4 python -m scientific_ms
executor_demo.py`` runs this script on rank 0 and the other ranks serve.
"""

import concurrent.futures
import math
import random

from scientific_ms import Executor, RemoteTraceback


def simulate(seed, n=1000):
    """A Monte Carlo estimate of pi from ``n`` random points."""
    rng = random.Random(seed)
    inside = sum(rng.random() ** 2 + rng.random() ** 2 <= 1.0 for _ in range(n))
    return seed, 4.0 * inside / n


def main():
    with Executor(slaves=2) as ex:
        print(f"label: {ex.label}")
        futures = [ex.submit(simulate, s, n=10_000) for s in range(20)]
        estimates = []
        for future in concurrent.futures.as_completed(futures):
            seed, estimate = future.result()
            estimates.append(estimate)
        print(f"pi ~ {sum(estimates) / len(estimates):.3f} from {len(estimates)} futures")

        print("map:", list(ex.map(lambda x: x * x, range(10), chunksize=4)))

        failing = ex.submit(math.sqrt, -1.0)
        try:
            failing.result()
        except ValueError as error:
            remote = error.__cause__
            print(f"sqrt(-1.0) raised {error!r} on a slave"
                  f"{' (remote traceback attached)' if isinstance(remote, RemoteTraceback) else ''}")


if __name__ == "__main__":
    main()
