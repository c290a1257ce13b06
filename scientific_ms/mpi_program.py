"""Tasks that are MPI programs: the launcher line for a task's cores, and running one.

A task requested with ``resources={"cores": N}`` holds N core slots of its
host while it runs (``core/resources.py``). While its handler runs, the
worker tells it how to start an MPI program on them (``slave/devices.py``):

- ``SCIENTIFIC_MS_CORES``: N;
- ``SCIENTIFIC_MS_MPI_PREFIX``: the launcher line, shell-quoted, e.g.
  ``/venv/bin/mpiexec -n 4`` (as Parsl's MPI apps get ``$PARSL_MPI_PREFIX``).

The launcher is ``SCIENTIFIC_MS_MPI_LAUNCHER`` when set (a site's own,
without ``-n``: ``srun --mpi=pmi2``, ``mpirun --oversubscribe``), else the
``mpiexec`` of this Python's environment (beside ``sys.executable``: the
``mpich`` wheel's, so the one that matches its mpi4py), else the one on
``PATH``. :func:`run_mpi_program` runs a program with it.

Why a task launches its own MPI program rather than running on a group of
slave ranks that share a communicator: a rank that dies inside a live
communicator takes the whole MPI job down (MPICH's Hydra kills every rank,
the master's included) or leaves the others stuck in their collective;
a program started per task takes only itself down. The figures:
``docs/guide/mpi-tasks.md`` and ``benchmarks/mpi_tasks.py``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Mapping, Optional, Sequence

import psutil

from .errors import ConfigurationError, MPIProgramError

#: A site's MPI launcher, without ``-n`` (``srun --mpi=pmi2``); default: this environment's mpiexec.
LAUNCHER_VARIABLE = "SCIENTIFIC_MS_MPI_LAUNCHER"
#: Set around a handler whose task holds cores: the launcher line for exactly that many processes.
PREFIX_VARIABLE = "SCIENTIFIC_MS_MPI_PREFIX"
#: Set around a handler whose task holds cores: how many.
CORES_VARIABLE = "SCIENTIFIC_MS_CORES"

#: How much of a failed program's standard error its MPIProgramError quotes.
TAIL_LINES = 20


@functools.cache
def find_mpiexec() -> Optional[str]:
    """This environment's ``mpiexec``: beside ``sys.executable`` (a virtual environment's,
    e.g. the ``mpich`` wheel's), on ``PATH``, or in the ``mpich`` wheel's files; None if none."""
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("mpiexec")
    if found:
        return found
    import importlib.metadata
    try:
        files = importlib.metadata.files("mpich") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for entry in files:
        if entry.name == "mpiexec" and "bin" in entry.parts:
            path = Path(str(entry.locate())).resolve()
            if path.is_file() and os.access(path, os.X_OK):
                return str(path)
    return None


def launcher(environ: Mapping[str, str] = os.environ) -> List[str]:
    """The MPI launcher, without ``-n``: ``SCIENTIFIC_MS_MPI_LAUNCHER``, else
    :func:`find_mpiexec`, else a bare ``mpiexec`` (which then fails saying it is not found)."""
    text = environ.get(LAUNCHER_VARIABLE, "").strip()
    if text:
        return shlex.split(text)
    return [find_mpiexec() or "mpiexec"]


def prefix(processes: int, launch: Sequence[str]) -> List[str]:
    """The launcher line that starts an MPI program on ``processes`` processes."""
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ConfigurationError(f"an MPI program needs a whole number >= 1 of processes, got {processes!r}")
    return [*launch, "-n", str(processes)]


def task_prefix(environ: Mapping[str, str] = os.environ) -> Optional[List[str]]:
    """The launcher line of the running task (``SCIENTIFIC_MS_MPI_PREFIX``), or None outside one."""
    text = environ.get(PREFIX_VARIABLE, "").strip()
    return shlex.split(text) if text else None


def run_mpi_program(argv: Sequence[str], *, processes: Optional[int] = None, cwd: Optional[str] = None,
                    env: Optional[Mapping[str, str]] = None, timeout: Optional[float] = None,
                    input: Optional[str] = None) -> subprocess.CompletedProcess:
    """Run the MPI program ``argv`` on the task's cores; return its output once every rank ended.

    The command is the task's launcher line (``SCIENTIFIC_MS_MPI_PREFIX``: ``mpiexec -n N``
    for a task requested with ``resources={"cores": N}``) followed by ``argv``;
    ``processes=`` starts that many instead (outside a task, or fewer than its cores).
    Returns a :class:`subprocess.CompletedProcess` with ``stdout`` and ``stderr`` as text.

    Raises :class:`~scientific_ms.MPIProgramError` naming the command, its exit status and the
    tail of its standard error when the program fails (a rank exits non-zero or is killed: the
    launcher then ends the others), or when it runs past ``timeout`` seconds. If the handler is
    interrupted meanwhile (its time limit, Ctrl-C), the launcher and every rank are killed
    before the exception goes on; and if the worker itself is killed, its keeper kills its
    process group, which the launcher shares (its ranks die with it).
    """
    if isinstance(argv, str):
        raise ConfigurationError(f"run_mpi_program takes the program and its arguments as a list, "
                                 f"e.g. [sys.executable, 'program.py'], got the string {argv!r}")
    if processes is not None:
        line = prefix(processes, launcher())
    else:
        found = task_prefix()
        if found is None:
            raise ConfigurationError(
                f"run_mpi_program runs on the cores of its task, and this is no task given cores "
                f"({PREFIX_VARIABLE} is not set): request the task with resources={{'cores': N}}, "
                f"or pass processes=N")
        line = found
    command = [*line, *map(str, argv)]
    # In the worker's own process group (no new session): the keeper kills that group when it
    # ends the worker, and the ranks die with their launcher (measured with MPICH's Hydra,
    # which puts each rank in a session of its own).
    with subprocess.Popen(command, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                          env=None if env is None else dict(env)) as process:
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_tree(process)
            stdout, stderr = process.communicate()
            raise MPIProgramError(f"the MPI program {shlex.join(command)} ran longer than {timeout:g} s "
                                  f"and was killed{_tail(stderr)}", command, None, stderr) from None
        except BaseException:
            _kill_tree(process)   # the handler's time limit, Ctrl-C: no rank outlives it
            raise
    if process.returncode != 0:
        code = process.returncode
        status = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        raise MPIProgramError(f"the MPI program {shlex.join(command)} failed ({status}): a rank "
                              f"failed or was killed{_tail(stderr)}", command, code, stderr)
    return subprocess.CompletedProcess(command, 0, stdout, stderr)


def _tail(stderr: Optional[str]) -> str:
    lines = (stderr or "").rstrip().splitlines()[-TAIL_LINES:]
    return "; the end of its standard error:\n" + "\n".join(lines) if lines else "; it wrote nothing to stderr"


def _kill_tree(process: subprocess.Popen) -> None:
    """Kill the launcher and everything below it (its proxies and ranks), then reap it."""
    try:
        below = psutil.Process(process.pid).children(recursive=True)
    except psutil.Error:
        below = []
    with contextlib.suppress(OSError):
        process.kill()
    for child in below:
        with contextlib.suppress(psutil.Error):
            child.kill()
    process.wait()
