"""What the dashboard shows of a journal: the job's progress per tag, its failures with their
tracebacks and the runs of its master, whether the master runs, ended or died.

The journal is opened read-only and read again only when it changed (and at
most once per :data:`MIN_INTERVAL`), so a page left open costs the job nothing.
"""

from __future__ import annotations

import collections
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..master.journal_file import connect, sql_error
from ..master.journal_report import journal_progress
from ..wire.payload import loads_answer, loads_journaled_parameters, loads_value

#: Seconds between two looks at the journal's files.
MIN_INTERVAL = 1.0
#: Failures shown (the last ones).
MAX_FAILURES = 200


class JournalSource:
    """A journal's state for the page; ``show_values`` adds the parameters and the exception
    of each failed task."""

    kind = "journal"

    def __init__(self, path: os.PathLike, show_values: bool = False):
        self.path = Path(path).expanduser()
        self.show_values = show_values
        self._lock = threading.Lock()
        self._document: Optional[Dict[str, Any]] = None
        self._signature: Optional[Tuple] = None
        self._looked = 0.0
        self.label = journal_progress(self.path)["label"]   # fails at once with a clear error

    def state(self) -> Dict[str, Any]:
        """The page's data (a JSON-ready dict)."""
        with self._lock:
            if self._document is None or time.monotonic() - self._looked >= MIN_INTERVAL:
                self._looked = time.monotonic()
                signature = self._files()
                if signature != self._signature or self._document is None:
                    self._document = self._read()
                    self._signature = signature
            # the master may have died since the files last changed
            document = dict(self._document, now=round(time.time(), 3))
            return document

    def _files(self) -> Tuple:
        """Size and modification time of the journal and its write-ahead log."""
        signature: List[Optional[Tuple[int, int]]] = []
        for path in (self.path, self.path.with_name(self.path.name + "-wal"),
                     self.path.with_name(self.path.name + "-lock")):
            try:
                stat = path.stat()
                signature.append((stat.st_size, stat.st_mtime_ns))
            except OSError:
                signature.append(None)
        return tuple(signature)

    def _read(self) -> Dict[str, Any]:
        progress = journal_progress(self.path)
        db = connect(self.path, readonly=True)
        try:
            answered, failures = self._groups(db)
            requested: Dict[int, Dict[str, int]] = collections.defaultdict(dict)
            for run, tag, count in db.execute("SELECT run, tag, count FROM requested"):
                requested[run][tag] = count
        except sqlite3.Error as error:
            raise sql_error(self.path, error, "reading") from None
        finally:
            db.close()
        runs, before = [], 0
        for index, run in enumerate(progress["runs"]):
            last = index == len(progress["runs"]) - 1
            state = ("ended" if run["ended"] else
                     "running" if last and progress["master_running"] else "killed (it never ended)")
            runs.append(dict(run, state=state, resumed=before, answered=answered.get(run["run"], 0),
                             requested=requested.get(run["run"], {})))
            before += answered.get(run["run"], 0)
        return {"kind": self.kind, "label": progress["label"], "journal": progress["journal"],
                "master_running": progress["master_running"], "show_values": self.show_values,
                "tasks": progress["tasks"], "tags": progress["tags"], "runs": runs, "failures": failures}

    def _groups(self, db: sqlite3.Connection) -> Tuple[Dict[int, int], List[Dict[str, Any]]]:
        """Answers journaled per run, and the last failures (values only if asked for)."""
        answered: Dict[int, int] = collections.Counter()
        failures: collections.deque = collections.deque(maxlen=MAX_FAILURES)
        for run, count, blob in db.execute("SELECT run, count, rows FROM groups ORDER BY seq"):
            answered[run] += count
            for _, task_id, tag, _, parameters, ok, answer, traceback in loads_value(blob):
                if not ok:
                    failures.append({"task_id": task_id, "tag": tag, "run": run, "traceback": traceback,
                                     **(_values(task_id, parameters, answer) if self.show_values else {})})
        return dict(answered), list(failures)


def _values(task_id: str, parameters: bytes, answer: bytes) -> Dict[str, str]:
    """The parameters and the exception of a failed task, as text (``--show-values`` only)."""
    def text(load) -> str:
        try:
            return repr(load())[:2000]
        except Exception as error:   # a class not importable here, say
            return f"<cannot be read here: {error}>"
    return {"parameters": text(lambda: loads_journaled_parameters(parameters)),
            "exception": text(lambda: loads_answer(answer, task_id))}
