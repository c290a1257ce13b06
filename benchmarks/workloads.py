"""The benchmark workloads, shared by every system measured (module-level, so Pool can pickle
them), and the timed loops that run a workload on Pool and on a concurrent.futures executor."""

import concurrent.futures
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


def time_pool(pool, function, parameters):
    """Seconds for ``pool.imap_unordered`` (chunksize 1) to run ``function`` on each parameter."""
    started = time.perf_counter()
    for _ in pool.imap_unordered(function, parameters, chunksize=1):
        pass
    return time.perf_counter() - started


def time_executor(executor, function, parameters):
    """Seconds for ``executor`` to run ``function`` on each parameter, submitted one by one,
    results taken with ``as_completed``."""
    started = time.perf_counter()
    for future in concurrent.futures.as_completed([executor.submit(function, value) for value in parameters]):
        future.result()
    return time.perf_counter() - started


def gaussian_log_prob(x):
    """A cheap log-probability (a standard normal in len(x) dimensions) for emcee: x is a numpy array."""
    return -0.5 * float(x @ x)


_loaded = set()   # the keys this process has loaded (affinity.py's benchmark)


def load_and_nap(key, load_seconds, seconds):
    """Load ``key`` once per process (sleep ``load_seconds`` the first time), then sleep ``seconds``."""
    if key not in _loaded:
        time.sleep(load_seconds)
        _loaded.add(key)
    time.sleep(seconds)
    return key
