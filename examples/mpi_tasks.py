"""A sweep of MPI programs: each task is one computation over 4 MPI processes.

    python mpi_tasks.py

A node agent on this machine offers 4 cores to its slave. Each task asks for
them (``resources={"cores": 4}``), and its handler starts an MPI program on
exactly those with ``run_mpi_program``: the launcher line ``mpiexec -n 4``
comes from ``SCIENTIFIC_MS_MPI_PREFIX``, set while the handler runs. A rank
that dies ends that program and fails that task alone; ``retries=1`` runs it
again. Needs mpi4py and an mpiexec (``pip install mpi4py mpich``). See
docs/guide/mpi-tasks.md.
"""

import os
import sys

from scientific_ms import LocalSlaves, MasterProcess, SlaveProcess, run_mpi_program, runJob


def integrate(n):
    """One rank of the MPI program: pi by the midpoint rule on n intervals, shared by the ranks."""
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    h = 1.0 / n
    part = h * sum(4.0 / (1.0 + ((i + 0.5) * h) ** 2) for i in range(comm.rank, n, comm.size))
    pi = comm.allreduce(part)
    if comm.rank == 0:
        print(f"{pi:.10f} {comm.size}")


class Sweep(MasterProcess):
    def run(self):
        for n in (10, 100, 1000, 10000):
            self.request_task("pi", n, resources={"cores": 4}, retries=1)
        results = dict(self.retrieveResult()[2] for _ in range(4))
        for n, (pi, size) in sorted(results.items()):
            print(f"n={n}: pi ~ {pi:.10f} from {size} MPI processes")


class Worker(SlaveProcess):
    def do_pi(self, n):
        done = run_mpi_program([sys.executable, os.path.abspath(__file__), "--rank-of-pi", str(n)])
        pi, size = done.stdout.split()
        return n, (float(pi), int(size))


if sys.argv[1:2] == ["--rank-of-pi"]:
    integrate(int(sys.argv[2]))   # started by mpiexec: one rank of a task's program
else:
    runJob("mpi_tasks", Sweep, Worker,
           launch_slaves=LocalSlaves(slaves_per_job=1, min_jobs=1, max_jobs=1, resources="cores=4"))
