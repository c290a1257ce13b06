"""What every slave of tests/test_runtime.py runs, whatever launched it: one function, ``run``.

Each execution first leaves a file ``LOG_DIR/KEY@PID@START`` (START: ``time.monotonic()``,
one clock for every process of the machine), so that the test counts the executions
of a task, sees which process runs it and when it started, without asking the master.
"""

import os
import time
from pathlib import Path


def mark(key, log_dir):
    """Record one execution of ``key`` by this process (a new file: executions never mix)."""
    name = f"{key}@{os.getpid()}@{time.monotonic():.6f}"
    os.close(os.open(os.path.join(log_dir, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def run(kind, key, arg, log_dir):
    """One task: ``spin`` sums ``range(arg)`` in one C call (the GIL held throughout),
    ``hold`` waits until the file ``arg`` exists, ``work`` sleeps ``arg`` seconds,
    ``quick`` returns at once. Returns (pid, value)."""
    mark(key, log_dir)
    if kind == "spin":
        return os.getpid(), sum(range(arg))
    if kind == "hold":
        deadline = time.monotonic() + 60.0
        while not os.path.exists(arg) and time.monotonic() < deadline:
            time.sleep(0.01)   # a stand-in for work that the test ends by creating the file
        return os.getpid(), Path(arg).exists()
    if kind == "work":
        time.sleep(arg)
        return os.getpid(), arg
    return os.getpid(), None
