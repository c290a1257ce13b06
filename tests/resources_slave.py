"""A slave for the resources tests: python resources_slave.py LABEL (or stored slave code)."""

import os
import sys
import time

from scientific_ms import startSlaveProcess


def devices():
    return os.environ.get("CUDA_VISIBLE_DEVICES"), os.environ.get("SCIENTIFIC_MS_GPUS")


def do_together(marker_dir, count, name):
    """Say which GPUs this task sees, once ``count`` tasks run at once (each leaves a marker)."""
    open(os.path.join(marker_dir, name), "w").close()
    deadline = time.monotonic() + 60
    while len(os.listdir(marker_dir)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {os.listdir(marker_dir)} ran at once")
        time.sleep(0.01)
    return devices(), os.getpid()


def do_devices():
    return devices(), os.getpid()


def do_span(seconds):
    """When it ran (wall clock: the slaves are on this machine) and where."""
    started = time.time()
    time.sleep(seconds)
    return started, time.time(), os.getpid()


startSlaveProcess(sys.argv[1] if len(sys.argv) > 1 else None, wait=True)
