"""How fast local slaves start: spawned, forked from a fork server, or from one started earlier.

    python benchmarks/startup.py [--repeat N] [--no-emcee]

Start-up to the first result: from creating ``Executor(slaves=2)`` to the
result of its first call (``x + 1``), then shut down; each round runs every
way in turn (a slow spell of the machine falls on all of them):

* spawn: ``start_method="spawn"``, each slave a fresh interpreter;
* forkserver: ``start_method="forkserver"``, the Executor's own template
  started with it (the slaves fork from it once it imported scientific_ms);
* warm: a template started earlier by ``warm_start(wait=True)`` (not
  counted), as at the top of a script or notebook;
* ProcessPoolExecutor(2), the reference (it forks this process on Linux).

With emcee installed, the first ``map`` of a small emcee sampler against the
next one, after the slaves are up: spawned (each slave imports emcee at its
first call) and forked from a template with ``preload=["emcee", "numpy"]``.
"""

import argparse
import concurrent.futures
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from workloads import inc  # noqa: E402

from scientific_ms import Executor, warm_start  # noqa: E402
from scientific_ms.master import forkserver  # noqa: E402


def sample(seed):
    """A small emcee run: 8 walkers, 1 parameter, 20 steps."""
    import emcee
    import numpy
    generator = numpy.random.default_rng(seed)
    sampler = emcee.EnsembleSampler(8, 1, lambda x: -0.5 * float(x[0] ** 2))
    sampler.run_mcmc(generator.normal(size=(8, 1)), 20)
    return float(sampler.get_chain()[-1].mean())


def first_result(make):
    started = time.perf_counter()
    pool = make()
    pool.submit(inc, 0).result()
    seconds = time.perf_counter() - started
    pool.shutdown()
    return seconds


def warm():
    forkserver.close_shared()
    warm_start(preload=[], wait=True)
    try:
        return first_result(lambda: Executor(slaves=2))   # spawn by default: forks only from the shared template
    finally:
        forkserver.close_shared()


STARTS = {
    "spawn": lambda: first_result(lambda: Executor(slaves=2, start_method="spawn")),
    "forkserver": lambda: first_result(lambda: Executor(slaves=2, start_method="forkserver", preload=[])),
    "warm": warm,
    "ProcessPoolExecutor": lambda: first_result(lambda: concurrent.futures.ProcessPoolExecutor(2)),
}


def library_maps(**options):
    """(first map, next map) in seconds, after the slaves are up."""
    with Executor(slaves=2, **options) as executor:
        for _ in executor.map(inc, range(4)):
            pass
        started = time.perf_counter()
        list(executor.map(sample, range(4)))
        first = time.perf_counter() - started
        started = time.perf_counter()
        list(executor.map(sample, range(4)))
        return first, time.perf_counter() - started


def line(name, runs, reference=None):
    best, median = min(runs), statistics.median(runs)
    text = f"  {name:20} {best:7.3f} s {median:7.3f} s"
    if reference is not None:
        text += (f"   {best / min(reference):5.2f}x (best) "
                 f"{median / statistics.median(reference):5.2f}x (median) of spawn")
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-emcee", action="store_true", help="skip the emcee maps")
    args = parser.parse_args()
    if hasattr(os, "getloadavg"):
        print(f"load average before: {os.getloadavg()[0]:.2f}")
    figures = {name: [] for name in STARTS}
    for _ in range(args.repeat):
        for name, run in STARTS.items():
            figures[name].append(run())
    print(f"Executor(slaves=2): creation to the first result, {args.repeat} rounds, best and median, "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} cores")
    for name, runs in figures.items():
        print(line(name, runs, None if name == "spawn" else figures["spawn"]))
    try:
        import emcee  # noqa: F401
    except ImportError:
        args.no_emcee = True
        print("\nemcee is not installed: no library maps")
    if not args.no_emcee:
        cases = {"spawn": {"start_method": "spawn"}, "preload": {"preload": ["emcee", "numpy"]}}
        maps = {name: [] for name in cases}
        for _ in range(args.repeat):
            for name, options in cases.items():
                maps[name].append(library_maps(**options))
        print("\nemcee: the first map of 4 small samplers, after the slaves are up, against the next map")
        for name, runs in maps.items():
            ratios = [first / following for first, following in runs]
            print(f"  {name:20} first {statistics.median([f for f, _ in runs]):.3f} s, next "
                  f"{statistics.median([n for _, n in runs]):.3f} s (medians); first/next "
                  f"{min(ratios):.1f}x (best) {statistics.median(ratios):.1f}x (median)")
    if hasattr(os, "getloadavg"):
        print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
