"""A slave for the steering tests: python steering_slave.py LABEL."""

import sys

from scientific_ms import startSlaveProcess
from steering_functions import flaky, order, span, where


def do_order(value):
    return order(value)


def do_span(seconds):
    return span(seconds)


def do_where(seconds, marker_dir=None):
    return where(seconds, marker_dir)


def do_flaky(marker_dir, failures, error="OSError"):
    return flaky(marker_dir, failures, error)


startSlaveProcess(sys.argv[1], wait=True)
