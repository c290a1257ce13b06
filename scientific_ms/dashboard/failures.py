"""The failed tasks a master saw, with their tracebacks, kept for its own dashboard (bounded)."""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Optional


class FailureLog:
    """The last failures, recorded from the answers the task manager accepts.

    Installed in front of ``TaskManager.on_answers`` (whoever set it, a
    journal, is still called first). Only a failed answer costs anything
    beyond a test of its ``ok`` flag; parameters and results are never kept.
    """

    def __init__(self, limit: int = 200):
        self._entries: Deque[Dict[str, Any]] = collections.deque(maxlen=limit)
        self._lock = threading.Lock()

    def chain(self, before: Optional[Callable[[list], None]]) -> Callable[[list], None]:
        """A callback for ``on_answers`` that calls ``before`` (if any), then records failures."""
        def on_answers(settled: list) -> None:
            if before is not None:
                before(settled)
            failed = [answer for answer in settled if not answer[1]]
            if failed:
                self.record(failed)
        return on_answers

    def record(self, failed: list) -> None:
        """Keep (task_id, ok, payload, traceback) answers that failed; drops the payloads."""
        now = round(time.time(), 3)
        with self._lock:
            for task_id, _, _, traceback in failed:
                self._entries.append({"time": now, "task_id": task_id, "tag": task_id.rsplit("_", 1)[0],
                                      "traceback": traceback})

    def recent(self) -> List[Dict[str, Any]]:
        """The failures kept, oldest first."""
        with self._lock:
            return list(self._entries)
