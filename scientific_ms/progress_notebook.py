"""The master's progress bar in a Jupyter notebook: tqdm's, where tqdm is installed.

``progress.py`` draws the bar with terminal escapes on a terminal's stderr;
a kernel's stderr is no terminal, so there the bar is tqdm's: its
``tqdm.auto`` is what notebooks expect (a widget where ipywidgets is
installed, text updated in place otherwise). tqdm is optional (the
``notebook`` extra) and imported only when a bar is asked for in a kernel.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
import warnings
from typing import Any, Optional

log = logging.getLogger(__name__)


def in_ipython_kernel() -> bool:
    """True in a Jupyter kernel (ipykernel), not in a terminal IPython or a plain interpreter."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and getattr(shell, "kernel", None) is not None


class NotebookBar:
    """The master's bar (``update``, ``update_counters``, ``close``) drawn by a tqdm bar."""

    def __init__(self, bar: Any):
        self._bar = bar
        self._lock = threading.Lock()   # results are retrieved from any thread
        self._closed = False

    def update(self, done: int, total: int) -> None:
        with self._lock:
            if self._closed:
                return
            if total != self._bar.total:
                self._bar.total = total
            if done > self._bar.n:
                self._bar.update(done - self._bar.n)   # tqdm throttles the redraws itself

    def update_counters(self, counters) -> None:
        """``update`` from a TaskManager's counters: retrieved (delivered) of requested."""
        self.update(counters["delivered"], counters["requested"])

    def print_above(self) -> None:
        """Nothing to do: a notebook prints a cell's output apart from its bar."""

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._bar.refresh()
            self._bar.close()


def notebook_bar(label: str) -> Optional[NotebookBar]:
    """A tqdm bar for the master of ``label``, or None (and a log line saying why) without tqdm."""
    try:
        with warnings.catch_warnings():
            # Without ipywidgets tqdm.auto warns, then draws text: that is fine here.
            warnings.simplefilter("ignore")
            # imported by name: tqdm is optional, and ships no type information
            tqdm = importlib.import_module("tqdm.auto").tqdm
    except ImportError:
        log.warning("progress=True in a notebook needs tqdm (pip install 'scientific_ms[notebook]'); "
                    "no progress bar is shown")
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return NotebookBar(tqdm(total=0, desc=label, unit="result", file=sys.stderr))
