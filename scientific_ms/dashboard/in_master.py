"""The dashboard a master serves itself (``dashboard=True``, a port, or SCIENTIFIC_MS_DASHBOARD).

It reads the task manager directly (no connection), keeps the last failures
with their tracebacks (``failures.py``), logs its URL, and writes it next to
the label file so that ``task_manager show`` names it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from pathlib import Path
from typing import Any, Optional

from ..wire import discovery
from . import DEFAULT_PORT
from .access import DEFAULT_HOST
from .failures import FailureLog
from .live import LiveSource
from .server import DashboardServer

log = logging.getLogger(__name__)


def url_file(label: str) -> Path:
    """Where a master's dashboard URL is kept while it serves one (readable by its user only)."""
    return discovery.private_registry() / f"{label}.dashboard"


def dashboard_url(label: str) -> Optional[str]:
    """The URL of the dashboard the master of ``label`` serves, if it serves one."""
    try:
        return url_file(label).read_text().strip() or None
    except OSError:
        return None


class MasterDashboard:
    """A master's own dashboard: on 127.0.0.1 unless SCIENTIFIC_MS_DASHBOARD_HOST says otherwise."""

    def __init__(self, master: Any, port: int):
        manager = master.task_manager
        self.failures = FailureLog()
        manager.on_answers = self.failures.chain(manager.on_answers)
        host = os.environ.get("SCIENTIFIC_MS_DASHBOARD_HOST", "").strip() or DEFAULT_HOST
        shown = socket.gethostname() if master.host in ("", "0.0.0.0", "::") else master.host
        address = f"{shown}:{master.port}"
        source = LiveSource(master.label, address, manager.status, self.failures)
        self.server = DashboardServer(source, host, None if port == DEFAULT_PORT else port)
        self.server.start()
        self._file: Optional[Path] = url_file(master.label)
        try:
            descriptor = os.open(self._file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as stream:
                stream.write(self.server.url + "\n")
        except OSError as error:
            log.warning("cannot write %s (task_manager show will not name the dashboard): %s",
                        self._file, error.strerror)
            self._file = None
        log.warning("dashboard of %r: %s", master.label, self.server.url)

    @property
    def url(self) -> str:
        """The page's URL, with its token."""
        return self.server.url

    def close(self) -> None:
        """Stop serving; ``show`` no longer names it."""
        self.server.close()
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.unlink()
