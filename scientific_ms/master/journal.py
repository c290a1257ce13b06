"""The master's journal: every accepted answer in an SQLite file, so a killed master resumes.

::

    master thread                     server threads (slaves' answers)
    -------------                     --------------------------------
    JournaledTasks.add_task           TaskManager.store_answers -> Journal.answers
      -> Journal.replay / .record                                    |
                         |                                           |
                         +-------------> queue <---------------------+
                                           |
                                     writer thread (journal_writer.py): after its
                                     first item, lets a group gather for
                                     GROUP_SECONDS (10 ms), joins each answer
                                     with its request, writes the group in one
                                     transaction, commits (group commit), and again

Nobody waits for the disk: an answered task is put in the queue and the
caller goes on. A crash loses at most the group gathering or being
written, whose tasks simply run again.

Only answered tasks are written, each with its request: a request nobody
answered would run again on resume anyway. A group's tasks are written as
one pickled list (a row of ``groups``), not a row each: SQLite spends about
3 us on each row it inserts, a pickle 0.3 us on each task, and with tiny
tasks (the W1 benchmark) that is the difference between a journal that
costs a third of the throughput and one that does not. How many tasks each
run requested, per tag, is written with every group, for ``task_manager
show``.

On disk (sqlite3, WAL mode, ``synchronous=FULL``: a commit survives a power
cut): ``meta`` (format, version, label, secret), ``runs`` (one row per
master that opened it), ``requested`` (run, tag, count) and ``groups``
(seq, run, count, rows: a pickled list of tasks, each ``(number, task_id,
tag, key, parameters, ok, answer, traceback)``, where ``number`` orders the
requests, ``key`` is the request key, ``parameters`` and ``answer`` are
pickles and ``ok`` says whether the answer is a result or an exception).

Matching on resume: the key of a request is a hash of its tag and its
pickled parameters, where a :class:`GlobalStateValue` counts as the hash of
the value it stands for (``journal_keys.py``). The n-th request of a key matches the n-th
journaled row of that key; a journaled answer is delivered without running
the task again.

A journal belongs to one master at a time: ``fcntl.flock`` on the side file
``<journal>-lock`` (the lock dies with the process; sqlite's own exclusive
mode would also lock out ``read_journal`` and ``task_manager show``).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import socket
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Deque, Dict, Hashable, List, Optional, Tuple, Union

from ..core.needs import Need
from ..core.steering import Retry
from ..wire.payload import Payload, loads_value
from .journal_attempts import Failures, JournaledAttempts, Retried
from .journal_file import (
    FORMAT,
    SCHEMA,
    VERSION,
    JournalError,
    check_file,
    check_writable,
    connect,
    journaled_tasks,
    lock,
    read_meta,
    sql_error,
    transaction,
    unlock,
)
from .journal_writer import JournalWriter

log = logging.getLogger(__name__)

#: Groups kept unpickled while a resumed run reads its answers (requests come in order).
_GROUP_CACHE = 4


# ------------------------------------------------------------------ the journal

class Journal:
    """A master's journal, open for writing. See the module docstring.

    ``Journal(path, label, secret)`` opens ``path`` or creates it (mode
    0600: it holds the master's secret). Raises JournalError, naming the
    file and the fix, for a file that is not a journal, a journal of
    another label, one in use by a live master, or one that cannot be
    written. Nothing is ever overwritten or truncated.
    """

    def __init__(self, path: Union[str, os.PathLike], label: str, secret: Optional[bytes] = None):
        self.path = Path(path).expanduser().absolute()
        existed = check_file(self.path)
        check_writable(self.path)
        self._lock_fd, self._lock_path = lock(self.path)
        try:
            self._open(label, secret, existed)
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._mutex = threading.RLock()      # requests from several master threads
        self._closed = False
        self.replayed = 0                    # requests answered from the journal
        self.label = label
        self._new_requests = 0               # requests of this run not answered from the journal
        self._resume_said = threading.Lock()   # taken for good once the resume is announced
        self._writer = JournalWriter(self._db, self.path, self.run, self._attempts)
        self._queue = self._writer.queue     # requests, answers, attempts: in the order they happen

    def _open(self, label: str, secret: Optional[bytes], existed: bool) -> None:
        path = self.path
        if not existed:
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        try:
            self._db = connect(path)
            mode, = self._db.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode != "wal":   # e.g. a filesystem without shared memory: slower, still safe
                log.warning("journal %s: SQLite could not use WAL mode here (it uses %s)", path, mode)
            self._db.execute("PRAGMA synchronous = FULL")
            meta = read_meta(self._db, path)
            if meta is not None and meta.get("label") != label:
                raise JournalError(f"the journal {path} belongs to the job labelled {meta.get('label')!r}, "
                                   f"not {label!r}: use the label {meta.get('label')!r} to resume that "
                                   f"job, or give this job another journal file")
            with transaction(self._db):
                if meta is None:
                    for statement in filter(str.strip, SCHEMA.split(";")):
                        self._db.execute(statement)   # not executescript: it would commit
                    meta = {"format": FORMAT, "version": VERSION, "label": label,
                            "created": repr(time.time())}
                    if secret:
                        meta["secret"] = secret.decode()
                    self._db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
                self.run = self._db.execute(
                    "INSERT INTO runs (pid, host, started) VALUES (?, ?, ?)",
                    (os.getpid(), socket.gethostname(), time.time())).lastrowid
                self._attempts = JournaledAttempts(self._db)
            self.secret = meta["secret"].encode() if meta.get("secret") else None
            self._load_index()
        except sqlite3.Error as error:
            raise sql_error(path, error, "opening") from None

    def _load_index(self) -> None:
        # key -> (group, position) in request order; the n-th request of a key takes the n-th
        found = sorted((task[0], task[3], seq, position) for seq, position, task in journaled_tasks(self._db))
        self._index: Dict[bytes, Deque[Tuple[int, int]]] = collections.defaultdict(collections.deque)
        for _, key, seq, position in found:
            self._index[key].append((seq, position))
        self._next_number = 1 + (found[-1][0] if found else 0)
        self.journaled = len(found)
        if found:
            log.info("journal %s: resuming; %d answered tasks journaled", self.path, len(found))
        self._groups: collections.OrderedDict[int, list] = collections.OrderedDict()
        self._reader = connect(self.path)   # the master thread's; the writer's is self._db

    def _journaled_task(self, seq: int, position: int) -> tuple:
        """A journaled task, its group unpickled once while requests come in order (master thread)."""
        rows = self._groups.get(seq)
        if rows is None:
            blob, = self._reader.execute("SELECT rows FROM groups WHERE seq = ?", (seq,)).fetchone()
            rows = self._groups[seq] = loads_value(blob)
            if len(self._groups) > _GROUP_CACHE:
                self._groups.popitem(last=False)
        return rows[position]

    # -------------------------------------------------------------- master thread

    def replay(self, tag: str, key: bytes) -> Optional[Tuple[bool, Payload, str]]:
        """The journaled answer to this request of ``key``: ``(ok, answer, traceback)``, or None.

        The n-th request of a key takes the n-th journaled answer of that
        key; it counts as replayed and as requested. None: nothing journaled
        answers it; the caller queues the task and :meth:`record` s it.
        """
        with self._mutex:
            rows = self._index.get(key)
            if not rows:
                return None
            ok, answer, traceback = self._journaled_task(*rows.popleft())[5:]
            self.replayed += 1
            self._queue.put(tag)          # counted as requested
        return bool(ok), answer, traceback

    def record(self, task_id: str, tag: str, key: bytes, payload: Payload) -> None:
        """Queue a request the task manager took as ``task_id``; it is written with its answer."""
        with self._mutex:
            self._queue.put((self._next_number, task_id, tag, key, payload))
            self._next_number += 1
            self._new_requests += 1

    def request(self, tag: str, key: bytes, payload: Payload, manager, time_limit: Optional[float] = None,
                priority: float = 0, retry: Optional[Retry] = None, need: Optional[Need] = None,
                affinity: Optional[Hashable] = None) -> str:
        """Match a request with a journaled answer, or queue it for the writer; returns the task id.

        ``manager`` (a TaskManager) gets the task (``add_task``) or, when
        its answer is journaled, that answer (``add_answered_task``). A
        master goes through ``journaled.JournaledTasks``, which computes the key.
        A task with ``retry`` starts with the failed attempts journaled for
        it (``journal_attempts.py``).
        """
        with self._mutex:   # one request at a time: task ids follow the request order
            occurrence, made = (0, 0) if retry is None else self._attempts.count(key)
            answer = self.replay(tag, key)
            if answer is not None:
                return manager.add_answered_task(tag, *answer)
            task_id = manager.add_task(tag, payload, time_limit, priority=priority, retry=retry, attempts=made,
                                       need=need, affinity=affinity)
            if retry is not None:
                self._queue.put(Retried(task_id, key, occurrence))
            self.record(task_id, tag, key, payload)
        return task_id

    def unrequested(self) -> int:
        """Journaled tasks that this run has not (yet) requested."""
        return sum(len(rows) for rows in self._index.values())

    # -------------------------------------------------------------- server threads

    def answers(self, answers: List[Tuple[str, bool, Payload, str]]) -> None:
        """Journal accepted answers: (task_id, ok, pickled result or exception, traceback).

        Only queued: the writer joins each answer with its request.
        """
        self._say_resumed()
        self._queue.put(answers)

    def attempts(self, failures: List[Tuple[str, int]]) -> None:
        """Journal failed attempts sent back to be retried: (task_id, failed attempts so far)."""
        self._queue.put(Failures(failures))

    def _say_resumed(self) -> None:
        """Once, on the master's stderr whatever the logging: a resumed job says what it
        took from the journal. Said at the first answer a slave brings (the requests made
        by then are, in a script that requests and then collects, all of them), or at the end."""
        if not self.journaled or not self._resume_said.acquire(blocking=False):
            return
        sys.stderr.write(f"scientific_ms: resuming job {self.label!r}: {self.replayed} results read from "
                         f"the journal, {self._new_requests} tasks left to run\n"
                         f"  journal: {self.path}\n")
        sys.stderr.flush()

    # -------------------------------------------------------------- end

    def close(self, remove: bool = False) -> None:
        """Write what is queued, then close; ``remove``: delete the journal (a clean end)."""
        if self._closed:
            return
        self._closed = True
        self._say_resumed()
        self._writer.close()
        left = self.unrequested()
        if left:
            log.warning("journal %s: %d journaled tasks were not requested by this run (the script "
                        "changed?); they stay in the journal", self.path, left)
        try:
            with transaction(self._db):
                self._db.execute("UPDATE runs SET ended = ? WHERE run = ?", (time.time(), self.run))
            self._reader.close()
            self._db.close()
        except sqlite3.Error as error:
            log.error("%s", sql_error(self.path, error, "closing"))
        if remove:
            for suffix in ("", "-wal", "-shm", "-lock"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(str(self.path) + suffix)
            log.info("journal %s removed: the job ended cleanly", self.path)
        unlock(self._lock_fd, self._lock_path)
