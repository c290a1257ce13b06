"""How a master started without runJob ends on SIGTERM: through SystemExit, so that its
shutdown at interpreter exit still runs (slaves told, label file removed)."""

from __future__ import annotations

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
