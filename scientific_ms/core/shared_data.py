"""Values a master stores once for its slaves: global states and the slaves' code."""

from __future__ import annotations

import collections
import threading
from typing import Dict


class SharedData:
    """Pickled values by label, each fetched as often as slaves ask (counted).

    Independent of the tasks, so it has its own lock: a slave fetching a
    large value never holds up task traffic.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._values: Dict[str, bytes] = {}
        self.fetches: collections.Counter[str] = collections.Counter()   # label -> times retrieved

    def store(self, label: str, payload: bytes) -> None:
        with self._lock:
            self._values[label] = payload

    def retrieve(self, label: str) -> bytes:
        with self._lock:
            try:
                data = self._values[label]
            except KeyError:
                raise KeyError(f"no data stored under {label!r} (deleted, or never stored)") from None
            self.fetches[label] += 1
            return data

    def delete(self, label: str) -> None:
        with self._lock:
            self._values.pop(label, None)
