"""``python -m scientific_ms script.py [args]``: run a script whose Executor is served by MPI ranks.

Under ``mpiexec -n N``, rank 0 runs the script (as ``__main__``, with
``sys.argv`` set as Python would) and its first ``Executor()`` is served by
the other N - 1 ranks, which run function-running slaves until it ends; as
``python -m mpi4py.futures script.py`` does. Without MPI the script simply
runs. mpi4py is imported only under MPI.
"""

from __future__ import annotations

import logging
import os
import runpy
import sys
from typing import Collection, List

from .. import mpi

log = logging.getLogger(__name__)


def is_script(argv: List[str], commands: Collection[str]) -> bool:
    """True if ``argv`` (after ``-m scientific_ms``) names a script rather than one of the
    task_manager ``commands`` (their names and aliases: ``cli.commands.command_names()``)."""
    if not argv or argv[0].startswith("-"):
        return False
    return argv[0] not in commands and (argv[0].endswith(".py") or os.path.isfile(argv[0]))


def run(argv: List[str]) -> int:
    """Run ``argv[0]`` with ``argv[1:]`` as its arguments; ranks other than 0 serve its Executor."""
    script = argv[0]
    if not os.path.isfile(script):
        sys.stderr.write(f"scientific_ms: no script {script!r} (and it is not a task_manager command: "
                         f"show, status, watch, list, slave)\n")
        return 2
    if mpi.runs_under_mpi() and mpi.rank() != 0:
        from .function_slave import serve_functions
        mpi.serve_as_function_rank(serve_functions)   # does not return
    sys.argv = list(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        if mpi.runs_under_mpi():
            # The other ranks wait for an Executor: if the script made none, let them go.
            mpi.announce_failure(f"the script {script} ended without starting an Executor; "
                                 f"this rank had nothing to serve")
    return 0
