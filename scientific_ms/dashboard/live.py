"""What the dashboard shows of a live master: its status, as ``show --json`` reports it, and the
history folded from successive statuses (``history.py``)."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from typing import Any, Callable, Dict, Optional

from ..cli.report import build_report
from ..errors import ScientificMSError
from .history import History

log = logging.getLogger(__name__)

#: Several pages (or tabs) polling at once share one status per this many seconds.
MIN_INTERVAL = 0.5


class LiveSource:
    """A live master's state for the page, asked for only when a page asks.

    ``status``: returns the master's status with its last failures
    (``TaskManager.status(failures=True)`` in the master, a connection's
    ``status`` call, :class:`RemoteStatus`, elsewhere).
    """

    kind = "live"

    def __init__(self, label: str, address: str, status: Callable[[], Dict[str, Any]],
                 show_values: bool = False):
        self.label = label
        self.address = address
        self.show_values = show_values
        self._status = status
        self._history = History()
        self._lock = threading.Lock()
        self._document: Optional[Dict[str, Any]] = None
        self._taken = 0.0
        self._report: Optional[Dict[str, Any]] = None
        self._last_status: Optional[Dict[str, Any]] = None
        self._ended: Optional[str] = None

    def state(self) -> Dict[str, Any]:
        """The page's data (a JSON-ready dict), at most :data:`MIN_INTERVAL` s old."""
        with self._lock:
            if self._document is None or time.monotonic() - self._taken >= MIN_INTERVAL:
                self._document = self._refresh()
                self._taken = time.monotonic()
            return self._document

    def _refresh(self) -> Dict[str, Any]:
        now = time.time()
        if self._ended is None:
            try:
                status = self._status()
            except ScientificMSError as error:   # the master ended or died: keep its last state
                self._ended = str(error)
                log.info("the master stopped answering: %s", error)
            else:
                self._history.update(status, now, (f["task_id"] for f in status.get("failures", ())))
                self._last_status = status
        status = self._last_status or {"tasks": {}, "processes": [], "counters": {}}
        report = build_report(self.label, self.address, status)
        tasks = report["tasks"]
        rate = report["throughput_per_second"] or 0.0
        remaining = tasks["waiting"] + tasks["running"]
        master: Dict[str, Any] = next((p for p in report["processes"] if p["role"] == "master"), {})
        return {
            "kind": self.kind, "label": self.label, "address": self.address, "now": round(now, 3),
            "host": master.get("host"), "show_values": self.show_values,
            "ended": self._ended, "report": report,
            "tags": _per_tag(status.get("tasks", {}), status.get("answered", {})),
            "eta_seconds": round(remaining / rate, 1) if rate > 0 and remaining else (0 if not remaining else None),
            "throughput": self._history.throughput(),
            "stream": self._history.stream(now),
            "slaves": [p for p in report["processes"] if p["role"] != "master"],
            "gone": list(self._history.gone),
            "events": list(self._history.events),
            "failures": status.get("failures", []),
        }


def _per_tag(tasks: Dict[str, Dict[str, int]], answered: Dict[str, Dict[str, int]]) -> Dict[str, Dict[str, int]]:
    """{tag: {waiting, running, finished, failed}}: the tasks waiting and running now, and
    every answer since the start (retrieved or not)."""
    tags: Dict[str, Dict[str, int]] = {}
    for state, counts in (("waiting", tasks.get("waiting", {})), ("running", tasks.get("running", {})),
                          ("finished", answered.get("finished", {})), ("failed", answered.get("failed", {}))):
        for tag, count in counts.items():
            tags.setdefault(tag, dict.fromkeys(("waiting", "running", "finished", "failed"), 0))[state] = count
    return dict(sorted(tags.items()))


class RemoteStatus:
    """A master's ``status``, with its last failures, over one connection, made and used in one
    thread of its own (a connection belongs to the thread that made it)."""

    def __init__(self, connect: Callable[[], Any], timeout: float = 30.0):
        self._timeout = timeout
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="scientific_ms-dashboard")
        try:
            self._connection = self._thread.submit(connect).result()
        except BaseException:
            self._thread.shutdown(wait=False)
            raise
        self.address: str = self._connection.address

    def __call__(self) -> Dict[str, Any]:
        return self._thread.submit(self._connection.status, self._timeout, 0.0, True).result()

    def close(self) -> None:
        """Close the connection (in its thread) and end the thread."""
        self._thread.submit(self._connection.close).result()
        self._thread.shutdown()
