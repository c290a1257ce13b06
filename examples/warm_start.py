"""Slaves forked from a fork server started at the top of the program (docs/guide/warm-start.md).

The fork server imports scientific_ms and numpy while the program reads its
data; the Executor's slaves then fork from it, numpy already imported.
"""

import os

from scientific_ms import Executor, warm_start


def load_the_data():
    return list(range(100))


def norm(row):
    import numpy
    return os.getpid(), float(numpy.linalg.norm(numpy.arange(row + 1)))


def main():
    warm_start(preload=["numpy"])   # returns at once; wait=True waits for the imports

    data = load_the_data()          # meanwhile, the fork server imports
    with Executor(slaves=2) as ex:  # its slaves fork at once
        results = list(ex.map(norm, data))
    print(f"{len(results)} norms from {len({pid for pid, _ in results})} forked slaves, "
          f"the last {results[-1][1]:.3f}")


if __name__ == "__main__":
    main()
