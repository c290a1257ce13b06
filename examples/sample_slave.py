"""The slave of sample_master.py (the job the task_manager guide's outputs come from)."""

import math

from scientific_ms import startSlaveProcess


def do_integrate(n):
    return sum(math.sin(i / n) for i in range(n)) / n

def do_sqrt(x):
    return math.sqrt(x)

startSlaveProcess()
