"""The GPUs a task was given, in its handler's environment.

The master gives a task that needs k GPUs k ids of its host's GPUs, never
one that another running task holds (``core/resources.py``). The worker
sets ``CUDA_VISIBLE_DEVICES`` (which CUDA, PyTorch, JAX and TensorFlow
read when they first touch a GPU) and ``SCIENTIFIC_MS_GPUS`` (the same ids,
for code that picks its device itself) while the handler runs, and puts
back what was there before.
"""

from __future__ import annotations

import os
from typing import Dict, Optional, Sequence

#: The variables a task's GPU ids are given in.
VARIABLES = ("CUDA_VISIBLE_DEVICES", "SCIENTIFIC_MS_GPUS")


class VisibleDevices:
    """The environment as it was before a task's GPU ids were set; :meth:`restore` puts it back."""

    def __init__(self, before: Dict[str, Optional[str]]):
        self._before = before

    def restore(self) -> None:
        for name, value in self._before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def visible_devices(gpus: Sequence[int]) -> VisibleDevices:
    """Show a handler the GPUs ``gpus`` (ids on its host); returns what undoes it."""
    before = {name: os.environ.get(name) for name in VARIABLES}
    ids = ",".join(str(int(gpu)) for gpu in gpus)
    for name in VARIABLES:
        os.environ[name] = ids
    return VisibleDevices(before)
