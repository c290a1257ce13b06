"""The dashboard a master serves itself (``dashboard=True``, a port, or SCIENTIFIC_MS_DASHBOARD).

It reads the task manager directly (no connection), with the last failures
that the task manager keeps (``core/failures.py``), logs its URL, and leaves
it next to the label file (``published.py``) so that ``task_manager show``
names it.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any, Optional

from . import DEFAULT_PORT, published
from .access import DEFAULT_HOST
from .live import LiveSource
from .server import DashboardServer

log = logging.getLogger(__name__)


class MasterDashboard:
    """A master's own dashboard: on 127.0.0.1 unless SCIENTIFIC_MS_DASHBOARD_HOST says otherwise."""

    def __init__(self, master: Any, port: int):
        manager = master.task_manager
        host = os.environ.get("SCIENTIFIC_MS_DASHBOARD_HOST", "").strip() or DEFAULT_HOST
        shown = socket.gethostname() if master.host in ("", "0.0.0.0", "::") else master.host
        source = LiveSource(master.label, f"{shown}:{master.port}", lambda: manager.status(failures=True))
        self.server = DashboardServer(source, host, None if port == DEFAULT_PORT else port)
        self.server.start()
        self._file: Optional[Path] = None
        try:
            self._file = published.publish(master.label, self.server.url)
        except OSError as error:
            log.warning("cannot leave the dashboard's URL for task_manager show: %s", error.strerror)
        log.warning("dashboard of %r: %s", master.label, self.server.url)

    @property
    def url(self) -> str:
        """The page's URL, with its token."""
        return self.server.url

    def close(self) -> None:
        """Stop serving; ``show`` no longer names it."""
        self.server.close()
        if self._file is not None:
            published.withdraw(self._file)
