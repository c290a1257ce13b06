"""A live web dashboard of a job: ``task_manager dashboard TARGET`` or ``dashboard=True``.

TARGET is a label (a live master, read through its ``status`` call as
``task_manager show`` reads it) or a journal file (a job that ended or whose
master died). The standard library serves the page (``http.server``); the
page's own script draws it as SVG, from assets inside this package, so
nothing is fetched from outside and nothing beyond the core is installed.
This package is imported only when a dashboard runs (``start_in_master``
imports the rest lazily). See docs/guide/dashboard.md.
"""

from __future__ import annotations

from typing import Any, Optional

#: The port tried first (dask's); when it is taken, any free port.
DEFAULT_PORT = 8787

#: SCIENTIFIC_MS_DASHBOARD: 1/true/yes/on (the default port), a port number, or 0/false/off/no.
ENVIRONMENT = "SCIENTIFIC_MS_DASHBOARD"


def start_in_master(master: Any, option: Any) -> Optional[Any]:
    """Start the dashboard a master serves itself, if ``option`` (or the environment) asks;
    returns it (``close()`` it at shutdown), or None."""
    from .options import dashboard_port
    port = dashboard_port(option)
    if port is None:
        return None
    from .in_master import MasterDashboard
    return MasterDashboard(master, port)
