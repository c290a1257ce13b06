"""The master's memory budget: parameters of waiting tasks and answers not yet retrieved.

Pure bookkeeping under the manager's lock. When waiting parameters
exceed the budget, a new request waits (``requests_wait``); when answers
not yet retrieved exceed it, slaves get no new tasks (``results_full``).
A request never waits while answers are over budget: the master must stay
free to retrieve them, so the two bounds cannot wait for each other.
"""

from __future__ import annotations

import logging
from typing import Optional, Set

log = logging.getLogger(__name__)


class MemoryBudget:
    """Bytes held for waiting tasks and for answers, against one budget (None: unbounded)."""

    def __init__(self, budget: Optional[int]):
        self.budget = budget
        self.waiting_bytes = 0
        self.result_bytes = 0
        self._said: Set[str] = set()

    def add_waiting(self, size: int) -> None:
        """A task with ``size`` bytes of parameters was queued (``-size``: it left the queue)."""
        self.waiting_bytes += size

    def add_results(self, size: int) -> None:
        """An answer of ``size`` bytes was stored (``-size``: it was retrieved)."""
        self.result_bytes += size

    def requests_wait(self, size: int) -> bool:
        """Should a new request of ``size`` bytes wait for slaves to take some tasks?"""
        if not (self.budget and self.waiting_bytes and self.waiting_bytes + size > self.budget):
            return False
        if self.results_full():
            return False
        self._say_once("requests", f"requestTask waits: the parameters of waiting tasks exceed the memory "
                       f"budget of {self.budget} bytes; it goes on as slaves take tasks (more slaves, "
                       f"setGlobalState for values shared by many tasks, or a larger memory_budget / "
                       f"SCIENTIFIC_MS_MEMORY_BUDGET)")
        return True

    def results_full(self) -> bool:
        """Are answers not yet retrieved over budget (slaves get no new tasks)?"""
        return bool(self.budget and self.result_bytes > self.budget)

    def hold_back_slaves(self) -> bool:
        """``results_full``, said once in the log."""
        if not self.results_full():
            return False
        self._say_once("results", f"slaves get no new tasks: answers not yet retrieved exceed the memory "
                       f"budget of {self.budget} bytes; call retrieveResult (and write results to disk "
                       f"as they arrive)")
        return True

    def _say_once(self, key: str, message: str) -> None:
        if key not in self._said:
            self._said.add(key)
            log.warning("%s", message)
