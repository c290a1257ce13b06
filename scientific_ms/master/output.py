"""Showing the slaves' output at the master: ``[slave 3@node12] text``, line by line.

Slaves send what their handlers print and log with their ``exchange``
calls (``slave/output.py``); the task manager passes each batch to its
``output.sink`` (``core/output.py``), which is an :class:`OutputPrinter`:
lines join a bounded queue, and a thread of their own writes them to the
master's stderr or to a file. The threads that serve slaves never wait for
a terminal: when the queue is full (the terminal, or the disk, cannot keep
up), lines are dropped and counted, and the count is printed once it can be.

The master tells its slaves whether it wants their output, and where it
prints (so that a slave sharing that terminal does not print each line
twice), in the shared data ``protocol.SLAVE_OUTPUT``.
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
from typing import Deque, List, Optional, Union

from ..core.manager import TaskManager
from ..errors import ConfigurationError
from ..wire.payload import dumps_value
from ..wire.protocol import SLAVE_OUTPUT

log = logging.getLogger(__name__)

#: Lines waiting to be written, at most.
QUEUE_LINES = 20_000


class OutputPrinter:
    """Writes the slaves' lines with their names, on a thread of its own (see the module docstring).

    ``target``: True for the master's stderr (looked up at each write), or a file name (appended).
    """

    def __init__(self, target: Union[bool, str]):
        self._file = None
        if isinstance(target, str):
            try:
                self._file = open(target, "a", encoding="utf-8", errors="replace")
            except OSError as error:
                raise ConfigurationError(f"slave_output={target!r}: cannot open the file: {error}") from None
        self.target = target
        self._cond = threading.Condition()
        self._queue: Deque[str] = collections.deque()
        self._lost = 0
        self._closed = False
        self._thread: Optional[threading.Thread] = None

    def __call__(self, name: str, lines: List[str], dropped: int) -> None:
        """A batch of slave ``name``'s lines (``core/output.py``'s sink), and how many it dropped."""
        text = [f"[{name}] {line}\n" for line in lines]
        if dropped:
            text.append(f"[{name}] ({dropped} lines dropped: the slave printed faster than it may forward)\n")
        with self._cond:
            if self._closed:
                return
            room = QUEUE_LINES - len(self._queue)
            if room < len(text):
                self._lost += len(text) - max(0, room)
                text = text[:max(0, room)]
            self._queue.extend(text)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="scientific_ms-slave-output", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._lost and not self._closed:
                    self._cond.wait()
                text, self._queue = "".join(self._queue), collections.deque()
                lost, self._lost = self._lost, 0
                closed = self._closed
            if lost:
                text += (f"scientific_ms: {lost} lines of slave output dropped: "
                         "the master could not write them fast enough\n")
            if text:
                self._write(text)
            if closed:
                return

    def _write(self, text: str) -> None:
        stream = self._file if self._file is not None else sys.stderr
        if stream is None:
            return
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError) as error:   # a closed terminal, a full disk: the job goes on
            log.debug("cannot write the slaves' output: %s", error)

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued, then stop (the file, if any, is closed)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        if self._file is not None and (thread is None or not thread.is_alive()):
            self._file.close()


def forward_slave_output(manager: TaskManager, target: Union[bool, str], where: dict) -> Optional[OutputPrinter]:
    """Tell the slaves whether to send their output (``where``: the master's streams, from
    ``slave/output.py``'s ``master_streams``); returns the printer, None when it is off."""
    printer = OutputPrinter(target) if target is not False else None
    manager.store_data(SLAVE_OUTPUT, dumps_value(dict(where, forward=printer is not None)))
    if printer is not None:
        manager.output.sink = printer
    return printer
