"""Progress bars and views that refresh in place, for terminals and for logs.

Shared by ``task_manager watch`` and the master's opt-in progress bar. Only
the standard library; the escape sequences used (carriage return, "erase
line", "cursor up N lines", "erase below") are the common VT100 subset that
every terminal emulator understands.

While the master's bar is on a terminal that is also its standard output,
``print()`` goes through :class:`PrintAboveBar`: the bar is erased, the
text printed, and the bar drawn again below it, as tqdm's ``write`` and
rich's live displays do. (Neither is used: each costs 50-90 ms to import,
and the bar needs only this.)
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import IO, List, Optional, Tuple

from . import settings
from .progress_notebook import NotebookBar, in_ipython_kernel, notebook_bar

#: Erase from the cursor to the end of the line / of the screen.
ERASE_LINE = "\x1b[K"
ERASE_BELOW = "\x1b[J"
HIDE_CURSOR = "\x1b[?25l"
SHOW_CURSOR = "\x1b[?25h"


def is_terminal(stream: IO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def terminal_width(default: int = 80) -> int:
    return max(20, terminal_size((default, 24)).columns)


def terminal_size(fallback: Tuple[int, int] = (80, 24)) -> os.terminal_size:
    """``shutil.get_terminal_size``, imported only when asked: shutil (with bz2 and lzma) is
    a few milliseconds of every master's start otherwise."""
    import shutil
    return shutil.get_terminal_size(fallback)


def format_duration(seconds: Optional[float]) -> str:
    """``75.2 -> "1:15"``, ``3725 -> "1:02:05"``; ``"-"`` for None."""
    if seconds is None:
        return "-"
    seconds = int(max(0.0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def format_bytes(count: Optional[float]) -> str:
    """``52428800 -> "50.0 MiB"``; ``"-"`` for None."""
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # not reached


def format_bar(done: int, total: int, width: int = 30) -> str:
    """``[############------------------]  12/30  40%``.

    ``done`` beyond ``total`` is shown as full; with nothing requested the
    bar is empty and the percentage is ``-``.
    """
    width = max(1, width)
    fraction = min(1.0, done / total) if total > 0 else 0.0
    filled = int(fraction * width)
    percent = f"{100 * fraction:3.0f}%" if total > 0 else "  -%"
    return f"[{'#' * filled}{'-' * (width - filled)}] {done}/{total} {percent}"


class ProgressBar:
    """A one-line bar on a terminal stream, redrawn at most ``max_rate`` times a second.

    ``update(done, total)`` may be called from any thread and as often as
    one likes; it only draws when the stream is a terminal (``enabled``).
    ``close()`` draws the last state and ends the line.
    """

    def __init__(self, stream: IO, label: str = "", *, max_rate: float = 10.0,
                 enabled: Optional[bool] = None, clock=time.monotonic):
        self.stream = stream
        self.label = label
        self.enabled = is_terminal(stream) if enabled is None else enabled
        self._min_gap = 1.0 / max_rate if max_rate > 0 else 0.0
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._last_draw: Optional[float] = None
        self._state = (0, 0)
        self._drawn = False
        self._visible = False    # the bar is on the screen's last line now
        self._closed = False
        self._stdout: Optional[PrintAboveBar] = None

    def update(self, done: int, total: int) -> None:
        if not self.enabled or self._closed:
            return
        with self._lock:
            self._state = (done, total)
            now = self._clock()
            finished = total > 0 and done >= total
            if not finished and self._last_draw is not None and now - self._last_draw < self._min_gap:
                return
            self._draw(now)

    def update_counters(self, counters) -> None:
        """``update`` from a TaskManager's counters: retrieved (delivered) of requested."""
        self.update(counters["delivered"], counters["requested"])

    def close(self) -> None:
        if self._stdout is not None and sys.stdout is self._stdout:
            sys.stdout = self._stdout.stream
        if not self.enabled:
            return
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._drawn:
                self._draw(self._clock())
                self._write("\n")
                self._visible = False

    def print_above(self) -> None:
        """Route ``sys.stdout`` through the bar while it is shown (see PrintAboveBar)."""
        if self.enabled and self._stdout is None and is_terminal(sys.stdout):
            self._stdout = sys.stdout = PrintAboveBar(sys.stdout, self)

    def hide(self) -> None:
        """Erase the bar from its line, to print something there."""
        with self._lock:
            if self._visible:
                self._write("\r" + ERASE_LINE)
                self._visible = False

    def show(self) -> None:
        """Draw the bar again, after something was printed above it."""
        with self._lock:
            if self._drawn and not self._closed and not self._visible:
                self._draw(self._clock())

    def line(self, now: Optional[float] = None) -> str:
        """The text of the bar for the current state (without control characters)."""
        done, total = self._state
        elapsed = (self._clock() if now is None else now) - self._started
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [self.label] if self.label else []
        bar_width = max(10, min(40, terminal_width() - len(self.label) - 45))
        parts.append(format_bar(done, total, bar_width))
        parts.append(format_duration(elapsed))
        if rate > 0:
            parts.append(f"{rate:.1f}/s")
            if total > done:
                parts.append(f"ETA {format_duration((total - done) / rate)}")
        return "  ".join(parts)

    def _draw(self, now: float) -> None:
        self._last_draw = now
        self._drawn = self._visible = True
        self._write("\r" + self.line(now)[:terminal_width() - 1] + ERASE_LINE)

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            self.enabled = False  # the terminal went away; stay quiet from now on


class PrintAboveBar:
    """Stands for ``sys.stdout`` while a bar is drawn below on the same terminal.

    Each write first erases the bar; a write that ends a line then draws
    the bar again, so printed lines scroll up above it and never share its line.
    """

    def __init__(self, stream: IO, bar: ProgressBar):
        self.stream = stream
        self._bar = bar

    def write(self, text: str) -> int:
        self._bar.hide()
        count = self.stream.write(text)
        if text.endswith("\n"):
            self.stream.flush()   # the text must reach the terminal before the bar does
            self._bar.show()
        return count

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


class LiveView:
    """A block of lines redrawn in place on a terminal, or appended to a log otherwise.

    On a terminal each ``show(lines)`` moves the cursor back to the top of
    the previous block and overwrites it (cut to the terminal's height, so
    the block never scrolls away). Elsewhere (a pipe, a file) every
    ``show`` prints the whole block after a ``--- time ---`` separator line,
    so a log of the view reads as a plain table per refresh.
    """

    def __init__(self, stream: IO, *, terminal: Optional[bool] = None):
        self.stream = stream
        self.terminal = is_terminal(stream) if terminal is None else terminal
        self._height = 0
        self._count = 0

    def show(self, lines: List[str]) -> None:
        if self.terminal:
            size = terminal_size((80, 24))
            lines = [line[:size.columns - 1] for line in lines][:max(1, size.lines - 1)]
            prefix = (f"\x1b[{self._height}A\r" if self._height else HIDE_CURSOR + "\r") + ERASE_BELOW
            self.stream.write(prefix + "".join(line + ERASE_LINE + "\n" for line in lines))
            self._height = len(lines)
        else:
            if self._count:
                self.stream.write("\n")
            self.stream.write(f"--- {time.strftime('%H:%M:%S')} ---\n" + "".join(line + "\n" for line in lines))
        self._count += 1
        self.stream.flush()

    def close(self, final_line: Optional[str] = None) -> None:
        """Leave the last block on screen, restore the cursor, print ``final_line``."""
        text = SHOW_CURSOR if self.terminal and self._count else ""
        if final_line is not None:
            text += final_line + "\n"
        if text:
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):
                pass


def master_progress(label: str, requested: Optional[bool] = None) -> Optional[ProgressBar | NotebookBar]:
    """The master's bar of results retrieved against tasks requested, or None.

    ``requested``: the ``progress`` keyword; None defers to
    ``SCIENTIFIC_MS_PROGRESS``. Drawn on stderr, and only when stderr is a
    terminal, so logs and pipes never fill with carriage returns; in a
    Jupyter kernel, by tqdm instead (``progress_notebook.py``).
    """
    wanted = settings.flag("PROGRESS", False) if requested is None else bool(requested)
    if wanted and in_ipython_kernel():
        return notebook_bar(label)
    if not wanted or not is_terminal(sys.stderr):
        return None
    bar = ProgressBar(sys.stderr, label)
    bar.print_above()
    return bar
