"""A worker's output, on its way to the master: what its handlers print and log.

While a slave serves, its ``sys.stdout`` and ``sys.stderr`` are
:class:`LineWriter` objects: text written to them is cut into lines, and
each complete line joins an :class:`OutputBuffer`, which the task feed
(``feed.py``) empties into its next ``exchange`` with the master. Logging
reaches them too: the root logger's handlers that wrote to the process's
own stdout or stderr write to the writers instead (and logging's last
resort, used when nothing is configured, looks ``sys.stderr`` up each time).
The master prints each line with the slave's name and host (``master/output.py``).

Bounded: a token bucket lets ``RATE`` lines a second through after a burst
of ``BURST``, no more than ``BURST`` lines wait, and no line is longer
than ``LINE_CHARS``; the rest is dropped, counted, and the count goes to the
master with the next lines. A handler printing in a tight loop costs itself
a split and a lock per print, and the master at most ``RATE`` lines a second.

Each writer also writes to the stream it replaced (``echo``), unless that
stream is where the master prints: a slave the master spawned shares the
master's terminal, and would show every line twice. The master says where
it prints in the shared data ``protocol.SLAVE_OUTPUT``. Nor does an MPI
rank's (``mpi.py``: ``launcher_shows_output``): mpiexec shows it beside the master's.

Only Python-level writes are caught. What C code or a child process writes
to file descriptors 1 and 2 stays where it was going: reading those from a
pipe needs a thread of this process, which needs the GIL that a C routine
printing may hold while the pipe is full.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from typing import Callable, List, Optional, Tuple

from ..core.output import slave_name
from ..errors import ScientificMSError
from ..machine import shares_master_stream
from ..wire.client import MasterConnection
from ..wire.payload import loads_value
from ..wire.protocol import SLAVE_OUTPUT

log = logging.getLogger(__name__)

#: Lines a second a slave forwards once its burst is spent, the burst, and the longest line.
RATE = 100.0
BURST = 500
LINE_CHARS = 2000
#: Seconds a line may wait for an ``exchange`` that goes anyway before the feed calls for it.
DELAY = 0.25


_launcher_shows = False   # the launcher shows this process's output where it shows the master's
_installed: Optional[OutputCapture] = None   # the capture installed in this process, if any


def release() -> None:
    """Before this process ends at once (``os._exit``): its streams back, the lines the
    master never got printed here, so that its last words are read where it runs."""
    capture = _installed
    if capture is not None:
        capture.uninstall()


def launcher_shows_output() -> None:
    """This process's own output reaches the master's terminal by another way (an MPI
    rank's, through mpiexec): forwarded lines are not written here as well."""
    global _launcher_shows
    _launcher_shows = True


class OutputBuffer:
    """Complete lines waiting for the master, under a token bucket (see the module docstring)."""

    def __init__(self, rate: float = RATE, burst: int = BURST, clock: Callable[[], float] = time.monotonic):
        self._rate = float(rate)
        self._burst = int(burst)
        self._clock = clock
        self._lock = threading.Lock()
        self._lines: List[str] = []
        self._dropped = 0
        self._tokens = float(burst)
        self._stamp = clock()
        self._since: Optional[float] = None   # when the oldest waiting line came
        #: Called (outside the lock) when a line arrives and none was waiting: the feed wakes.
        self.on_first: Optional[Callable[[], None]] = None

    def add(self, line: str) -> None:
        """One complete line (without its newline); dropped and counted beyond the bounds."""
        if len(line) > LINE_CHARS:
            line = f"{line[:LINE_CHARS]}... ({len(line) - LINE_CHARS} more characters)"
        with self._lock:
            now = self._clock()
            tokens = self._tokens + (now - self._stamp) * self._rate
            if tokens > self._burst:
                tokens = self._burst
            self._stamp = now
            if tokens < 1.0 or len(self._lines) >= self._burst:
                self._tokens = tokens
                self._dropped += 1
                return
            self._tokens = tokens - 1.0
            self._lines.append(line)
            first = self._since is None
            if first:
                self._since = now
            wake = self.on_first if first else None
        if wake is not None:
            wake()

    def take(self) -> Optional[Tuple[List[str], int]]:
        """(lines, lines dropped since the last take), or None when there is neither."""
        with self._lock:
            if not self._lines and not self._dropped:
                return None
            taken = (self._lines, self._dropped)
            self._lines, self._dropped, self._since = [], 0, None
            return taken

    def due_in(self) -> Optional[float]:
        """Seconds until the waiting lines should go (0: now); None when none waits."""
        since = self._since   # one read: a stale value only moves the call by a wake-up
        if since is None:
            return None
        return max(0.0, since + DELAY - self._clock())


class LineWriter:
    """A text stream that cuts what is written into lines for an :class:`OutputBuffer`.

    ``original``: the stream it replaces, written to as well when ``echo``;
    it answers what this one does not know (``fileno``, ``encoding``, ...).
    A carriage return starts the line again, as on a terminal (progress bars).
    """

    def __init__(self, original, buffer: OutputBuffer, echo: bool):
        self.original = original
        self.echo = echo and original is not None
        self._buffer = buffer
        self._lock = threading.Lock()
        # The unfinished line, in pieces (``print`` writes each argument, each separator and
        # the end apart): joined once a newline comes, or when there are many.
        self._parts: List[str] = []

    def write(self, text: str) -> int:
        if text.__class__ is not str and not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if self.echo:
            self.original.write(text)
        if "\n" in text:
            self._lines(text)
        else:
            # No lock: appends are atomic, and _lines takes only the pieces it joined.
            parts = self._parts
            parts.append(text)
            if len(parts) > 64:   # no newline for long (a progress bar): keep what a terminal shows
                self._compact()
        return len(text)

    def _take_parts(self) -> str:
        """The pieces written so far, joined and taken (the lock is held)."""
        parts = self._parts
        count = len(parts)
        joined = "".join(parts[:count])
        del parts[:count]   # a piece another thread appended meanwhile stays
        return joined

    def _compact(self) -> None:
        with self._lock:
            line = _after_return(self._take_parts())[-LINE_CHARS:]
            self._parts.insert(0, line)

    def _lines(self, text: str) -> None:
        with self._lock:
            lines = (self._take_parts() + text).split("\n")
            rest = lines.pop()
            if rest:
                self._parts.insert(0, _after_return(rest)[-LINE_CHARS:])
        add = self._buffer.add
        for line in lines:
            add(_after_return(line.rstrip("\r")) if "\r" in line else line)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self.echo:
            self.original.flush()

    def finish(self) -> None:
        """Hand in the unfinished line, if any (the writer is being taken away)."""
        with self._lock:
            partial = _after_return(self._take_parts())
        if partial:
            self._buffer.add(partial)

    def isatty(self) -> bool:
        return bool(self.original is not None and self.original.isatty())

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def __getattr__(self, name: str):
        if self.original is None:   # (no stream: pythonw, a daemon)
            raise AttributeError(name)
        return getattr(self.original, name)


def _after_return(line: str) -> str:
    """What a terminal would show of ``line``: the text after its last carriage return."""
    cut = line.rfind("\r")
    return line if cut < 0 else line[cut + 1:]


class OutputCapture:
    """This process's stdout, stderr and logging, forwarded while installed (main thread only)."""

    def __init__(self, buffer: Optional[OutputBuffer] = None):
        self.buffer = buffer or OutputBuffer()
        self._writers: List[Tuple[str, LineWriter]] = []
        self._handlers: List[Tuple[logging.StreamHandler, object]] = []
        self._prefix = ""

    @property
    def installed(self) -> bool:
        return bool(self._writers)

    def install(self, where: dict, name: str) -> None:
        """Replace ``sys.stdout`` and ``sys.stderr``; ``where``: the master's streams
        (``master_streams``), ``name``: how the master names this slave (for lines
        printed here after the last call)."""
        global _installed
        if self._writers:
            return
        _installed = self
        self._prefix = f"[{name}] "
        for attribute, fd in (("stdout", 1), ("stderr", 2)):
            original = getattr(sys, attribute)
            echo = not (_launcher_shows or shares_master_stream(fd, where))
            writer = LineWriter(original, self.buffer, echo=echo)
            self._writers.append((attribute, writer))
            setattr(sys, attribute, writer)
        originals = {id(writer.original): writer for _, writer in self._writers}
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and id(handler.stream) in originals:
                self._handlers.append((handler, handler.stream))
                handler.setStream(originals[id(handler.stream)])

    def uninstall(self) -> None:
        """Put the streams back; lines the master never got are printed here, named."""
        global _installed
        if _installed is self:
            _installed = None
        for handler, stream in self._handlers:
            handler.setStream(stream)
        self._handlers = []
        writers, self._writers = self._writers, []
        ours = {id(writer): writer for _, writer in writers}
        for made in logging.getLogger().handlers:   # made while installed (logging.basicConfig)
            if isinstance(made, logging.StreamHandler) and id(made.stream) in ours:
                made.setStream(ours[id(made.stream)].original)
        for attribute, writer in writers:
            writer.finish()
            if getattr(sys, attribute) is writer:
                setattr(sys, attribute, writer.original)
        left = self.buffer.take()
        stderr = sys.stderr
        if left is None or not writers or stderr is None:
            return
        lines, dropped = left
        echoed = all(writer.echo for _, writer in writers)
        try:
            if not echoed:   # else they were shown here as they came
                stderr.write("".join(f"{self._prefix}{line}\n" for line in lines))
            if dropped:
                stderr.write(f"{self._prefix}({dropped} lines dropped: more than {RATE:g} lines/s)\n")
            stderr.flush()
        except (OSError, ValueError):
            pass


def start_forwarding(capture: OutputCapture, connection: MasterConnection, process_id: Optional[int]) -> None:
    """Install ``capture`` if the master wants this slave's output (``protocol.SLAVE_OUTPUT``).

    Only in a process of its own: a slave in the main thread, in a process
    that is not its master's (a slave in a thread would take its process's
    streams from the rest of the program). Asked at each registration: a
    master started again (``rejoin.py``) may want otherwise.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        found, value = connection.call("get_data", SLAVE_OUTPUT)
        where = loads_value(value) if found else None
    except (ScientificMSError, ValueError, TypeError, EOFError, AttributeError, ImportError) as error:
        log.info("cannot read whether the master wants this slave's output: %s", error)
        where = None
    if not isinstance(where, dict) or not where.get("forward") or \
            (where.get("pid") == os.getpid() and where.get("host") == socket.gethostname()):   # its own process
        capture.uninstall()
        return
    capture.install(where, slave_name(process_id, socket.gethostname()))
