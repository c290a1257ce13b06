"""The last failed tasks with their tracebacks: a bounded record, for the dashboard.

A failure costs one tuple appended to a deque of fixed length; the records
become plain data only when a status asks for them
(``TaskManager.status(failures=True)``), so memory stays flat however many
tasks fail and nothing is computed while no one looks. Parameters and
results are never kept: only the traceback text (its end, when huge).
"""

from __future__ import annotations

import collections
import time
from typing import Any, Deque, Dict, List, Optional, Tuple

from .registry import ProcessRecord

#: Failures kept (the most recent).
LIMIT = 200

#: Characters of one traceback kept (its end: the exception and the frames nearest to it).
MAX_TRACEBACK = 20_000

#: (Unix time, task id, tag, process id, host, pid, traceback)
_Entry = Tuple[float, str, str, Optional[int], Optional[str], Optional[int], str]


class RecentFailures:
    """The last :data:`LIMIT` failures; the caller (``traffic.py``) holds the manager's lock."""

    def __init__(self, limit: int = LIMIT):
        self._entries: Deque[_Entry] = collections.deque(maxlen=limit)

    def add(self, task_id: str, tag: str, process_id: Optional[int], proc: Optional[ProcessRecord],
            traceback: str) -> None:
        """Record a failure; ``proc``: the process that answered, if still registered
        (None for a task failed by the master: its slave was lost, it overran its time limit)."""
        if len(traceback) > MAX_TRACEBACK:
            traceback = f"({len(traceback) - MAX_TRACEBACK} characters cut)\n" + traceback[-MAX_TRACEBACK:]
        host = pid = None
        if proc is not None:
            host, pid = proc.info.get("host"), proc.info.get("pid")
        self._entries.append((time.time(), task_id, tag, process_id, host, pid, traceback))

    def recent(self) -> List[Dict[str, Any]]:
        """The failures kept, oldest first, as plain data."""
        return [{"time": round(when, 3), "task_id": task_id, "tag": tag, "slave": process_id,
                 "host": host, "pid": pid, "traceback": traceback}
                for when, task_id, tag, process_id, host, pid, traceback in self._entries]
