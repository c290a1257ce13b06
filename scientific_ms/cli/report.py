"""The status report of a task manager: one dict built from its status, and its text form.

``task_manager show`` prints it as text or JSON, ``watch`` redraws it,
``list`` summarises it; docs/guide/task_manager.md documents the keys.
"""

from __future__ import annotations

import datetime
import math
from typing import Dict, List, Optional, Tuple

from ..machine import slurm_job_name
from ..progress import format_bar, format_bytes, format_duration

#: Version of the JSON documents printed by ``show --json`` and ``list --json``.
#: Keys are only ever added under one version; renaming or removing one bumps it.
JSON_SCHEMA = 1


def _iso(timestamp: Optional[float]) -> Optional[str]:
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


def iso_text(text: Optional[str]) -> Optional[str]:
    """A label file's ``started`` (``2024-06-01T12:00:03+0200``) in the form of ``_iso``."""
    if text is None:
        return None
    try:
        return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z").isoformat(timespec="seconds")
    except (TypeError, ValueError):
        return text


def _merge(*counts: Dict[str, int]) -> Dict[str, int]:
    merged: Dict[str, int] = {}
    for per_tag in counts:
        for tag, n in per_tag.items():
            merged[tag] = merged.get(tag, 0) + n
    return dict(sorted(merged.items()))


def build_report(label: str, address: str, status: Dict) -> Dict:
    """The facts ``show`` prints, as the stable JSON document (see docs/guide/task_manager.md)."""
    counters = status.get("counters", {})
    tasks = status["tasks"]
    by_tag = {
        "waiting": dict(sorted(tasks.get("waiting", {}).items())),
        "running": dict(sorted(tasks.get("running", {}).items())),
        "results_waiting": _merge(tasks.get("finished", {}), tasks.get("failed", {})),
        # every answer since the start, retrieved or not
        "finished": dict(sorted(status.get("answered", {}).get("finished", {}).items())),
        "failed": dict(sorted(status.get("answered", {}).get("failed", {}).items())),
    }
    requested = counters.get("requested", 0)
    retrieved = counters.get("delivered", 0)
    processes = []
    for proc in status["processes"]:
        is_master = proc.get("role") == "master"
        processes.append({
            "id": proc.get("id"),
            "role": proc.get("role"),
            "host": proc.get("host"),
            "pid": proc.get("pid"),
            "agent": proc.get("agent"),
            "slurm_job": slurm_job_name(proc.get("slurm")),
            "slurm": proc.get("slurm"),
            "tags": proc.get("tags"),
            "tasks_done": proc.get("tasks_done", 0),
            "running": [dict(task) for task in proc.get("running", [])],
            "connected_seconds": proc.get("connected_seconds"),
            # The master sends no heartbeats to itself.
            "seconds_since_heartbeat": None if is_master else proc.get("seconds_since_heartbeat"),
            "watchdog_period": proc.get("watchdog_period"),
            "cpu_percent": proc.get("cpu_percent"),
            "rss_bytes": proc.get("rss_bytes"),
        })
    report = {
        "schema": JSON_SCHEMA,
        "label": label,
        "address": address,
        "terminated": bool(status.get("terminated")),
        "started_at": _iso(status.get("started_at")),
        "elapsed_seconds": status.get("elapsed_seconds"),
        "active_processes": len(processes),
        "slaves": sum(1 for proc in processes if proc["role"] == "slave"),
        "agents": sum(1 for proc in processes if proc["role"] == "agent"),
        "tasks": {
            "requested": requested,
            "waiting": sum(by_tag["waiting"].values()),
            "running": sum(by_tag["running"].values()),
            "results_waiting": sum(by_tag["results_waiting"].values()),
            "finished": counters.get("finished", 0),
            "failed": counters.get("failed", 0),
            "retrieved": retrieved,
            "rescheduled": counters.get("rescheduled", 0),
            "duplicates_dropped": counters.get("duplicates_dropped", 0),
        },
        "tasks_by_tag": by_tag,
        "processes_lost": counters.get("processes_lost", 0),
        "slaves_left": {"idle": counters.get("left_idle", 0), "sigterm": counters.get("left_sigterm", 0)},
        "throughput_per_second": status.get("throughput_per_second", 0.0),
        "progress": round(retrieved / requested, 4) if requested else None,
        "unserved_tags": list(status.get("unserved_tags", [])),
        "processes": processes,
        # the last lines each slave printed or logged (core/output.py), by slave id
        "slave_output": [{"id": entry.get("id"), "slave": entry.get("slave"), "lines": list(entry.get("lines", [])),
                          "dropped": entry.get("dropped", 0)} for entry in status.get("slave_output", [])],
    }
    if status.get("unmet_needs"):   # waiting tasks whose resources no connected host offers (core/resources.py)
        report["unmet_needs"] = [dict(entry) for entry in status["unmet_needs"]]
    return report


def _seconds(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}s" if value < 60 else format_duration(value)


def _plural(n: int, singular: str, plural: Optional[str] = None) -> str:
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"


def format_table(header: List[str], rows: List[List[str]], right: Tuple[int, ...] = ()) -> List[str]:
    """Columns padded to their widest cell; columns in ``right`` are right-aligned."""
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]
    lines = []
    for row in [header] + rows:
        cells = [str(cell).rjust(width) if i in right else str(cell).ljust(width)
                 for i, (cell, width) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return lines


def format_processes(report: Dict) -> List[str]:
    """One line per process: id, role, host, PID, tasks done, current task, heartbeat, CPU, memory, tags."""
    rows = []
    for proc in report["processes"]:
        running = proc["running"]
        if running:
            current = running[0]["task_id"] + (f" (+{len(running) - 1})" if len(running) > 1 else "")
            task_time = _seconds(running[0].get("seconds"))
        else:
            current, task_time = "-", "-"
        cpu = proc["cpu_percent"]
        role = proc["role"] or "?"
        if proc.get("agent") is not None:
            role += f"@{proc['agent']}"   # a worker of the keeper <id> (task_manager slave -n N)
        rows.append([str(proc["id"]), role, proc["host"] or "?", str(proc["pid"] or "?"),
                     proc.get("slurm_job") or "-",
                     str(proc["tasks_done"]) if proc["role"] == "slave" else "-",
                     current, task_time, _seconds(proc["seconds_since_heartbeat"]),
                     "-" if cpu is None else f"{cpu:.1f}", format_bytes(proc["rss_bytes"]),
                     "-" if proc["tags"] is None else ",".join(proc["tags"]) or "-"])
    header = ["ID", "ROLE", "HOST", "PID", "SLURM JOB", "DONE", "CURRENT TASK", "FOR", "HEARTBEAT",
              "CORE%", "RSS", "TAGS"]
    return format_table(header, rows, right=(0, 3, 5, 7, 8, 9, 10))


def format_status(report: Dict, verbose: bool = False) -> str:
    """The human form of a report: the original's four lines, then the job's history."""
    tasks, by_tag = report["tasks"], report["tasks_by_tag"]
    state = "finished after" if report["terminated"] else "running for"
    started = (report["started_at"] or "?").replace("T", " ")[:19]
    lines = [f"task manager {report['label']!r} at {report['address']}: {state} "
             f"{format_duration(report['elapsed_seconds'])} (started {started})"]

    def section(text: str, per_tag: Dict[str, int]) -> None:
        lines.append(text)
        if verbose:
            lines.extend(f"  {tag}: {n}" for tag, n in per_tag.items())

    lines.append(_plural(report["active_processes"], "active process", "active processes"))
    section(f"{tasks['waiting']} waiting tasks", by_tag["waiting"])
    section(f"{tasks['running']} running tasks", by_tag["running"])
    section(f"{tasks['results_waiting']} results waiting to be retrieved", by_tag["results_waiting"])
    lines.append(f"{tasks['requested']} tasks requested, {tasks['finished']} finished, "
                 f"{tasks['failed']} failed, {tasks['retrieved']} results retrieved")
    lines.append(f"{_plural(tasks['rescheduled'], 'task')} rescheduled, "
                 f"{_plural(report['processes_lost'], 'slave')} lost")
    left = report.get("slaves_left") or {}
    if left.get("idle") or left.get("sigterm"):
        lines.append(f"{_plural(left.get('idle', 0), 'slave')} left when idle, "
                     f"{left.get('sigterm', 0)} on SIGTERM")
    lines.append(f"throughput: {report['throughput_per_second']:.2f} tasks/s over the last minute")
    for tag in report["unserved_tags"]:
        lines.append(f"note: no connected slave handles tag {tag!r}; its tasks wait for one")
    for entry in report.get("unmet_needs", ()):
        lines.append(f"note: tasks of tag {entry['tag']!r} need {entry['need']}, more than any connected "
                     f"host offers (the largest: {entry['largest_offer']}); they wait for one")
    if verbose:
        lines.append("processes:")
        lines.extend("  " + line for line in format_processes(report))
        lines.extend(format_slave_output(report))
    return "\n".join(lines)


def format_slave_output(report: Dict) -> List[str]:
    """The last lines each slave printed, under a heading (nothing when none printed)."""
    entries = report.get("slave_output") or []
    if not entries:
        return []
    lines = ["last output of the slaves:"]
    for entry in entries:
        name = entry["slave"]
        lines.extend(f"  [{name}] {line}" for line in entry["lines"])
        if entry["dropped"]:
            lines.append(f"  [{name}] ({entry['dropped']} lines dropped in all)")
    return lines


def progress_line(report: Dict, width: int = 30) -> str:
    """``progress [#####-----] 12/40  30%  2.50 tasks/s  ETA 0:11``: results retrieved of requested."""
    tasks = report["tasks"]
    line = f"progress {format_bar(tasks['retrieved'], tasks['requested'], width)}"
    rate = report["throughput_per_second"]
    if rate > 0:
        line += f"  {rate:.2f} tasks/s"
        remaining = estimated_seconds_left(report)
        if remaining is not None:
            line += f"  ETA {format_duration(math.ceil(remaining))}"
    return line


def estimated_seconds_left(report: Dict) -> Optional[float]:
    """Time until the tasks waiting and running are done, or None if unknown or nothing is left.

    Not just outstanding / throughput, which reads 0:00 while the last few
    long tasks still run: the slaves work through the outstanding tasks in
    waves, each taking the mean task time (slaves / throughput), less what
    the running tasks have already done.
    """
    tasks, rate = report["tasks"], report["throughput_per_second"]
    outstanding = tasks["waiting"] + tasks["running"]
    if not outstanding or rate <= 0 or report["terminated"]:
        return None
    slaves = max(1, report["slaves"])
    per_task = slaves / rate
    ages = [task.get("seconds") or 0.0 for proc in report["processes"] for task in proc["running"][:1]]
    done_already = sum(ages) / len(ages) if ages else 0.0
    return max(0.0, math.ceil(outstanding / slaves) * per_task - min(done_already, per_task))
