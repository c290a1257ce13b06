"""A slave that leaves on its own: on SIGTERM (a batch system's walltime) or when idle too long.

Both end the same way, as a goodbye rather than a death: the slave stops
taking tasks, drops the ones it holds but has not started, says
``unregister(process_id, [], reason)`` so that the master puts every task
it held back at the front of the queue at once (no blame, no waiting for a
dropped connection or missed heartbeats) and counts why it left, then
exits 0. The pieces here are small and free of any slave logic, so that a
process keeping several slaves (a keeper, ``keeper.py``) could use them too:

* :class:`TerminationSignal` turns SIGTERM into a call of your function on
  a thread of its own. The signal handler itself only writes one byte to
  a pipe (nothing in it takes a lock, so it cannot deadlock with the code
  it interrupts); the thread reading the pipe does the work.
* :class:`IdleClock` says when a process has had no work for
  ``idle_timeout`` seconds, and how long it may still wait for some.
* the reasons sent with ``unregister`` (``protocol.CALLS``) are those of
  ``wire/protocol.py`` (``LEAVE_REASONS``); the master counts them
  (``task_manager show``).

::

    SLURM / kill            slave process
    ------------            -------------
    SIGTERM  ------------>  handler: one byte to the pipe
                            signal thread: on_signal()  ->  the feed stops fetching and
                                                             drops unstarted tasks
                            main thread: the running handler finishes (within the
                                         grace), then unregister(..., reason="sigterm"), exit 0
                            signal thread, after the grace: the handler is abandoned:
                                         unregister on another connection, exit 0
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from typing import Callable, Optional, TypeVar

log = logging.getLogger(__name__)


T = TypeVar("T")


def connect_or_leave(connect: Callable[..., T], wait: bool, wait_timeout: Optional[float],
                     idle_timeout: Optional[float], label: str) -> Optional[T]:
    """``connect(wait=..., wait_timeout=...)``, where a slave that waits for its master
    with an idle timeout (and no wait timeout) waits at most that long: waiting is idle
    too, and an array task started after its master finished must not wait forever.
    Returns the connection, or None when no master came within the idle timeout (the
    caller leaves, exit 0); other failures raise as usual."""
    from ..errors import MasterNotFoundError
    bounded = wait and wait_timeout is None and idle_timeout is not None
    try:
        return connect(wait=wait, wait_timeout=idle_timeout if bounded else wait_timeout)
    except MasterNotFoundError as error:
        if not bounded:
            raise
        log.warning("no master of %r came within the idle timeout (%g s); leaving", label, idle_timeout)
        log.debug("%s", error)
        return None


class TerminationSignal:
    """Calls ``on_signal()`` on a thread of its own when this process gets SIGTERM.

    :meth:`install` does nothing (and returns False) outside the main
    thread, or when a SIGTERM handler other than the default is set: the
    program's own handling wins. :meth:`uninstall` puts the default back.
    Later SIGTERMs are ignored while ``on_signal`` runs or after it ran:
    the process is already leaving.
    """

    def __init__(self, on_signal: Callable[[], None]):
        self._on_signal = on_signal
        self._write: Optional[int] = None   # the pipe's write end, once installed
        self._thread: Optional[threading.Thread] = None
        self.received = False
        self.installed = False

    def install(self) -> bool:
        if threading.current_thread() is not threading.main_thread() or \
                signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return False
        read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._thread = threading.Thread(target=self._wait, args=(read,), name="scientific_ms-sigterm", daemon=True)
        self._thread.start()
        signal.signal(signal.SIGTERM, self._handle)
        self.installed = True
        return True

    def uninstall(self) -> None:
        if not self.installed or self._write is None:
            return
        self.installed = False
        with contextlib.suppress(ValueError):   # not the main thread: leave it for the exit
            if signal.getsignal(signal.SIGTERM) == self._handle:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with contextlib.suppress(OSError):
            os.write(self._write, b"q")   # ends the thread if no signal came
        with contextlib.suppress(OSError):
            os.close(self._write)

    def _handle(self, signum, frame) -> None:
        if self._write is None:
            return
        with contextlib.suppress(OSError):   # a full pipe already holds a byte: enough
            os.write(self._write, b"T")

    def _wait(self, read: int) -> None:
        try:
            byte = os.read(read, 1)
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                os.close(read)
        if byte == b"T":
            self.received = True
            try:
                self._on_signal()
            except Exception:   # a bug here must not hide the signal: log it
                log.exception("handling SIGTERM failed")


class IdleClock:
    """When a process that leaves after ``idle_timeout`` seconds without work should go.

    ``busy()`` after each piece of work; ``expired()`` once it has been idle
    long enough; ``wait(poll)`` is how long to wait for work before asking
    again. With ``idle_timeout=None`` it never expires.
    """

    def __init__(self, idle_timeout: Optional[float], clock: Callable[[], float] = time.monotonic):
        self.idle_timeout = idle_timeout
        self._clock = clock
        self.last_work = clock()

    def busy(self) -> None:
        self.last_work = self._clock()

    def idle_seconds(self) -> float:
        return self._clock() - self.last_work

    def expired(self) -> bool:
        return self.idle_timeout is not None and self.idle_seconds() >= self.idle_timeout

    def wait(self, poll: float) -> float:
        if self.idle_timeout is None:
            return poll
        return max(0.0, min(poll, self.idle_timeout - self.idle_seconds()))
