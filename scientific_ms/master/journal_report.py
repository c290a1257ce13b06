"""Reading a journal without its master: ``read_journal`` and ``task_manager show JOURNAL``.

Both open the file read-only, so they work while the job's master runs and
after it died; neither ever changes the journal.
"""

from __future__ import annotations

import collections
import fcntl
import os
import sqlite3
from pathlib import Path
from typing import Any, Dict, Iterator, NamedTuple, Optional, Tuple

from ..wire.payload import loads_answer, loads_journaled_parameters
from .journal_file import JournalError, check_file, connect, journaled_tasks, read_meta, sql_error


class JournalRecord(NamedTuple):
    """One answered task, as :func:`read_journal` yields it."""
    task_id: str
    tag: str
    parameters: tuple      # GlobalStateValue placeholders stay placeholders
    ok: bool               # True: ``result`` is the result; False: the exception raised
    result: Any
    traceback: str         # text of the remote traceback when not ok, else ""


def _open_readonly(path: os.PathLike) -> Tuple[Path, sqlite3.Connection, Dict[str, str]]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise JournalError(f"no journal at {path}: give the file the master's journal= option named")
    if not check_file(path):
        raise JournalError(f"{path} is empty: not a journal")
    try:
        db = connect(path, readonly=True)
        meta = read_meta(db, path)
    except sqlite3.Error as error:
        raise sql_error(path, error, "reading") from None
    if meta is None:
        raise JournalError(f"{path} is an empty SQLite database, not a journal")
    return path, db, meta


def read_journal(path: os.PathLike) -> Iterator[JournalRecord]:
    """Yield every answered task of a journal, in the order answered, without a master.

    Opens the file read-only (the job's master may be running or dead).
    Each :class:`JournalRecord` has ``task_id``, ``tag``, ``parameters``
    (a tuple; GlobalStateValue placeholders are not resolved), ``ok``
    (True: ``result`` is the result; False: it is the exception the
    handler raised, with ``traceback`` its text) and ``result``. Tasks
    requested and not answered are not in the journal (a resumed master
    runs them). A result whose class is not importable here raises
    SerializationError when its record is reached.
    """
    path, db, _ = _open_readonly(path)
    try:
        for _, _, (_, task_id, tag, _, parameters, ok, answer, traceback) in journaled_tasks(db):
            params = loads_journaled_parameters(parameters)
            yield JournalRecord(task_id, tag, params, bool(ok), loads_answer(answer, task_id), traceback)
    except sqlite3.Error as error:
        raise sql_error(path, error, "reading") from None
    finally:
        db.close()


def journal_progress(path: os.PathLike) -> dict:
    """What ``task_manager show JOURNAL`` reports: the job's progress per tag, and its runs.

    "requested" is the most any run of the job requested (a resumed run
    requests everything again); "finished" and "failed" count the answers
    journaled.
    """
    path, db, meta = _open_readonly(path)
    try:
        requested = dict(db.execute("SELECT tag, max(count) FROM requested GROUP BY tag"))
        finished_by_tag: collections.Counter[str] = collections.Counter()
        failed_by_tag: collections.Counter[str] = collections.Counter()
        for _, _, task in journaled_tasks(db):
            (finished_by_tag if task[5] else failed_by_tag)[task[2]] += 1
        per_tag = {}
        for tag in sorted(set(requested) | set(finished_by_tag) | set(failed_by_tag)):
            finished, failed = finished_by_tag[tag], failed_by_tag[tag]
            wanted = max(requested.get(tag, 0), finished + failed)
            per_tag[tag] = {"requested": wanted, "finished": finished, "failed": failed,
                            "not_answered": wanted - finished - failed}
        runs = [{"run": run, "pid": pid, "host": host, "started": started, "ended": ended}
                for run, pid, host, started, ended in
                db.execute("SELECT run, pid, host, started, ended FROM runs ORDER BY run")]
    except sqlite3.Error as error:
        raise sql_error(path, error, "reading") from None
    finally:
        db.close()
    totals = {name: sum(tag[name] for tag in per_tag.values())
              for name in ("requested", "finished", "failed", "not_answered")}
    return {"journal": str(path), "label": meta.get("label"), "master_running": _locked(path),
            "tasks": totals, "tags": per_tag, "runs": runs}


def _locked(path: Path) -> bool:
    """Whether a live master holds the journal now."""
    lock_path = path.with_name(path.name + "-lock")
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def format_journal_progress(report: Dict, verbose: bool = False) -> str:
    """The human form of :func:`journal_progress`."""
    tasks = report["tasks"]
    if report["master_running"]:
        state = "running"
    elif tasks["not_answered"]:
        state = "not running (run the same command again to resume the job)"
    else:
        state = "not running; every task journaled is answered"
    lines = [f"journal {report['journal']} of {report['label']!r}: master {state}",
             f"{tasks['requested']} tasks requested, {tasks['finished']} finished, "
             f"{tasks['failed']} failed, {tasks['not_answered']} not yet answered"]
    for tag, counts in report["tags"].items():
        lines.append(f"  {tag}: {counts['requested']} requested, {counts['finished']} finished, "
                     f"{counts['failed']} failed, {counts['not_answered']} not yet answered")
    runs = report["runs"]
    lines.append(f"{len(runs)} master run(s)")
    if verbose:
        for run in runs:
            if run["ended"]:
                end = f"ended {iso_text(run['ended'])}"
            elif report["master_running"] and run is runs[-1]:
                end = "running"
            else:
                end = "killed (it never ended)"
            lines.append(f"  run {run['run']}: PID {run['pid']} on {run['host']}, "
                         f"started {iso_text(run['started'])}, {end}")
    return "\n".join(lines)


def iso_text(timestamp: Optional[float]) -> str:
    if timestamp is None:   # the runs table allows NULL (a journal damaged or written by another tool)
        return "at an unknown time"
    import datetime
    return datetime.datetime.fromtimestamp(timestamp).isoformat(sep=" ", timespec="seconds")
