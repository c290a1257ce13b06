"""Counting the executions of tasks across processes and master runs (the journal tests)."""

import os


def record(side_file, i):
    """Append ``i`` to ``side_file``: one O_APPEND write, so that concurrent slaves never mix lines."""
    fd = os.open(side_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{i}\n".encode())
    finally:
        os.close(fd)
