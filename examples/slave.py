"""The slave of master.py: module-level do_<tag> functions, then startSlaveProcess."""

import math

from scientific_ms import startSlaveProcess


def do_sqrt(x):
    return x, math.sqrt(x)


startSlaveProcess("demo", wait=True)
