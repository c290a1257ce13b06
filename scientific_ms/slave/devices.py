"""What a task was given, in its handler's environment: its GPU ids, its cores.

The master gives a task that needs k GPUs k ids of its host's GPUs, never
one that another running task holds (``core/resources.py``). The worker
sets ``CUDA_VISIBLE_DEVICES`` (which CUDA, PyTorch, JAX and TensorFlow
read when they first touch a GPU) and ``SCIENTIFIC_MS_GPUS`` (the same ids,
for code that picks its device itself) while the handler runs.

A task that holds resources holds N cores (1 unless it asked for more): the
worker sets ``SCIENTIFIC_MS_CORES`` to N and ``SCIENTIFIC_MS_MPI_PREFIX`` to
the launcher line of an MPI program on N processes (``mpiexec -n N``;
``mpi_program.py``), which ``run_mpi_program`` uses.

Both are put back as they were once the handler returns.
"""

from __future__ import annotations

import os
import shlex
from typing import Dict, Optional, Sequence

#: The variables a task's GPU ids are given in.
VARIABLES = ("CUDA_VISIBLE_DEVICES", "SCIENTIFIC_MS_GPUS")


class VisibleDevices:
    """The environment as it was before a task's resources were set; :meth:`restore` puts it back."""

    def __init__(self, before: Dict[str, Optional[str]]):
        self._before = before

    def restore(self) -> None:
        for name, value in self._before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def task_environment(gpus: Optional[Sequence[int]], cores: Optional[int]) -> VisibleDevices:
    """Show a handler the GPUs ``gpus`` (ids on its host) and its ``cores``, either of them
    None when it was given none; returns what undoes it."""
    values: Dict[str, str] = {}
    if gpus is not None:
        ids = ",".join(str(int(gpu)) for gpu in gpus)
        values.update((name, ids) for name in VARIABLES)
    if cores is not None:
        from .. import mpi_program  # only for a task that holds resources
        values[mpi_program.CORES_VARIABLE] = str(int(cores))
        values[mpi_program.PREFIX_VARIABLE] = shlex.join(mpi_program.prefix(int(cores), mpi_program.launcher()))
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    return VisibleDevices(before)

