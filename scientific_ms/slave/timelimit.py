"""Interrupt a task handler that runs past its time limit.

In the main thread (a slave process's usual case) SIGALRM raises
TaskTimeLimitError inside the handler: this also interrupts blocking calls
such as ``time.sleep`` or a socket read. Elsewhere (a slave running in a
thread) the error is raised asynchronously and takes effect at the
handler's next Python bytecode. Neither can stop C code that never returns
to the interpreter: the slave's keeper (``keeper.py``) then answers the task
and kills the worker; a slave without a keeper stays busy, and the master
reports the task on its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import threading
from typing import Iterator, Optional

from ..errors import TaskTimeLimitError


@contextlib.contextmanager
def time_limit(seconds: Optional[float], what: str) -> Iterator[None]:
    """Raise TaskTimeLimitError in this thread if the block runs longer than ``seconds``."""
    if seconds is None:
        yield
        return
    message = f"{what} ran longer than its time limit of {seconds:g} s"
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        def on_alarm(signum, frame):
            raise TaskTimeLimitError(message)
        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    else:
        timer = threading.Timer(seconds, _raise_in, args=(threading.get_ident(),))
        timer.daemon = True
        timer.start()
        try:
            yield
        except TaskTimeLimitError as error:
            if error.args:
                raise
            raise TaskTimeLimitError(message) from None  # the bare one raised by _raise_in
        finally:
            timer.cancel()


def _raise_in(thread_id: int) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(TaskTimeLimitError))
