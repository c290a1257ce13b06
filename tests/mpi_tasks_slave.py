"""A slave for tests/test_mpi_tasks.py: each task runs mpi_allreduce.py on the task's cores."""

import os
import sys
from pathlib import Path

from scientific_ms import run_mpi_program, startSlaveProcess

PROGRAM = Path(__file__).resolve().parent / "mpi_allreduce.py"


def do_allreduce(directory, name, value):
    """Run the program on this task's cores; DIR/NAME.hold makes the first attempt wait for
    the test (the handler takes the file, so that a retry runs straight through)."""
    with open(os.path.join(directory, "runs"), "a") as runs:
        runs.write(f"{name} {os.getpid()} {os.environ['SCIENTIFIC_MS_MPI_PREFIX']}\n")
    hold = os.path.join(directory, f"{name}.hold")
    try:
        os.rename(hold, hold + ".taken")
        options = ["--hold"]
    except FileNotFoundError:
        options = []
    done = run_mpi_program([sys.executable, str(PROGRAM), directory, name, str(value), *options])
    return name, int(done.stdout), os.getpid()


def do_plain(value):
    return value, os.environ.get("SCIENTIFIC_MS_MPI_PREFIX"), os.environ.get("SCIENTIFIC_MS_CORES")


startSlaveProcess(sys.argv[1] if len(sys.argv) > 1 else None, wait=True)
