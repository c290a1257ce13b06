"""The manager's status snapshot: plain data for ``task_manager show`` and ``--json``.

Built under the manager's lock from its parts; ``report.py`` turns it into text.
"""

from __future__ import annotations

import time
from typing import Dict

from .registry import Registry
from .tasks import ANY_TAG

#: Counters that the status always reports (0 until they first move).
STATUS_COUNTERS = ("requested", "finished", "failed", "delivered", "rescheduled",
                   "duplicates_dropped", "processes_lost", "stolen", "left_idle", "left_sigterm",
                   "relayed_exchanges", "relayed_bytes")


def snapshot(now: float, elapsed: float, terminated: bool, registry: Registry,
             tasks: Dict[str, Dict[str, int]], counters: Dict[str, int],
             throughput: float, answered: Dict[str, Dict[str, int]]) -> dict:
    """Everything ``show`` reports; ``tasks`` is the count per state and tag of the tasks
    held now, ``answered`` the answers per outcome and tag since the start."""
    processes = []
    served: set = set()
    for proc in registry:
        if proc.tags is not None:   # a slave (proc.is_slave)
            served |= proc.tags
        running = [{"task_id": t.task_id, "tag": t.tag, "seconds": round(now - t.started, 3)}
                   for t in proc.running.values()]
        processes.append({
            "id": proc.process_id, "role": proc.role,
            "host": proc.info.get("host"), "pid": proc.info.get("pid"),
            "agent": proc.info.get("agent"),   # a worker of task_manager slave -n N: its keeper's id
            "keeper": proc.info.get("keeper"),   # the PID of the keeper that beats its heart
            "slurm": proc.info.get("slurm"),
            "tags": sorted(proc.tags) if proc.tags is not None else None,
            "tasks_done": proc.tasks_done, "running": running,
            "watchdog_period": proc.watchdog_period,
            "seconds_since_heartbeat": round(now - proc.last_seen, 3),
            "connected_seconds": round(now - proc.registered, 3),
            "cpu_percent": proc.stats.get("cpu_percent"),
            "rss_bytes": proc.stats.get("rss_bytes"),
            # what its host offers tasks that need resources (a keeper of -n N, or a lone slave),
            # when it declared GPUs or cores or lends some now (a plain job pays one test per slave)
            "resources": proc.pool.offer() if proc.pool is not None and proc.info.get("agent") is None
            and proc.pool.in_use() else None,
        })
    return {
        "terminated": terminated,
        "elapsed_seconds": round(elapsed, 3),
        "started_at": round(time.time() - elapsed, 3),  # Unix time; the clock may be a fake
        "processes": processes,
        "tasks": tasks,
        "answered": answered,
        "unserved_tags": [] if ANY_TAG in served else
                         sorted(tag for tag in tasks.get("waiting", {}) if tag not in served),
        "counters": dict(dict.fromkeys(STATUS_COUNTERS, 0), **counters),
        "throughput_per_second": round(throughput, 3),
    }
