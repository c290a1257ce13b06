"""Functions that the Pool tests run on slaves (importable there through PYTHONPATH)."""

import os

#: Set in each slave process by the Pool's initializer.
configured = None


def f(x):
    return x * x


def configure(value):
    global configured
    configured = value


def read_configuration(_x):
    return configured, os.getpid()
