"""The benchmark workloads, shared by every system measured (module-level, so Pool can pickle them)."""

import time


def inc(x):
    return x + 1


def echo(data):
    return data


def nap(seconds):
    time.sleep(seconds)
    return seconds


MB = 1_000_000
#: name -> (function, parameters of each task, ideal makespan with 2 workers or None)
WORKLOADS = {
    "W1": (inc, lambda: range(20_000), None),
    "W2": (echo, lambda: [bytes(MB)] * 200, None),
    "W3": (nap, lambda: [0.01] * 400, 2.0),
}
