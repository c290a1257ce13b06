"""What ``dashboard=`` (or SCIENTIFIC_MS_DASHBOARD) asks for: no dashboard, or a port."""

from __future__ import annotations

from typing import Any, Optional

from .. import settings
from ..errors import ConfigurationError
from . import DEFAULT_PORT, ENVIRONMENT


def dashboard_port(option: Any) -> Optional[int]:
    """None: no dashboard; 0: any free port; else the port to serve on.

    ``option``: None (ask the environment), a bool, or a port number.
    ``True`` means :data:`DEFAULT_PORT`, or any free port if it is taken.
    """
    if option is None:
        text = settings.raw("DASHBOARD")
        if text is None:
            return None
        answer = settings.yes_or_no(text)
        if answer is not None:
            return DEFAULT_PORT if answer else None
        try:
            option = int(text)
        except ValueError:
            raise ConfigurationError(f"{ENVIRONMENT}={text!r}: expected 1/0, true/false, or a port number") from None
        where = f"{ENVIRONMENT}={text!r}"
    else:
        where = f"dashboard={option!r}"
    if isinstance(option, bool):
        return DEFAULT_PORT if option else None
    if not isinstance(option, int) or not 0 <= option <= 65535:
        raise ConfigurationError(f"{where}: give True, False or a port number (0-65535)")
    return option
