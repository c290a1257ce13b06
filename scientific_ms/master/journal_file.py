"""A journal file: its format, the checks before opening it, its lock, its connections.

Shared by the writer (``journal.py``, ``journal_writer.py``) and the readers (``journal_report.py``).
A journal belongs to one master at a time: ``fcntl.flock`` on the side
file ``<journal>-lock`` (the lock dies with the process; SQLite's own
exclusive mode would also lock out ``read_journal`` and ``task_manager
show``, and would say only "database is locked").
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import sqlite3
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

from ..errors import ConfigurationError
from ..wire.payload import loads_value

FORMAT = "scientific_ms journal"
VERSION = "1"
_SQLITE_MAGIC = b"SQLite format 3\x00"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (run INTEGER PRIMARY KEY, pid INTEGER, host TEXT,
                                 started REAL, ended REAL);
CREATE TABLE IF NOT EXISTS requested (run INTEGER NOT NULL, tag TEXT NOT NULL,
                                      count INTEGER NOT NULL, PRIMARY KEY (run, tag));
CREATE TABLE IF NOT EXISTS groups (seq INTEGER PRIMARY KEY, run INTEGER NOT NULL,
                                   count INTEGER NOT NULL, rows BLOB NOT NULL);
"""


def journaled_tasks(db: sqlite3.Connection) -> Iterator[Tuple[int, int, tuple]]:
    """(group seq, position, task) for every journaled task, in the order written."""
    for seq, blob in db.execute("SELECT seq, rows FROM groups ORDER BY seq"):
        for position, task in enumerate(loads_value(blob)):
            yield seq, position, task


class JournalError(ConfigurationError):
    """A journal cannot be used: not a journal, another label, locked, unwritable."""


# ------------------------------------------------------------------ opening

def check_file(path: Path) -> bool:
    """Raise JournalError unless ``path`` may hold a journal; True if it has content."""
    if path.is_dir():
        raise JournalError(f"the journal {path} is a folder: give a file name such as {path / 'job.db'}")
    if not path.parent.is_dir():
        raise JournalError(f"cannot create the journal {path}: the folder {path.parent} does not exist")
    if not path.exists():
        return False
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(_SQLITE_MAGIC))
    except OSError as error:
        raise JournalError(f"cannot read the journal {path}: {error.strerror}; "
                           f"fix its permissions or choose another file") from None
    if not head:
        return False   # an empty file: nothing to lose (a master killed while creating it)
    if head != _SQLITE_MAGIC:
        raise JournalError(f"{path} is not a scientific_ms journal (not an SQLite database); it was "
                           f"left untouched: give another journal file, or move this one away")
    return True


def check_writable(path: Path) -> None:
    folder = path.parent
    for target, what in ((path, "file"), (folder, "folder")):
        if target.exists() and not os.access(target, os.W_OK):
            raise JournalError(f"cannot write the journal {path}: its {what} {target} is read-only; "
                               f"make it writable, or choose a journal in a writable folder")


def lock(path: Path) -> Tuple[int, Path]:
    """Take the journal's lock (flock on ``<journal>-lock``); the lock dies with the process.

    Its holder removes the lock file when it is done (:func:`unlock`): a lock taken on a
    file that was removed meanwhile is taken again on the new one.
    """
    for _ in range(10):
        fd, lock_path = _lock_once(path)
        try:
            if os.fstat(fd).st_ino == os.stat(lock_path).st_ino:
                return fd, lock_path
        except FileNotFoundError:
            pass
        os.close(fd)   # its holder removed it while we waited for it: lock the new one
    raise JournalError(f"cannot lock the journal {path}: its lock file {lock_path} keeps being "
                       f"replaced; is another master starting with it?")


def unlock(fd: int, lock_path: Path) -> None:
    """Release the journal's lock and remove its file (removed first: still ours)."""
    try:
        os.unlink(lock_path)
    except FileNotFoundError:
        pass
    os.close(fd)


def _lock_once(path: Path) -> Tuple[int, Path]:
    lock_path = path.with_name(path.name + "-lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as error:
        raise JournalError(f"cannot create the lock file {lock_path} of the journal {path}: "
                           f"{error.strerror}; choose a journal in a writable folder") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        if error.errno in (errno.EWOULDBLOCK, errno.EACCES):
            raise JournalError(f"the journal {path} is in use by a live master ({holder}); stop that "
                               f"master first, or give this job another journal file") from None
        raise JournalError(f"cannot lock the journal {path}: {error.strerror}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"PID {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    return fd, lock_path


def sql_error(path: Path, error: sqlite3.Error, doing: str) -> JournalError:
    text = str(error)
    if "full" in text:
        fix = "free some disk space, or choose a journal on another disk"
    elif "readonly" in text or "read-only" in text:
        fix = "make the file and its folder writable"
    elif "not a database" in text or "malformed" in text:
        fix = "it is damaged or not a journal: move it away, or give another journal file"
    else:
        fix = "check the file and its folder"
    return JournalError(f"journal {path}: {doing} failed ({text}); {fix}")


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    """Open a journal; ``readonly``: for reading only, leaving no file behind where it can.

    A journal without a write-ahead log beside it has no master writing it (a live
    master keeps its ``-wal`` open) and nothing uncommitted to read: it is read as
    immutable, so that SQLite creates no ``-wal`` and ``-shm`` of its own (a reader
    may not remove them). Otherwise the log is read too, in SQLite's read-only mode.
    """
    if readonly:
        wal = path.with_name(path.name + "-wal")
        mode = "mode=ro" if wal.exists() else "mode=ro&immutable=1"
        db = sqlite3.connect(f"{path.resolve().as_uri()}?{mode}", uri=True, check_same_thread=False)
    else:
        db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA busy_timeout = 5000")
    return db


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction (``BEGIN IMMEDIATE``), committed at the end, rolled back on an error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if db.in_transaction:   # SQLite has rolled back by itself after some errors (disk full)
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def read_meta(db: sqlite3.Connection, path: Path) -> Optional[Dict[str, str]]:
    """The meta table, or None for a database without any table (a new journal)."""
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return None
    if "meta" not in tables:
        raise JournalError(f"{path} is an SQLite database but not a scientific_ms journal; it was left "
                           f"untouched: give another journal file")
    meta = dict(db.execute("SELECT key, value FROM meta"))
    if meta.get("format") != FORMAT:
        raise JournalError(f"{path} is an SQLite database but not a scientific_ms journal; it was left "
                           f"untouched: give another journal file")
    if meta.get("version") != VERSION:
        raise JournalError(f"the journal {path} has format version {meta.get('version')}, this "
                           f"scientific_ms reads version {VERSION}: finish it with the version that "
                           f"wrote it, or start afresh with another file")
    return meta
