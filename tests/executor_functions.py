"""Functions that the Executor tests run on slaves (importable there through PYTHONPATH)."""

import os
import time
from pathlib import Path


def add(x, y=0):
    return x + y


def square_with_pid(x):
    time.sleep(0.01)
    return x * x, os.getpid()


def fail(message):
    raise ValueError(message)


def die():
    os.kill(os.getpid(), 9)


def wait_for_file(path, marker=None, timeout=60.0):
    """Block until ``path`` exists (the test releases it); leave ``marker`` when started."""
    if marker:
        Path(marker).touch()
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)   # a slave-side stand-in for work; the test waits on conditions
    return "released"


def add_or_block(x, release=None):
    """``x``, or with ``release``: ``wait_for_file(release)`` (one function, so one tag, for both)."""
    return x if release is None else wait_for_file(release)


def touch(path):
    Path(path).touch()
    return path


def log_prob(theta):
    """A Gaussian log-probability for emcee."""
    import numpy as np
    return -0.5 * float(np.sum(np.asarray(theta) ** 2 / np.arange(1, len(theta) + 1)))
