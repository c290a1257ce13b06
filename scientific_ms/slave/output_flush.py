"""Lines written while a slave waits at its master for work: sent within ``output.DELAY``.

An idle slave's feed thread (``feed.py``) waits in an ``exchange`` call at
the master, up to ``settings.POLL_SECONDS``, and no line can go with that
call. A thread that a handler left running may print meanwhile:
:class:`WaitingFlush` sends those lines on a connection of its own, opened
the first time it is needed, in an ``exchange`` that asks for no task. The
connection closes after the slave's goodbye (``Session.close_connections``),
never before. The master does not bind the slave to a connection that only carries
its output (``wire/server.py``), so that its close never counts as the slave's loss.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, List, Optional

from ..errors import ScientificMSError
from ..wire.client import MasterConnection
from .output import DELAY, OutputBuffer

log = logging.getLogger(__name__)


class WaitingFlush:
    """Sends the lines that wait while the feed waits for work (see the module docstring).

    ``waiting``: is the feed in a call that waits for work now? ``process_id``:
    the slave's current id. ``revoked``: given the assignments that the master
    revoked, should a reply carry any (the feed drops them).
    """

    def __init__(self, main: MasterConnection, buffer: OutputBuffer, waiting: Callable[[], bool],
                 process_id: Callable[[], int], revoked: Callable[[List[int]], None]):
        self._main = main
        self._buffer = buffer
        self._waiting = waiting
        self._process_id = process_id
        self._revoked = revoked
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._connection: Optional[MasterConnection] = None

    def poke(self) -> None:
        """Lines wait, and the feed waits for work (any thread)."""
        with self._lock:
            if self._stop.is_set():
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="scientific_ms-output-flush", daemon=True)
                self._thread.start()
        self._wanted.set()

    def _run(self) -> None:
        try:
            while True:
                self._wanted.wait()
                self._stop.wait(DELAY)   # lines written together go together
                self._wanted.clear()
                if self._stop.is_set():
                    return
                if not self._waiting():
                    continue   # the feed's call returned: its next one takes the lines
                output = self._buffer.take()
                if output is None:
                    continue
                if self._connection is None:   # made here: this thread owns it
                    self._connection = self._main.duplicate()
                _, _, revoked = self._connection.exchange(self._process_id(), [], 0, 0.0, None, output=output)
                if revoked:
                    self._revoked(list(revoked))
        except ScientificMSError as error:   # the master is gone: the feed finds out on its own
            log.info("cannot send the slave's output while it waits for work: %s", error)

    def close(self) -> None:
        """Stop, and close the connection (after the goodbye)."""
        with self._lock:
            self._stop.set()
            thread = self._thread
        self._wanted.set()
        if thread is not None:
            thread.join(5.0)
        if self._connection is not None and (thread is None or not thread.is_alive()):
            self._connection.close()
