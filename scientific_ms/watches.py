"""The heartbeat long-polls in progress, so that each ends as soon as it serves no one.

A slave's ``watch`` call waits in the master for up to a watchdog period
(minutes, by default). While it waits, its thread is not reading the
socket, so a slave killed meanwhile would hold that thread and socket until
the wait ran out. Each wait is therefore woken early when its slave is
declared dead or says goodbye, and every wait when the job ends; the
thread then answers, finds the connection closed, and lets it go.
"""

from __future__ import annotations

import threading
from typing import Dict, Iterable, Set


class WatchWaits:
    """Waits keyed by process id, woken one process at a time or all at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: Dict[int, Set[threading.Event]] = {}
        self._over = False

    def wait(self, process_id: int, timeout: float) -> None:
        """Block up to ``timeout`` s, or until ``wake(process_id)`` or ``wake_all()``."""
        event = threading.Event()
        with self._lock:
            if self._over:
                return
            self._events.setdefault(process_id, set()).add(event)
        try:
            event.wait(timeout)
        finally:
            with self._lock:
                events = self._events.get(process_id)
                if events is not None:
                    events.discard(event)
                    if not events:
                        del self._events[process_id]

    def wake(self, process_ids: Iterable[int]) -> None:
        """End the waits of these processes (declared dead, or gone)."""
        with self._lock:
            for process_id in process_ids:
                for event in self._events.get(process_id, ()):
                    event.set()

    def wake_all(self) -> None:
        """End every wait, now and to come: the job is over."""
        with self._lock:
            self._over = True
            for events in self._events.values():
                for event in events:
                    event.set()
