"""Logging set-up: only entry points and the ``debug`` flag configure handlers."""

from __future__ import annotations

import logging
import sys

from . import settings

_FORMAT = "%(asctime)s %(name)s[%(process)d] %(levelname)s: %(message)s"


def configure(level: int = logging.INFO) -> None:
    """Log scientific_ms messages to stderr (used by the command-line tools)."""
    logger = logging.getLogger("scientific_ms")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT, "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(level)


def apply_debug_flag() -> None:
    """``scientific_ms.debug = True`` (or SCIENTIFIC_MS_DEBUG=1) turns on debug logging."""
    package = sys.modules.get("scientific_ms")
    if getattr(package, "debug", False) or settings.debug_requested():
        configure(logging.DEBUG)
