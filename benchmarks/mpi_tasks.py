"""Tasks that are MPI programs: what a dead rank does to each design, and what launching costs.

    python benchmarks/mpi_tasks.py [--processes 4] [--repeat 5] [--tasks 6] [--observe 5]

Two ways for a task to be one parallel computation over N processes:

* **communicator**: the handler runs on a group of N slave ranks of one MPI
  job (the master is rank 0) that share a communicator of their own;
* **launcher**: the task holds N cores and starts its own MPI program on
  them (``mpiexec -n N program``: ``run_mpi_program``).

The script measures, with this environment's ``mpiexec`` (MPICH's Hydra from
the ``mpich`` wheel here):

1. start-up: the wall time of ``mpiexec -n N python -c <allreduce>``
   (the launcher route's cost per task), beside ``python -c <import mpi4py>``;
2. launcher route, one rank SIGKILLed in the middle of the program: the
   launcher's exit status, how long until every rank was gone;
3. communicator route: ``mpiexec -n N+1`` where rank 0 stands for the
   master (it prints a line now and then, as a master logs, and never
   enters MPI again) and ranks 1..N loop on an allreduce over their own
   communicator; one of them is SIGKILLed. For plain ``mpiexec`` and for
   ``mpiexec -disable-auto-cleanup`` (SIGUSR1 ignored, as the farm's ranks
   do): does rank 0 survive, do the others go on, hang or die;
4. the farm: ``--tasks`` tasks, each a ``run_mpi_program`` allreduce on N
   cores, on one slave declaring ``cores=N`` (an Executor): the time per
   task beside the program's own start-up.

Nothing is asserted; see docs/guide/mpi-tasks.md. Every process started is
killed at the end.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ALLREDUCE = ("from mpi4py import MPI; c = MPI.COMM_WORLD; s = c.allreduce(c.rank + 1); "
             "print(s) if c.rank == 0 else None")


def mpiexec() -> str:
    from scientific_ms.mpi_program import find_mpiexec
    found = find_mpiexec()
    if found is None:
        raise SystemExit("no mpiexec found (pip install mpich, or put one on PATH)")
    return found


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what} after {timeout} s")
        time.sleep(0.02)   # polling files and processes from outside


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_session(process: subprocess.Popen, pids=()) -> None:
    """End a launcher started in a session of its own, and any rank left (Hydra setsids them)."""
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


# ---------------------------------------------------------------- 1. start-up

def startup(processes: int, repeat: int) -> float:
    launcher = mpiexec()
    times, alone = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([launcher, "-n", str(processes), sys.executable, "-c", ALLREDUCE], check=True,
                       capture_output=True)
        times.append(time.perf_counter() - started)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "from mpi4py import MPI"], check=True, capture_output=True)
        alone.append(time.perf_counter() - started)
    print(f"1. start-up, {repeat} runs: mpiexec -n {processes} python -c <allreduce>: "
          f"median {statistics.median(times):.3f} s (min {min(times):.3f}, max {max(times):.3f}); "
          f"one python importing mpi4py.MPI: median {statistics.median(alone):.3f} s")
    return statistics.median(times)


# ---------------------------------------------------------------- ranks that wait to be killed

def rank_job(directory: str, role: str) -> None:
    """A rank: writes its PID, then loops (``role``: "program" or "communicator")."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)   # as the farm's ranks do (docs/guide/mpi.md)
    from mpi4py import MPI
    world = MPI.COMM_WORLD
    rank = world.rank
    if role == "communicator":   # rank 0 is the master, outside; 1..N one task's communicator
        comm = world.Split(0 if rank == 0 else 1, rank)
    else:
        comm = world
    progress = Path(directory, f"{rank}.count")
    Path(directory, f"{rank}.pid").write_text(str(os.getpid()))
    count = 0
    while True:
        if role == "communicator" and rank == 0:
            print("master: serving", flush=True)   # a master logs now and then
            time.sleep(0.2)
            continue
        comm.allreduce(1)
        count += 1
        progress.write_text(str(count))
        time.sleep(0.01)


def counts(directory: Path, ranks) -> dict:
    found = {}
    for rank in ranks:
        try:
            found[rank] = int(Path(directory, f"{rank}.count").read_text() or 0)
        except (OSError, ValueError):
            found[rank] = 0
    return found


def kill_one_rank(processes: int, role: str, flags, observe: float) -> str:
    """Start ``processes`` ranks, SIGKILL rank 2 once all loop, watch the rest for ``observe`` s."""
    with tempfile.TemporaryDirectory() as directory:
        command = [mpiexec(), *flags, "-n", str(processes), sys.executable, os.path.abspath(__file__),
                   "--rank-job", directory, role]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)
        pids = {}
        try:
            def started():
                for rank in range(processes):
                    path = Path(directory, f"{rank}.pid")
                    if rank not in pids and path.is_file() and path.read_text():
                        pids[rank] = int(path.read_text())
                looping = [r for r in range(processes) if not (role == "communicator" and r == 0)]
                return len(pids) == processes and min(counts(Path(directory), looping).values()) >= 5
            wait_until(started, 60, "every rank to start its loop")
            victim = 2
            others = [r for r in range(processes) if r != victim]
            os.kill(pids[victim], signal.SIGKILL)
            killed = time.monotonic()
            before = counts(Path(directory), others)
            gone_at = {}
            ended_at = None
            while time.monotonic() - killed < observe:
                for rank in others:
                    if rank not in gone_at and not alive(pids[rank]):
                        gone_at[rank] = time.monotonic() - killed
                if ended_at is None and process.poll() is not None:
                    ended_at = time.monotonic() - killed
                if ended_at is not None and len(gone_at) == len(others):
                    break
                time.sleep(0.02)
            after = counts(Path(directory), others)
            looped = [r for r in others if not (role == "communicator" and r == 0)]
            went_on = [r for r in looped if r not in gone_at and after[r] > before[r]]
            stuck = [r for r in looped if r not in gone_at and after[r] == before[r]]
            launcher = (f"mpiexec ended after {ended_at:.2f} s, status {process.returncode}" if ended_at is not None
                        else f"mpiexec still running after {observe:g} s")
            dead = ", ".join(f"rank {r} after {gone_at[r]:.2f} s" for r in sorted(gone_at)) or "none"
            return (f"{launcher}; other ranks dead: {dead}; still looping: {went_on or 'none'}; "
                    f"stuck in their allreduce: {stuck or 'none'}"
                    + ("" if role != "communicator" else
                       f"; rank 0 (the master) {'dead' if 0 in gone_at else 'alive'}"))
        finally:
            kill_session(process, pids.values())


# ---------------------------------------------------------------- 4. the farm

def farm(processes: int, tasks: int) -> None:
    from scientific_ms import Executor, LocalSlaves, run_mpi_program

    def allreduce(i):
        return int(run_mpi_program([sys.executable, "-c", ALLREDUCE]).stdout)

    slaves = LocalSlaves(slaves_per_job=1, min_jobs=1, max_jobs=1, resources=f"cores={processes}")
    with Executor(slaves=slaves) as ex:
        ex.options(resources={"cores": processes}).submit(allreduce, -1).result(timeout=120)   # warm up
        started = time.perf_counter()
        futures = [ex.options(resources={"cores": processes}).submit(allreduce, i) for i in range(tasks)]
        results = [f.result(timeout=120) for f in futures]
        elapsed = time.perf_counter() - started
    expected = processes * (processes + 1) // 2
    print(f"4. the farm: {tasks} tasks, each mpiexec -n {processes} <allreduce> through run_mpi_program "
          f"on one slave with cores={processes}: {elapsed:.2f} s, {elapsed / tasks:.3f} s per task; "
          f"results {'all' if results == [expected] * tasks else 'NOT all'} {expected}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=6)
    parser.add_argument("--observe", type=float, default=5.0, help="seconds to watch after the kill")
    parser.add_argument("--rank-job", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank_job:
        rank_job(*args.rank_job)
        return
    print(f"mpiexec: {mpiexec()}; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}")
    startup(args.processes, args.repeat)
    print(f"2. launcher route, mpiexec -n {args.processes}, rank 2 SIGKILLed: "
          + kill_one_rank(args.processes, "program", [], args.observe))
    for flags in ([], ["-disable-auto-cleanup"]):
        print(f"3. communicator route, mpiexec {' '.join(flags) + ' ' if flags else ''}-n {args.processes + 1}, "
              f"rank 2 SIGKILLed: " + kill_one_rank(args.processes + 1, "communicator", flags, args.observe))
    farm(args.processes, args.tasks)


if __name__ == "__main__":
    main()
