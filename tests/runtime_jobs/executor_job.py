"""An Executor with two local slaves: python executor_job.py LABEL."""

import sys

import control

from scientific_ms import Executor


class End(Exception):
    """Leaving the ``with`` block on an error: the Executor ends without waiting for its calls."""


try:
    with Executor(sys.argv[1], slaves=2, watchdog_period=0.5, use_name_server=False) as executor:
        control.serve_executor(executor)
        raise End
except End:
    pass
