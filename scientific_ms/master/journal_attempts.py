"""The failed attempts of retried tasks, in the journal, so that a resumed job counts them.

A task requested with ``retries`` that failed some attempts and was not
answered when its master died must not get all its retries again when the
job resumes. The journal (``journal.py``) keeps, in the table ``attempts``,
the failed attempts of each such request, keyed as answers are matched:
the request key (tag and parameters) and the occurrence of that key among
the job's retried requests (the n-th request of a key in a run is the n-th
of the run before, as for answers). Requests without retries cost nothing.

The table is added to a journal written before it existed when that journal
is opened for writing (readers ignore it), so older journals resume as before.

Threads: :meth:`JournaledAttempts.count` runs in the master thread (under the
journal's mutex); :meth:`take`, :meth:`answered` and :meth:`rows` in the
journal's writer thread, which gets :class:`Retried` and :class:`Failures`
items through its queue, in any order.
"""

from __future__ import annotations

import collections
import sqlite3
from typing import Counter, Dict, List, NamedTuple, Tuple, Union

TABLE = ("CREATE TABLE IF NOT EXISTS attempts (key BLOB NOT NULL, occurrence INTEGER NOT NULL, "
         "count INTEGER NOT NULL, PRIMARY KEY (key, occurrence))")


class Retried(NamedTuple):
    """A retried request the task manager took as ``task_id`` (queued by the master thread)."""
    task_id: str
    key: bytes
    occurrence: int


class Failures(NamedTuple):
    """Failed attempts sent back to be retried: (task_id, failed attempts so far) pairs."""
    items: List[Tuple[str, int]]


class JournaledAttempts:
    """Failed attempts per retried request: read on opening, written by the writer thread."""

    def __init__(self, db: sqlite3.Connection):
        db.execute(TABLE)   # a journal written before retries existed gets the table now
        self._made: Dict[Tuple[bytes, int], int] = {
            (bytes(key), occurrence): count
            for key, occurrence, count in db.execute("SELECT key, occurrence, count FROM attempts")}
        self._seen: Counter[bytes] = collections.Counter()   # retried requests of this run, per key
        #: the writer's: task id -> (key, occurrence) of the retried requests not answered yet
        self.tracked: Dict[str, Tuple[bytes, int]] = {}
        self._early: Dict[str, int] = {}      # failures that overtook their request in the queue
        self._rows: Dict[Tuple[bytes, int], int] = {}   # to write with the next group

    def count(self, key: bytes) -> Tuple[int, int]:
        """(occurrence, attempts made by earlier runs) of a new retried request of ``key``."""
        self._seen[key] += 1
        occurrence = self._seen[key]
        return occurrence, self._made.get((key, occurrence), 0)

    def take(self, item: Union[Retried, Failures]) -> None:
        """A queue item of this module (writer thread)."""
        if type(item) is Retried:
            self.tracked[item.task_id] = (item.key, item.occurrence)
            early = self._early.pop(item.task_id, None)
            if early is not None:
                self._rows[(item.key, item.occurrence)] = early
            return
        assert type(item) is Failures
        for task_id, attempts in item.items:
            where = self.tracked.get(task_id)
            if where is None:
                self._early[task_id] = max(attempts, self._early.get(task_id, 0))
            else:
                self._rows[where] = max(attempts, self._rows.get(where, 0))

    def answered(self, task_id: str) -> None:
        """Its answer is journaled: its attempts no longer matter (writer thread)."""
        self.tracked.pop(task_id, None)
        self._early.pop(task_id, None)

    def rows(self) -> List[Tuple[bytes, int, int]]:
        """(key, occurrence, count) rows to write now (INSERT OR REPLACE), and forgets them."""
        rows = [(key, occurrence, count) for (key, occurrence), count in self._rows.items()]
        self._rows.clear()
        return rows
