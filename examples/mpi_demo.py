"""One script, launched by mpiexec: rank 0 is the master, every other rank a slave.

    mpiexec -n 4 python mpi_demo.py [TASKS]                          # MPICH, Open MPI
    mpiexec -disable-auto-cleanup -n 4 python mpi_demo.py [TASKS]    # MPICH: see docs/guide/mpi.md
    srun --mpi=pmix -n 4 python mpi_demo.py [TASKS]                  # SLURM
    python mpi_demo.py [TASKS]                                       # no MPI: the master spawns 2 slaves

MPI carries only the master's address and secret, once; every task then
goes over TCP, so a slave rank that dies (killed, out of memory, crashed)
does not take the job down: its tasks run again on the other ranks. More
slaves may join from any shell while it runs: ``task_manager slave mpi_demo``.
"""

import math
import os
import socket
import sys
from collections import Counter

from scientific_ms import MasterProcess, SlaveProcess, runJob
from scientific_ms.mpi import runs_under_mpi


class Master(MasterProcess):

    def run(self):
        n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
        for i in range(n):
            self.requestTask("root", float(i))
        results, workers = {}, Counter()
        for _ in range(n):
            task_id, tag, (x, root, where) = self.retrieveResult("root")
            results[x] = root
            workers[where] += 1
        for x in sorted(results):
            print(f"sqrt({x:g}) = {results[x]:.6f}")
        for where, count in sorted(workers.items()):
            print(f"{count:4d} tasks done by {where}")


class Root(SlaveProcess):

    def do_root(self, x):
        return x, math.sqrt(x), f"PID {os.getpid()} on {socket.gethostname()}"


# Under mpiexec the other ranks are the slaves; alone, spawn two.
runJob("mpi_demo", Master, Root, launch_slaves=0 if runs_under_mpi() else 2)
