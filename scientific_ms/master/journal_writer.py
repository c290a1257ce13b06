"""The journal's writer thread: joins each answer with its request and commits them in groups.

The journal (``journal.py``) and the task manager's threads only put items
in :attr:`JournalWriter.queue`; nobody waits for the disk. After its first
item the writer lets a group gather for ``GROUP_SECONDS`` (10 ms), joins
each answer with its request, writes the group in one transaction and
commits (group commit), and again. A write that fails (a full disk) is
logged once, naming the file and the fix; the job goes on unjournaled.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import sqlite3
import threading
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from ..wire.payload import dumps_value
from .journal_attempts import JournaledAttempts
from .journal_file import sql_error, transaction

log = logging.getLogger(__name__)

#: A group gathers for this long after its first item, then is committed: few, large
#: commits, and a request answered within the window is written once, answer and all.
GROUP_SECONDS = 0.01
#: Most items written in one transaction.
_GROUP_LIMIT = 20_000
#: A group's tasks are cut into blobs of about this many bytes of parameters and answers,
#: and of at most this many tasks: pickling holds the GIL, so each pickle must be short
#: (20,000 tasks in one took ~6 ms, during which no slave's call was served).
_BLOB_BYTES = 16 * 1024 * 1024
_BLOB_TASKS = 200


def _blobs(rows: List[tuple]) -> Iterator[Tuple[bytes, int]]:
    """Pickle a group's tasks in pieces (``_BLOB_BYTES``, ``_BLOB_TASKS``): (blob, number of tasks)."""
    start = size = 0
    for index, row in enumerate(rows):
        size += len(row[4]) + len(row[6])
        if size >= _BLOB_BYTES or index + 1 - start >= _BLOB_TASKS:
            yield dumps_value(rows[start:index + 1]), index + 1 - start
            start, size = index + 1, 0
    if start < len(rows):
        yield dumps_value(rows[start:]), len(rows) - start


class JournalWriter:
    """The thread that writes a journal open for writing (``db``, the journal's run ``run``).

    :attr:`queue` holds, in the order they happened: a request (a 5-tuple
    ``(number, task_id, tag, key, parameters)``), a list of answers, a tag
    (a request answered from the journal), None (the end), and for retried
    tasks journal_attempts' Retried and Failures. An answer may come before
    its request (the master thread queues a request just after the manager
    has it): it waits in ``_early``.
    """

    def __init__(self, db: sqlite3.Connection, path: Path, run: Optional[int], attempts: JournaledAttempts):
        self._db = db
        self._path = path
        self._run = run
        self._attempts = attempts
        # The writer's own: requests waiting for their answers, answers that overtook
        # their request in the queue, and the requests of this run per tag.
        self._pending: Dict[str, tuple] = {}   # task id -> (number, task_id, tag, key, parameters)
        self._early: Dict[str, tuple] = {}     # task id -> (ok, answer, traceback)
        self._requested: Dict[str, int] = collections.Counter()
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self._failed: Optional[str] = None
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._write_loop, name="scientific_ms-journal", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Write what is queued (at once: the group gathering is cut short), then end the thread."""
        self._closing.set()
        self.queue.put(None)
        self._thread.join()

    def _write_loop(self) -> None:
        while True:
            items = [self.queue.get()]
            self._closing.wait(GROUP_SECONDS)   # let the group gather; close() cuts it short
            with contextlib.suppress(queue.Empty):
                while len(items) < _GROUP_LIMIT:
                    items.append(self.queue.get_nowait())
            if self._failed is None:
                self._write(*self._join(items))
            if None in items:
                return

    def _join(self, items: list) -> Tuple[List[tuple], bool]:
        """The answered tasks among ``items``: (number, task_id, tag, key, parameters, ok, answer, traceback)."""
        pending, early, requested = self._pending, self._early, self._requested
        rows = []
        counted = False
        for item in items:
            if type(item) is tuple:
                answer = early.pop(item[1], None)
                if answer is None:
                    pending[item[1]] = item
                else:
                    rows.append(item + answer)
                requested[item[2]] += 1
                counted = True
            elif type(item) is list:
                tracked = self._attempts.tracked
                for task_id, ok, payload, traceback in item:
                    if tracked:
                        self._attempts.answered(task_id)
                    request = pending.pop(task_id, None)
                    if request is None:
                        early[task_id] = (ok, payload, traceback)
                    else:
                        rows.append(request + (ok, payload, traceback))
            elif type(item) is str:
                requested[item] += 1
                counted = True
            elif item is not None:
                self._attempts.take(item)
        return rows, counted

    def _write(self, rows: List[tuple], counted: bool) -> None:
        counts = [(self._run, tag, n) for tag, n in self._requested.items()] if counted else []
        try:
            with transaction(self._db):
                for blob, count in _blobs(rows):
                    self._db.execute("INSERT INTO groups (run, count, rows) VALUES (?, ?, ?)",
                                     (self._run, count, blob))
                if counts:
                    self._db.executemany("INSERT OR REPLACE INTO requested VALUES (?, ?, ?)", counts)
                attempts = self._attempts.rows()
                if attempts:
                    self._db.executemany("INSERT OR REPLACE INTO attempts VALUES (?, ?, ?)", attempts)
        except sqlite3.Error as error:
            self._failed = str(sql_error(self._path, error, "writing"))
            log.error("%s; from now on this job is not journaled (its results still reach the "
                      "master, but a restarted master would run the unjournaled tasks again)",
                      self._failed)
