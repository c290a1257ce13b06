"""Latency of a small map: emcee driven through each pool, and a bare map of 32 tiny calls, in one run.

    python benchmarks/latency.py [--rounds 5] [--steps 300] [--maps 200] [--only SYSTEM ...]
    python benchmarks/latency.py --tree /tmp/before            # scientific_ms imported from that tree
    python benchmarks/latency.py --compare-tree /tmp/before    # our Executor only: that tree vs this checkout
    python benchmarks/latency.py --compare-tree /tmp/before --tree /other/tree   # vs /other/tree

An MCMC sampler is latency-bound: emcee (32 walkers, 5 dimensions, a
Gaussian log-probability costing about a microsecond) calls ``pool.map``
twice per step (each half of the ensemble, 16 calls), and waits for the
answers before the next. Its pool is, in turn, ``scientific_ms.Executor(
slaves=2)``, ``concurrent.futures.ProcessPoolExecutor(2)``,
``multiprocessing.Pool(2)`` and ``loky.get_reusable_executor(2)`` (skipped,
with a message, when loky is not installed), each with its own ``map`` as
emcee calls it (default chunksize: 1 for the executors; Pool.map picks
ceil(calls / 8) with 2 workers: 2 for emcee's 16 calls, 4 for the bare
map's 32, so it makes 4 to 8 round trips where the others make 16 or 32).
Two figures:

* step: milliseconds per emcee step over ``--steps`` steps;
* map: milliseconds for ``list(pool.map(x + 1, range(32)))``, the median
  of ``--maps`` maps in a round.

In each round every pool is started, warmed (a few emcee steps and maps,
so that its workers have imported emcee and numpy), measured and shut down
in turn, the order rotating from round to round: only one pool is alive at
a time, and a slow spell of the machine falls on all of them. Each figure
is shown as the best and the median over the rounds, with its ratio to
ProcessPoolExecutor and to Pool (time of the other / time of this one:
above 1 this one is faster).

``--tree PATH`` imports scientific_ms from PATH (it goes first on
``sys.path`` and on PYTHONPATH, so that the slaves import it too; without
it, PYTHONPATH decides, or when unset the checkout holding this file).
``--compare-tree OLD`` measures the Executor only, from OLD and from
``--tree`` (default: the checkout holding this file): each round runs one
subprocess per tree (``--rounds 1 --only scientific_ms``), alternating
which goes first, and the table gives old / new time (above 1: the new
tree is faster).
"""

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from workloads import gaussian_log_prob, inc  # noqa: E402

WORKERS = 2
WALKERS = 32
DIMENSIONS = 5
WARM_STEPS = 10
WARM_MAPS = 10
MAP_CALLS = 32
SYSTEMS = ["scientific_ms", "ProcessPoolExecutor", "Pool", "loky"]


def use_tree(tree):
    """Import scientific_ms from ``tree`` here and in every process started from here.

    The slaves run ``python -m scientific_ms``, which puts the working
    directory first on sys.path: it becomes ``tree``, so that a checkout in
    the directory this was started from cannot shadow it.
    """
    tree = str(Path(tree).resolve())
    sys.path.insert(0, tree)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (tree, os.environ.get("PYTHONPATH")) if p)
    os.chdir(tree)


# ---------------------------------------------------------------- the pools: (start, stop)

def start_scientific_ms():
    from scientific_ms import Executor
    return Executor(slaves=WORKERS, use_name_server=False)


def start_process_pool():
    import concurrent.futures
    return concurrent.futures.ProcessPoolExecutor(WORKERS)


def start_loky():
    import loky
    return loky.get_reusable_executor(WORKERS)


def stop_pool(pool):
    pool.close()
    pool.join()


POOLS = {
    "scientific_ms": (start_scientific_ms, lambda ex: ex.shutdown(wait=True)),
    "ProcessPoolExecutor": (start_process_pool, lambda ex: ex.shutdown(wait=True)),
    "Pool": (lambda: multiprocessing.Pool(WORKERS), stop_pool),
    "loky": (start_loky, lambda ex: ex.shutdown(wait=True)),
}


def loky_missing():
    try:
        import loky  # noqa: F401
    except ImportError:
        return "loky is not installed (pip install loky)"
    return None


# ---------------------------------------------------------------- one measurement

def bare_map(pool):
    started = time.perf_counter()
    results = list(pool.map(inc, range(MAP_CALLS)))
    seconds = time.perf_counter() - started
    assert results == list(range(1, MAP_CALLS + 1)), results
    return seconds


def measure(system, args, seed):
    """Start ``system``'s pool, warm it, measure it once, stop it: {"step": ms, "map": ms}."""
    import emcee
    import numpy as np
    start, stop = POOLS[system]
    pool = start()
    try:
        sampler = emcee.EnsembleSampler(WALKERS, DIMENSIONS, gaussian_log_prob, pool=pool)
        state = sampler.run_mcmc(np.random.default_rng(seed).normal(size=(WALKERS, DIMENSIONS)), WARM_STEPS)
        for _ in range(WARM_MAPS):
            bare_map(pool)
        started = time.perf_counter()
        sampler.run_mcmc(state, args.steps)
        step = (time.perf_counter() - started) / args.steps
        maps = statistics.median(bare_map(pool) for _ in range(args.maps))
    finally:
        stop(pool)
    return {"step": step * 1e3, "map": maps * 1e3}


def run_rounds(systems, args):
    """{system: {kind: [ms per round]}}, each round measuring every system once, in a rotating order."""
    figures = {system: {"step": [], "map": []} for system in systems}
    for round in range(args.rounds):
        shift = round % len(systems)
        for system in systems[shift:] + systems[:shift]:
            for kind, ms in measure(system, args, seed=round).items():
                figures[system][kind].append(ms)
    return figures


# ---------------------------------------------------------------- two trees

def run_trees(args):
    """Our Executor from ``--compare-tree`` and from ``--tree``, one subprocess per tree and round."""
    trees = {"old": str(Path(args.compare_tree).resolve()),
             "new": str(Path(args.tree).resolve()) if args.tree else str(HERE.parent)}
    figures = {name: {"step": [], "map": []} for name in trees}
    names = list(trees)
    for round in range(args.rounds):
        for name in (names if round % 2 == 0 else names[::-1]):
            command = [sys.executable, str(HERE / "latency.py"), "--tree", trees[name], "--only", "scientific_ms",
                       "--rounds", "1", "--steps", str(args.steps), "--maps", str(args.maps), "--json"]
            done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=trees[name])
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if done.returncode != 0 or not lines:
                sys.exit(f"{' '.join(command)} exited with {done.returncode}:\n{done.stderr[-2000:]}")
            child = json.loads(lines[-1])
            if child["tree"] != str(Path(trees[name]) / "scientific_ms" / "__init__.py"):
                sys.exit(f"the child for {trees[name]} imported scientific_ms from {child['tree']}")
            for kind, runs in child["figures"]["scientific_ms"].items():
                figures[name][kind].extend(runs)
    return trees, figures


# ---------------------------------------------------------------- reports

def header(args, what):
    print(f"{what}: {WORKERS} workers, {args.rounds} rounds, best and median over the rounds, "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} cores")


TITLES = {"step": f"emcee, {WALKERS} walkers, {DIMENSIONS} dimensions: ms per step (2 maps of {WALKERS // 2} calls)",
          "map": f"bare map of {MAP_CALLS} calls x + 1: ms per map (median of the round's maps)"}


def report_systems(args, figures, skipped):
    import scientific_ms
    header(args, f"scientific_ms from {Path(scientific_ms.__file__).parent.parent}")
    if skipped:
        print(f"loky skipped: {skipped}")
    peers = [p for p in ("ProcessPoolExecutor", "Pool") if p in figures]
    for kind, title in TITLES.items():
        names = "".join(f"  {'vs ' + peer:>24}" for peer in peers)
        columns = "".join(f"  {'best':>11} {'median':>12}" for peer in peers)
        print(f"\n{title}\n  {'':20} {'':17}{names}\n  {'':20} {'best':>8} {'median':>8}{columns}")
        for system, runs in figures.items():
            best, median = min(runs[kind]), statistics.median(runs[kind])
            line = f"  {system:20} {best:8.3f} {median:8.3f}"
            for peer in peers:
                # peer time / this time: above 1, this system is faster than the peer.
                theirs = figures[peer][kind]
                line += f"  {min(theirs) / best:11.2f} {statistics.median(theirs) / median:12.2f}"
            print(line)
    print("\nratios: the peer's time / this system's time (above 1: this system is faster)")


def report_trees(args, trees, figures):
    header(args, "scientific_ms.Executor from two trees, one subprocess per tree and round, alternating")
    for name, tree in trees.items():
        print(f"  {name}: {tree}")
    for kind, title in TITLES.items():
        print(f"\n{title}\n  {'':5} {'best':>8} {'median':>8}")
        for name in trees:
            print(f"  {name:5} {min(figures[name][kind]):8.3f} {statistics.median(figures[name][kind]):8.3f}")
        old, new = figures["old"][kind], figures["new"][kind]
        print(f"  old/new time: {min(old) / min(new):.2f} (best), "
              f"{statistics.median(old) / statistics.median(new):.2f} (median); above 1: new is faster")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--maps", type=int, default=200, help="bare maps timed per round (their median is kept)")
    parser.add_argument("--only", nargs="*", choices=SYSTEMS, default=SYSTEMS)
    parser.add_argument("--tree", help="import scientific_ms from this tree (default: PYTHONPATH decides)")
    parser.add_argument("--compare-tree", metavar="OLD",
                        help="measure the Executor only, from OLD and from --tree (default: this checkout)")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)   # a child of --compare-tree
    args = parser.parse_args()
    if args.compare_tree:
        report_trees(args, *run_trees(args))
        return
    if args.tree or not os.environ.get("PYTHONPATH"):
        use_tree(args.tree or HERE.parent)
    systems = list(args.only)
    skipped = loky_missing() if "loky" in systems else None
    if skipped:
        systems.remove("loky")
    figures = run_rounds(systems, args)
    if args.json:
        import scientific_ms
        print(json.dumps({"tree": scientific_ms.__file__, "figures": figures}))
    else:
        report_systems(args, figures, skipped)


if __name__ == "__main__":
    main()
