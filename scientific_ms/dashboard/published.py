"""Where a master that serves its own dashboard leaves the URL, for ``task_manager show``.

Light to import (``show`` reads it): a file next to the label file, private
to the user as the label file is (the URL holds the page's token).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Optional

from ..wire import discovery


def url_file(label: str) -> Path:
    """The file that holds the URL of the dashboard of ``label``'s master."""
    return discovery.private_registry() / f"{label}.dashboard"


def dashboard_url(label: str) -> Optional[str]:
    """The URL of the dashboard the master of ``label`` serves, if it serves one (a file left by
    a master that was killed names another PID than the label file, and is ignored)."""
    try:
        record = json.loads(url_file(label).read_text())
    except (OSError, ValueError):
        return None
    master = discovery.read_label_file(label)
    if not isinstance(record, dict) or master is None or master.get("pid") != record.get("pid"):
        return None
    url = record.get("url")
    return url if isinstance(url, str) else None


def publish(label: str, url: str) -> Path:
    """Write ``url`` for ``label`` (mode 0600); returns the file. Raises OSError."""
    path = url_file(label)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as stream:
        json.dump({"pid": os.getpid(), "url": url}, stream)
    return path


def withdraw(path: Path) -> None:
    """Remove a file written by :func:`publish`."""
    with contextlib.suppress(OSError):
        path.unlink()
