"""A slave for the large-data tests: python large_data_slave.py LABEL.

It traces its own allocations (tracemalloc), so that a test can count the
copies a large value costs on the slave's side.
"""

import sys
import tracemalloc

import large_values
from scientific_ms import startSlaveProcess

tracemalloc.start()
_held = [0]   # bytes traced when the last measure ended


def do_echo(*values):
    return values


def do_describe(*values):
    """How each value arrived: its type, whether it can be written, whether values share objects."""
    return [large_values.describe(value) for value in values], [values[0] is value for value in values]


def do_add_one(array):
    array += 1   # in place: the array the handler receives is writable
    return array


def do_measure(value):
    """``value``, and the bytes allocated beyond what was held since the last measure ended.

    That peak covers receiving and unpickling this task's parameters, and
    pickling and sending the previous task's result.
    """
    _, peak = tracemalloc.get_traced_memory()
    extra = peak - _held[0]
    tracemalloc.reset_peak()
    _held[0] = tracemalloc.get_traced_memory()[0]
    return value, extra


startSlaveProcess(sys.argv[1], wait=True)
