"""Facts about this process and its machine, for the registry and heartbeats."""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import socket
import sys
from typing import Dict, List

import psutil

from . import settings

log = logging.getLogger(__name__)


def getMachineInfo() -> str:
    """A one-line description of this process: ``PID 1234 on host (x86_64)``."""
    uname = platform.uname()
    return f"PID {os.getpid()} on {uname.node} ({uname.machine})"


def process_info() -> Dict:
    """What a process tells the task manager about itself when it registers."""
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "machine": platform.machine(), "python": platform.python_version(),
            "description": getMachineInfo()}


def non_loopback_addresses() -> List[str]:
    """IPv4 addresses of this machine's interfaces other than loopback."""
    found = []
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                found.append(address.address)
    return found


class ResourceSampler:
    """CPU % and resident memory of this process, sent with each heartbeat."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # the first call only starts the interval

    def sample(self) -> Dict:
        try:
            with self._process.oneshot():
                return {"cpu_percent": self._process.cpu_percent(None),
                        "rss_bytes": self._process.memory_info().rss}
        except psutil.Error:
            return {}


_allocator_tuned = False


def tune_allocator() -> None:
    """Keep glibc from returning freed memory to the OS after every message.

    Without it, each large message (1 MB parameters or results) is received
    into freshly mapped pages and pays a page fault per 4 KiB: measured here
    as 3.6 ms per 1 MB round trip instead of 0.5 ms. Setting
    SCIENTIFIC_MS_MALLOC_TOP_PAD=0 turns this off.
    """
    global _allocator_tuned
    pad = settings.malloc_top_pad()
    if _allocator_tuned or pad <= 0 or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return  # not glibc
    M_TOP_PAD = -2
    if mallopt(M_TOP_PAD, ctypes.c_int(pad)) == 1:
        _allocator_tuned = True
        log.debug("malloc top pad set to %d bytes", pad)
