"""The ``task_manager`` command: ``show``/``status``, ``watch``, ``list``, ``slave``."""

from .commands import main

__all__ = ["main"]
