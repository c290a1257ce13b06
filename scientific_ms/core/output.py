"""What slaves printed and logged, as the master keeps it: the last lines of each.

Slaves send their lines with their ``exchange`` calls (``slave/output.py``);
the task manager hands each batch here. :class:`SlaveOutput` keeps the last
``LINES`` lines (cut at ``KEPT_CHARS``) of the ``SLAVES`` slaves that wrote most recently (those
that left too: their last words are often the interesting ones) for the
status (``task_manager show -v``, ``--json``), and passes every batch to
``sink`` (the master prints it: ``master/output.py``). Bounded whatever the
slaves send; its own lock, never the manager's.
"""

from __future__ import annotations

import collections
import threading
from typing import Callable, Deque, Dict, List, Optional

#: Lines kept per slave, slaves kept, and the longest line kept: a status (polled by a
#: dashboard every second) carries at most about 750 kB of them.
LINES = 20
SLAVES = 128
KEPT_CHARS = 300
#: The longest line passed on (a slave cuts its lines shorter already: this bounds any peer).
LINE_CHARS = 4000
#: The most lines one batch may carry (the slave's burst is smaller).
BATCH_LINES = 10_000


def slave_name(process_id: object, host: Optional[str]) -> str:
    """``slave 3@node12``: the name a slave's lines carry (the host's first label)."""
    short = host or "?"
    if not short.replace(".", "").isdigit():   # a name, not an IPv4 address: its first label
        short = short.split(".", 1)[0]
    return f"slave {process_id}@{short}"


class _Slave:
    __slots__ = ("name", "lines", "dropped")

    def __init__(self, name: str):
        self.name = name
        self.lines: Deque[str] = collections.deque(maxlen=LINES)
        self.dropped = 0


class SlaveOutput:
    """The last lines of each slave, and where every line goes (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slaves: collections.OrderedDict[int, _Slave] = collections.OrderedDict()
        #: Called with (name, lines, dropped) for each batch, outside the lock.
        self.sink: Optional[Callable[[str, List[str], int], None]] = None

    def add(self, process_id: int, host: Optional[str], lines: object, dropped: object = 0) -> None:
        """A batch from slave ``process_id``: its lines, and how many it dropped before them.

        Anything but a list of strings and a count (a confused or hostile
        peer) is ignored, never raised: this runs inside a call of the slave.
        """
        if not isinstance(lines, (list, tuple)) or not isinstance(dropped, int) or isinstance(dropped, bool):
            return
        kept = [line[:LINE_CHARS] for line in lines[:BATCH_LINES] if isinstance(line, str)]
        dropped = max(0, dropped)
        if not kept and not dropped:
            return
        with self._lock:
            slave = self._slaves.pop(process_id, None) or _Slave(slave_name(process_id, host))
            self._slaves[process_id] = slave   # the most recent last
            while len(self._slaves) > SLAVES:
                self._slaves.popitem(last=False)
            slave.lines.extend(line if len(line) <= KEPT_CHARS else line[:KEPT_CHARS] + "..." for line in kept)
            slave.dropped += dropped
            name = slave.name
        sink = self.sink
        if sink is not None:
            sink(name, kept, dropped)

    def last_lines(self) -> List[Dict[str, object]]:
        """``[{"id", "slave", "lines", "dropped"}]``, by slave id: what the status reports."""
        with self._lock:
            return [{"id": process_id, "slave": slave.name, "lines": list(slave.lines), "dropped": slave.dropped}
                    for process_id, slave in sorted(self._slaves.items())]
