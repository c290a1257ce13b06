"""The master's door for requests: straight to the TaskManager, or through the journal.

``MasterProcess`` holds one of these and asks it for tasks the same way
whether the job is journaled or not::

    PlainTasks.add_task      -> TaskManager.add_task
    JournaledTasks.add_task  -> request_key -> Journal.replay -> TaskManager.add_answered_task
                                            or TaskManager.add_task -> Journal.record

:class:`JournaledTasks` holds the TaskManager and the Journal (composition):
it computes the request keys, hands journaled answers to the manager
instead of queuing their tasks, and hooks the journal to the manager's
accepted answers (``on_answers``).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING, Dict, Hashable, Iterable, List, Optional, Union

from ..core.manager import TaskManager
from ..core.needs import Need
from ..core.steering import Retry
from ..wire.payload import Payload, dumps_value
from .journal_keys import request_key, value_digest

if TYPE_CHECKING:
    from .journal import Journal

log = logging.getLogger(__name__)

#: The shared-data label under which slaves find that their master is journaled (it may come back).
JOURNALED_MASTER = "journaled_master"


class PlainTasks:
    """Requests without a journal: every task goes to the TaskManager."""

    #: No journal: no secret kept in it, nothing answered from it.
    secret: Optional[bytes] = None
    replayed = 0

    def __init__(self, manager: TaskManager):
        self._manager = manager

    def add_task(self, tag: str, payload: Payload, time_limit: Optional[float] = None,
                 parameters: Optional[tuple] = None, priority: float = 0, retry: Optional[Retry] = None,
                 need: Optional[Need] = None, affinity: Optional[Hashable] = None) -> str:
        """Queue a task; returns its id (``parameters`` serve a journal's keys only)."""
        if retry is None and not priority and need is None and affinity is None:   # the usual case
            return self._manager.add_task(tag, payload, time_limit)
        return self._manager.add_task(tag, payload, time_limit, priority=priority, retry=retry, need=need,
                                      affinity=affinity)

    def add_tasks(self, tag: str, payloads: Iterable[Payload], time_limit: Optional[float] = None, *,
                  priority: float = 0, retry: Optional[Retry] = None, need: Optional[Need] = None,
                  affinity: Optional[Hashable] = None) -> List[str]:
        """Queue a task for each payload (one lock of the manager for all); returns their ids."""
        if retry is None and not priority and need is None and affinity is None:   # the usual case
            return self._manager.add_tasks(tag, payloads, time_limit)
        return self._manager.add_tasks(tag, payloads, time_limit, priority=priority, retry=retry, need=need,
                                       affinity=affinity)

    def close(self, failed: bool = False, keep: bool = True) -> None:
        """Nothing to close."""


class JournaledTasks:
    """Requests through a journal: one answered in an earlier run is answered from it.

    Opens (or creates) the journal at ``path`` (raises JournalError, see
    :class:`Journal`), journals every answer the manager accepts, and tells
    slaves that this master is journaled (they then wait for it to come back).
    """

    def __init__(self, manager: TaskManager, path: Union[str, os.PathLike], label: str,
                 secret: Optional[bytes]):
        self._manager = manager
        from .journal import Journal  # (sqlite3 and the writer: only a journaled master imports them)
        self._journal: Journal = Journal(path, label, secret)
        self._digests: Dict[str, bytes] = {}   # global state label -> hash of its value
        manager.on_answers = self._journal.answers
        manager.on_retries = self._journal.attempts
        # Slaves read this to know that a vanished master may come back (rejoin_grace).
        manager.store_data(JOURNALED_MASTER, dumps_value(
            {"pid": os.getpid(), "host": socket.gethostname(), "journal": str(self._journal.path)}))

    @property
    def secret(self) -> Optional[bytes]:
        """The secret kept in the journal (that of the job's first run), if any."""
        return self._journal.secret

    @property
    def replayed(self) -> int:
        """How many requests of this run were answered from the journal."""
        return self._journal.replayed

    def add_task(self, tag: str, payload: Payload, time_limit: Optional[float] = None,
                 parameters: Optional[tuple] = None, priority: float = 0, retry: Optional[Retry] = None,
                 need: Optional[Need] = None, affinity: Optional[Hashable] = None) -> str:
        """Queue a task, or deliver its journaled answer; returns its id.

        ``parameters``: given when they hold GlobalStateValue placeholders,
        which then match by the value they stand for. A task with ``retry``
        counts the attempts journaled by an earlier run (``Journal.request``).
        """
        key = request_key(tag, payload, parameters, self._digest) if parameters is not None else \
            request_key(tag, payload)
        return self._journal.request(tag, key, payload, self._manager, time_limit, priority, retry, need,
                                     affinity)

    def add_tasks(self, tag: str, payloads: Iterable[Payload], time_limit: Optional[float] = None, *,
                  priority: float = 0, retry: Optional[Retry] = None, need: Optional[Need] = None,
                  affinity: Optional[Hashable] = None) -> List[str]:
        """:meth:`add_task` for each payload, in order; returns their ids."""
        return [self.add_task(tag, payload, time_limit, priority=priority, retry=retry, need=need, affinity=affinity)
                for payload in payloads]

    def _digest(self, label: str) -> bytes:
        # A state label names one value for good (state ids are not reused): hash it once.
        digest = self._digests.get(label)
        if digest is None:
            digest = self._digests[label] = value_digest(self._manager.retrieve_data(label))
        return digest

    def close(self, failed: bool = False, keep: bool = True) -> None:
        """Write what is queued and close; ``keep=False`` removes the journal after a clean end.

        Clean: not ``failed``, and every result requested was retrieved.
        """
        counters = self._manager.counters
        clean = not failed and counters["requested"] == counters["delivered"]
        journal = self._journal
        if journal.replayed:
            log.info("journal %s: %d of %d requests were answered from the journal",
                     journal.path, journal.replayed, counters["requested"])
        journal.close(remove=clean and not keep)
