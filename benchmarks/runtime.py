"""Two trees of scientific_ms side by side on throughput.py's workloads, alternating, in one run.

    git worktree add /tmp/before COMMIT      # the tree to compare against, at any earlier commit
    python benchmarks/runtime.py /tmp/before            # against the checkout holding this file
    python benchmarks/runtime.py OLD NEW [--rounds 4] [--repeat 2] [--only W1 W2 W3] [--kinds spawned agent executor]

The workloads are those of throughput.py (benchmarks/workloads.py): W1 =
20,000 tasks x + 1, W2 = 200 tasks sending and returning 1 MB, W3 = 400
tasks sleeping 10 ms (ideal 2.00 s with 2 slaves), each timed from the
first request to the last result (throughput.run_scientific_ms), with the
master's CPU time per task; W1 and W2 run ``--repeat`` times in each
subprocess, keeping the fastest, W3 once. Two ways of serving the master, 2 slaves each:

* spawned: the master launches 2 slaves, as ``runJob(launch_slaves=2)``
  does (throughput.start_master: ``launchSlaveJobs(2)``);
* agent: one keeper of 2 workers, ``task_manager slave LABEL -n 2`` (agent.start);
* executor: ``Executor(slaves=2)``, executor.py's submit (5,000 calls one by
  one, results by ``as_completed``) and map (50,000 calls, chunksize 64).

Plus start-up: from before ``import scientific_ms`` to the first result of
one task, both slaves having joined (Python's own start is not counted).

Both trees' bytecode is written first (compileall), as installing a package does.
Each measurement runs in a fresh subprocess (this file with ``--child
KIND``) whose PYTHONPATH and working directory are the tree measured, with
a label registry of its own (SCIENTIFIC_MS_REGISTRY); it prints JSON, and
checks that it imported scientific_ms from that tree. A round runs every
kind once from each tree, the tree going first alternating from round to
round, so that a slow spell of the machine falls on both. Figures are the
best and the median over the rounds, and the ratio new / old in tasks per
second (old / new in seconds for start-up): above 1 the new tree is faster.
With the same code in both trees the ratios should be
about 1.00, which is the check of the harness itself.
"""

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from workloads import WORKLOADS  # noqa: E402

WORKERS = 2
KINDS = ["spawned", "agent", "executor"]
#: The executor kind's figures: executor.py's submit (calls one by one, as_completed) and map (chunksize 64).
EXECUTOR_TASKS = 5000


# ---------------------------------------------------------------- the child: one tree, one kind

def executor_child(repeat):
    """``Executor(slaves=2)``: start-up to the first result, then executor.py's submit and map, print JSON."""
    import psutil
    started = time.perf_counter()
    import executor as bench  # benchmarks/executor.py

    from scientific_ms import Executor
    with Executor(slaves=WORKERS, use_name_server=False) as pool:
        pool.submit(bench.inc, 0).result()
        figures = {"startup": time.perf_counter() - started}
        me = psutil.Process()
        runs = {"submit": (lambda: bench.submit_as_completed(pool, EXECUTOR_TASKS), EXECUTOR_TASKS),
                "map": (lambda: bench.map_in_order(pool.map, 10 * EXECUTOR_TASKS, 64), 10 * EXECUTOR_TASKS)}
        for name, (run, count) in runs.items():
            for _ in range(repeat):
                cpu = sum(me.cpu_times()[:2])
                seconds = bench.timed(run)
                cpu = sum(me.cpu_times()[:2]) - cpu
                if name not in figures or seconds < figures[name]["seconds"]:
                    figures[name] = {"seconds": seconds, "tasks": count, "cpu": cpu}
    import scientific_ms
    print(json.dumps({"tree": str(Path(scientific_ms.__file__).resolve().parent.parent), "figures": figures}))


def child(kind, only, repeat):
    """Start a master served the ``kind`` way, run the workloads, print JSON.

    W1 and W2 run ``repeat`` times, keeping the fastest (they last well under
    a second, and one slow spell of the machine would decide the figure);
    W3, bound at 2 s by its sleeps, runs once.
    """
    import psutil
    started = time.perf_counter()
    import agent  # with throughput, imports scientific_ms: its import time is part of start-up
    import throughput
    from workloads import inc

    import scientific_ms
    slaves = []
    if kind == "spawned":
        master = throughput.start_master(WORKERS)
    else:
        master, slaves = agent.start(f"runtime-bench-{os.getpid()}", WORKERS, agent=True)
    try:
        throughput.run_scientific_ms(master, inc, [0])
        figures = {"startup": time.perf_counter() - started}
        me = psutil.Process()
        for name in only:
            function, make_parameters, _ = WORKLOADS[name]
            parameters = list(make_parameters())
            for _ in range(1 if name == "W3" else repeat):
                cpu = sum(me.cpu_times()[:2])
                seconds, count = throughput.run_scientific_ms(master, function, parameters)
                cpu = sum(me.cpu_times()[:2]) - cpu
                if name not in figures or seconds < figures[name]["seconds"]:
                    figures[name] = {"seconds": seconds, "tasks": count, "cpu": cpu}
    finally:
        agent.stop(master, slaves)
    print(json.dumps({"tree": str(Path(scientific_ms.__file__).resolve().parent.parent), "figures": figures}))


def run_child(tree, kind, args):
    command = [sys.executable, str(HERE / "runtime.py"), "--child", kind, "--repeat", str(args.repeat),
               "--only", *args.only]
    # A registry of its own: throughput.py's fixed label cannot clash with another master on this machine.
    with tempfile.TemporaryDirectory(prefix="runtime-bench-") as registry:
        env = dict(os.environ, PYTHONPATH=tree, SCIENTIFIC_MS_REGISTRY=registry)
        # The working directory is the tree: slaves run ``python -m scientific_ms``, which puts it first on sys.path.
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tree, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        sys.exit(f"PYTHONPATH={tree} {' '.join(command)} exited with {done.returncode}:\n{done.stderr[-2000:]}")
    answer = json.loads(lines[-1])
    if answer["tree"] != tree:
        sys.exit(f"the child for {tree} imported scientific_ms from {answer['tree']}")
    return answer["figures"]


# ---------------------------------------------------------------- the parent: rounds and the table

def run_rounds(trees, args):
    """{(tree name, kind): [child figures, one per round]}."""
    runs = {}
    names = list(trees)
    for round in range(args.rounds):
        for name in (names if round % 2 == 0 else names[::-1]):
            for kind in args.kinds:
                runs.setdefault((name, kind), []).append(run_child(trees[name], kind, args))
    return runs


def report(trees, runs, args):
    print(f"{WORKERS} slaves, {args.rounds} rounds (one subprocess per tree, kind and round, alternating), "
          f"best and median over the rounds, Python {sys.version.split()[0]}, {os.cpu_count()} cores")
    for name, tree in trees.items():
        print(f"  {name}: {tree}")
    print(f"\n{'kind':8} {'workload':9} {'old best':>9} {'old med':>9} {'new best':>9} {'new med':>9}"
          f"  {'new/old best':>12} {'med':>5}  {'master CPU/task old, new':>26}")
    for kind in args.kinds:
        old, new = runs["old", kind], runs["new", kind]
        for name in (["submit", "map"] if kind == "executor" else args.only):
            # tasks per second of each round
            rates = [[r[name]["tasks"] / r[name]["seconds"] for r in side] for side in (old, new)]
            cpus = [statistics.median(r[name]["cpu"] / r[name]["tasks"] * 1e6 for r in side) for side in (old, new)]
            (old_best, old_median), (new_best, new_median) = [(max(r), statistics.median(r)) for r in rates]
            print(f"{kind:8} {name + ' task/s':9} {old_best:9.0f} {old_median:9.0f} {new_best:9.0f} {new_median:9.0f}"
                  f"  {new_best / old_best:12.2f} {new_median / old_median:5.2f}"
                  f"  {cpus[0]:11.1f} us {cpus[1]:8.1f} us")
        starts = [[r["startup"] for r in side] for side in (old, new)]
        (old_best, old_median), (new_best, new_median) = [(min(s), statistics.median(s)) for s in starts]
        print(f"{kind:8} {'start-up s':9} {old_best:9.3f} {old_median:9.3f} {new_best:9.3f} {new_median:9.3f}"
              f"  {old_best / new_best:12.2f} {old_median / new_median:5.2f}")
    print("\nratios: new / old in tasks per second, old / new in seconds for start-up (above 1: new is faster); "
          "master CPU/task: median over the rounds")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", nargs="?", help="the tree to compare against (a checkout of another commit)")
    parser.add_argument("new", nargs="?", default=str(HERE.parent),
                        help="the tree measured (default: the checkout holding this file)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--only", nargs="*", choices=sorted(WORKLOADS), default=sorted(WORKLOADS))
    parser.add_argument("--repeat", type=int, default=2, help="runs of W1 and W2 in each subprocess (the best counts)")
    parser.add_argument("--kinds", nargs="*", choices=KINDS, default=KINDS)
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)   # one measurement, in a subprocess
    args = parser.parse_args()
    if args.child == "executor":
        executor_child(args.repeat)
        return
    if args.child:
        child(args.child, args.only, args.repeat)
        return
    if args.old is None:
        parser.error("name the tree to compare against (a checkout of another commit)")
    trees = {"old": str(Path(args.old).resolve()), "new": str(Path(args.new).resolve())}
    for tree in trees.values():
        compile_tree(tree)
    report(trees, run_rounds(trees, args), args)


def compile_tree(tree):
    """Write both trees' bytecode first, as installing a package does: otherwise every
    child (PYTHONDONTWRITEBYTECODE, or a tree it cannot write) compiles each module it
    imports, and the tree with more code looks slower to start than it is."""
    for folder in ("scientific_ms", "benchmarks"):
        compileall.compile_dir(str(Path(tree) / folder), quiet=1, force=False)


if __name__ == "__main__":
    main()
