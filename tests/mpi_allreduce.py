"""A 4-process MPI program for tests/test_mpi_tasks.py: mpiexec -n N python mpi_allreduce.py DIR NAME VALUE [--hold]

Every rank writes its PID to DIR/NAME.rank<r>.pid; with ``--hold``, every rank then waits
(outside MPI) until DIR/NAME.go exists, so that the test can kill one of them in the middle
of the program. Then the ranks allreduce VALUE * (rank + 1) and rank 0 prints the sum.
"""

import os
import sys
import time
from pathlib import Path

from mpi4py import MPI

directory, name, value = sys.argv[1], sys.argv[2], int(sys.argv[3])
hold = "--hold" in sys.argv[4:]
comm = MPI.COMM_WORLD
pid_file = Path(directory, f"{name}.rank{comm.rank}.pid")
pid_file.with_suffix(".tmp").write_text(str(os.getpid()))
pid_file.with_suffix(".tmp").rename(pid_file)   # whole when seen
if hold:
    go = Path(directory, f"{name}.go")
    deadline = time.monotonic() + 60
    while not go.exists():
        if time.monotonic() > deadline:
            sys.exit(f"rank {comm.rank} of {name}: no {go} after 60 s")
        time.sleep(0.01)   # a program held by the test, polling for its go-file
total = comm.allreduce(value * (comm.rank + 1))
if comm.rank == 0:
    print(total, flush=True)
