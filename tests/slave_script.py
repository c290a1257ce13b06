"""A slave used by the tests: python slave_script.py LABEL [WATCHDOG_PERIOD]."""

import os
import sys
import time

from scientific_ms import startSlaveProcess


def do_work(seconds, value):
    time.sleep(seconds)
    return value, os.getpid()


def do_logged_work(seconds, value, log_path):
    """Work, then record that this execution completed (one append per execution)."""
    time.sleep(seconds)
    with open(log_path, "a") as log:
        log.write(f"{value}\n")
    return value


def do_marked_work(seconds, value, marker_dir):
    """Leave a marker naming this process and the task, then work."""
    open(os.path.join(marker_dir, f"started-{os.getpid()}-{value}"), "w").close()
    time.sleep(seconds)
    return value


def do_pid():
    return os.getpid()


def do_fail(message):
    raise ValueError(message)


def do_spin(n):
    """Hold the GIL in C code for a while: sum() over a range never returns to the interpreter."""
    return sum(range(n))


def do_die(code):
    os._exit(code)


period = float(sys.argv[2]) if len(sys.argv) > 2 else 120.0
startSlaveProcess(sys.argv[1], watchdog_period=period, wait=True)
