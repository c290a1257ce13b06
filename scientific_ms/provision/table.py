"""The slave jobs a master holds, as ``task_manager show`` reads and prints them."""

from __future__ import annotations

import json
from typing import Dict, List, Optional

from .provisioner import JOBS_KEY

#: Seconds the job table's fetch may take.
FETCH_TIMEOUT = 30.0


def slave_jobs(connection) -> Optional[List[Dict]]:
    """The jobs the master at ``connection`` holds (id, provider, state, ages); None if it
    provisions none."""
    found, data = connection.call("get_data", JOBS_KEY, timeout=FETCH_TIMEOUT)
    if not found:
        return None
    return list(json.loads(data)["jobs"])


def format_jobs(jobs: Optional[List[Dict]]) -> str:
    """Lines appended to ``show``'s text: one per job; empty if the master provisions none."""
    if jobs is None:
        return ""
    lines = [f"\nslave jobs: {len(jobs)}"]
    for job in jobs:
        running = "" if job.get("running_seconds") is None else f", running {job['running_seconds']:.0f} s"
        lines.append(f"  {job['provider']} job {job['id']}: {job['state']} "
                     f"(submitted {job['seconds_since_submitted']:.0f} s ago{running})")
    return "\n".join(lines)
