"""What the steering tests run on slaves (importable there: the slave script's folder,
or PYTHONPATH for an Executor's slaves)."""

import itertools
import os
import time
from pathlib import Path

_calls = itertools.count()


def order(value):
    """(value, how many calls this process ran before, pid): the order a slave ran its tasks in."""
    return value, next(_calls), os.getpid()


def span(seconds):
    """Work for ``seconds``; returns when it ran (wall clock: compared across processes)."""
    start = time.time()
    time.sleep(seconds)
    return start, time.time()


def flaky(marker_dir, failures, error="OSError"):
    """Fail the first ``failures`` attempts (counted in ``marker_dir``, across processes),
    then return (attempt, pid)."""
    attempt = len(os.listdir(marker_dir)) + 1
    Path(marker_dir, f"{attempt}-{os.getpid()}").touch()
    if attempt <= failures:
        raise {"OSError": OSError, "ValueError": ValueError}[error](f"attempt {attempt} failed in {os.getpid()}")
    return attempt, os.getpid()


def where(seconds, marker_dir=None):
    """Work for ``seconds`` and return the pid that ran it (noted in ``marker_dir`` at the start)."""
    if marker_dir is not None:
        Path(marker_dir, str(os.getpid())).touch()
    time.sleep(seconds)
    return os.getpid()
