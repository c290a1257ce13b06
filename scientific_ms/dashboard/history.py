"""A bounded history of a job, built from successive status snapshots.

The master's status says which tasks run where now; comparing two snapshots
says which ended, which slaves joined, were lost or left, and how many tasks
were rescheduled or failed in between. Only snapshots taken while a page
looks are compared, so nothing is computed while no one looks; every list
here has a fixed bound, so memory stays flat however many tasks run.
Tasks shorter than the interval between snapshots are never seen running:
they appear as a count per slave and interval (``short`` spans).
"""

from __future__ import annotations

import collections
from typing import Any, Deque, Dict, Iterable, List, Optional, Tuple

#: Seconds of task stream kept for the page.
STREAM_WINDOW = 600.0


class History:
    """Spans of tasks per slave, slaves gone, events and throughput points; all bounded."""

    def __init__(self, max_spans: int = 5000, max_events: int = 500, max_points: int = 1200,
                 max_gone: int = 500):
        self.spans: Deque[Dict[str, Any]] = collections.deque(maxlen=max_spans)
        self.events: Deque[Dict[str, Any]] = collections.deque(maxlen=max_events)
        self.points: Deque[Tuple[float, int]] = collections.deque(maxlen=max_points)
        self.gone: Deque[Dict[str, Any]] = collections.deque(maxlen=max_gone)
        self._open: Dict[Tuple[int, str], Dict[str, Any]] = {}    # (process id, task id) -> span
        self._processes: Dict[int, Dict[str, Any]] = {}           # process id -> last record
        self._counters: Optional[Dict[str, int]] = None
        self._last: Optional[float] = None

    def update(self, status: Dict[str, Any], now: float, failed_ids: Iterable[str] = ()) -> None:
        """Fold in a status snapshot taken at ``now`` (Unix time); ``failed_ids``: tasks known to
        have failed (their spans are marked)."""
        failed = set(failed_ids)
        processes = {proc["id"]: proc for proc in status.get("processes", []) if proc.get("role") != "master"}
        ended = self._tasks(processes, now, failed)
        self._short_tasks(processes, ended, now)
        counters = status.get("counters", {})
        self._membership(processes, counters, now)
        self._counter_events(counters, now)
        self.points.append((now, counters.get("finished", 0) + counters.get("failed", 0)))
        self._processes = processes
        self._counters = dict(counters)
        self._last = now

    # -- tasks

    def _tasks(self, processes: Dict[int, Dict[str, Any]], now: float, failed: set) -> Dict[int, int]:
        """Open spans for tasks seen running for the first time, close those gone; returns how
        many spans each process closed."""
        running = set()
        for process_id, proc in processes.items():
            for task in proc.get("running", []):
                key = (process_id, task["task_id"])
                running.add(key)
                if key not in self._open:
                    self._open[key] = {"slave": process_id, "task_id": task["task_id"], "tag": task["tag"],
                                       "start": round(now - float(task.get("seconds", 0.0)), 3), "end": None}
        closed: Dict[int, int] = collections.Counter()
        for key in [key for key in self._open if key not in running]:
            span = self._open.pop(key)
            span["end"] = round(now, 3)
            span["failed"] = span["task_id"] in failed
            span["lost"] = key[0] not in processes
            self.spans.append(span)
            closed[key[0]] += 1
        return closed

    def _short_tasks(self, processes: Dict[int, Dict[str, Any]], closed: Dict[int, int], now: float) -> None:
        if self._last is None:
            return
        for process_id, proc in processes.items():
            before = self._processes.get(process_id)
            if before is None:
                continue
            unseen = proc.get("tasks_done", 0) - before.get("tasks_done", 0) - closed.get(process_id, 0)
            if unseen > 0:
                tags = proc.get("tags") or []
                self.spans.append({"slave": process_id, "task_id": None, "tag": tags[0] if len(tags) == 1 else None,
                                   "start": round(self._last, 3), "end": round(now, 3), "count": unseen,
                                   "failed": False, "lost": False})

    # -- slaves

    def _membership(self, processes: Dict[int, Dict[str, Any]], counters: Dict[str, int], now: float) -> None:
        if self._counters is None:
            return
        for process_id in processes.keys() - self._processes.keys():
            proc = processes[process_id]
            self._event(now, "joined", f"{proc.get('role')} {process_id} (PID {proc.get('pid')} on "
                                       f"{proc.get('host')}) joined")
        vanished = sorted(self._processes.keys() - processes.keys())
        losses = counters.get("processes_lost", 0) - self._counters.get("processes_lost", 0)
        for process_id in vanished:
            proc = self._processes[process_id]
            # The status does not say which process was lost: the counter says how many were.
            verdict = "lost" if losses >= len(vanished) or losses > 0 and len(vanished) == 1 else \
                      "lost or left" if losses > 0 else "left"
            self.gone.append(dict(proc, verdict=verdict, gone_at=round(now, 3)))
            self._event(now, verdict.replace(" ", "_"), f"{proc.get('role')} {process_id} (PID {proc.get('pid')} "
                                                       f"on {proc.get('host')}) {verdict}")

    def _counter_events(self, counters: Dict[str, int], now: float) -> None:
        if self._counters is None:
            return
        for name, text in (("rescheduled", "task(s) rescheduled"), ("failed", "task(s) failed"),
                           ("duplicates_dropped", "duplicate answer(s) dropped")):
            delta = counters.get(name, 0) - self._counters.get(name, 0)
            if delta > 0:
                self._event(now, name, f"{delta} {text}")

    def _event(self, now: float, kind: str, text: str) -> None:
        self.events.append({"time": round(now, 3), "kind": kind, "text": text})

    # -- what the page gets

    def stream(self, now: float, window: float = STREAM_WINDOW) -> List[Dict[str, Any]]:
        """Spans that ended within ``window`` seconds, then those still open (end None)."""
        since = now - window
        return [span for span in self.spans if span["end"] >= since] + list(self._open.values())

    def throughput(self) -> List[Tuple[float, int]]:
        """(time, tasks answered so far) points."""
        return list(self.points)
