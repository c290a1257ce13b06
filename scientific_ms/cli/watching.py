"""``task_manager show`` and ``watch``: the state of one task manager, once or refreshed in place.

Imported only when one of them runs (``commands.py``): a slave, which runs
the same command line, never pays for the report's modules.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Dict, Optional, Tuple

from ..dashboard.published import dashboard_url
from ..errors import ConnectionLostError
from ..master.launch import master_state
from ..progress import LiveView, format_duration
from ..provision.table import format_jobs, slave_jobs
from ..wire import discovery
from ..wire.client import MasterConnection, connect
from .report import build_report, format_status, progress_line

log = logging.getLogger(__name__)

#: How long one status call may take before the command gives up.
STATUS_TIMEOUT = 30.0

#: After the master stops answering, ``watch`` waits this long for it to withdraw its label file or die.
WATCH_ENDING_SECONDS = 5.0

#: ``watch`` asks for the status at least this often (seconds), whatever its interval.
WATCH_POLL_SECONDS = 0.5


# ------------------------------------------------------------------ show

def show(args) -> int:
    """Print the state of one task manager (add -v for tags and processes, --json for scripts)."""
    if os.path.isfile(args.label):
        return show_journal(args)
    connection = connect_for(args)
    try:
        status = connection.status(STATUS_TIMEOUT)
        jobs = slave_jobs(connection)
    finally:
        connection.close()
    report = build_report(args.label, connection.address, status)
    if jobs is not None:
        report["slave_jobs"] = jobs
    url = dashboard_url(args.label)   # only a master that serves a dashboard leaves one
    if url is not None:
        report["dashboard"] = url
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_status(report, args.verbose) + format_jobs(jobs) + (f"\ndashboard: {url}" if url else ""))
    return 0


def show_journal(args) -> int:
    """``show`` given a journal file: the job's progress read from it, master alive or not."""
    from ..master.journal_report import format_journal_progress, journal_progress
    report = journal_progress(args.label)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_journal_progress(report, args.verbose))
    return 0


# ------------------------------------------------------------------ watch

def watch(args) -> int:
    """Show the state of one task manager, refreshed in place until the job ends."""
    connection = connect_for(args)
    view = LiveView(sys.stdout)
    # Poll more often than the view is redrawn, so that the last view and the
    # final line are at most this old when the master goes away.
    poll = min(args.interval, WATCH_POLL_SECONDS)
    report: Optional[Dict] = None
    drawn: Optional[Dict] = None
    next_draw = 0.0
    ended = None
    wait = 0.0   # the first status at once; then each call returns early when the job ends

    def draw(report: Dict) -> None:
        header, *rest = format_status(report, args.verbose).splitlines()
        lines = [header, progress_line(report)] + rest
        if view.terminal:
            lines.append(f"(refreshed every {args.interval:g} s at {time.strftime('%H:%M:%S')}; Ctrl-C to stop)")
        view.show(lines)

    try:
        while True:
            try:
                status = connection.status(STATUS_TIMEOUT, wait=wait)
            except ConnectionLostError as error:
                log.info("%s", error)
                break
            wait = poll
            report = build_report(args.label, connection.address, status)
            if time.monotonic() >= next_draw or report["terminated"]:
                draw(report)
                drawn, next_draw = report, time.monotonic() + args.interval
            if report["terminated"]:
                break
        if report is not None and report is not drawn:
            draw(report)
        code, ended = _watch_ending(args, connection, report)
    finally:
        connection.close()
        view.close(ended)
    return code


def _watch_ending(args, connection: MasterConnection, report: Optional[Dict]) -> Tuple[int, str]:
    """Exit code and final line once the master stopped answering (or said it terminated)."""
    where = f"task manager {args.label!r} at {connection.address}"
    if report is not None:
        tasks = report["tasks"]
        summary = (f"{tasks['retrieved']} of {tasks['requested']} results retrieved, "
                   f"{tasks['failed']} failed, {format_duration(report['elapsed_seconds'])} elapsed")
    else:
        summary = "no status was received"
    if report is not None and report["terminated"]:
        return 0, f"{where} has finished; last status: {summary}"
    # A master that finishes closes its port, then removes its label file; one
    # that dies leaves the file behind. Give it a moment to do either.
    deadline = time.monotonic() + WATCH_ENDING_SECONDS
    while True:
        record = discovery.read_label_file(args.label)
        if record is None or record.get("port") != connection.port:
            return 0, f"{where} has finished; last status: {summary}"
        state, reason = master_state(record)
        if state == "dead":
            return 1, f"{where} died ({reason}; it left its label file); last status: {summary}"
        if time.monotonic() >= deadline:
            return 1, (f"{where} stopped answering (PID {record.get('pid')} on {record.get('hostname')} "
                       f"still holds its label file); last status: {summary}")
        time.sleep(0.1)  # waiting for the master's process to finish its shutdown or vanish


def connect_for(args) -> MasterConnection:
    """The connection the common options (-m, -k, -w) describe."""
    return connect(args.label, args.master, key_file=args.key_file, wait=args.wait)
