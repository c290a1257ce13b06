"""How a master ends on SIGTERM: through SystemExit, so that its shutdown still runs (slaves
told, label file removed): while ``MasterProcess.start`` runs (:func:`terminate_on_sigterm`),
or from then on for a master started without runJob, whose shutdown runs at interpreter exit."""

from __future__ import annotations

import contextlib
import signal
import threading

_terminated = False


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit(128 + 15) from now on.

    Only from the main thread, and only when nobody installed a handler.
    """
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_system_exit)


def ended_by_sigterm() -> bool:
    """True once SIGTERM ended the script: its shutdown then waits for nothing that may run on."""
    return _terminated


def _raise_system_exit(signum, frame):
    global _terminated
    _terminated = True
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def terminate_on_sigterm():
    """Turn SIGTERM into SystemExit so that a terminated master still cleans up."""
    installed = False
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        def handler(signum, frame):
            raise SystemExit(128 + signum)
        signal.signal(signal.SIGTERM, handler)
        installed = True
    try:
        yield
    finally:
        if installed:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
