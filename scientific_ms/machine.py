"""Facts about this process and its machine, for the registry and heartbeats."""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import socket
import sys
import time
from typing import Dict, List, Optional, Tuple

import psutil

from . import settings

log = logging.getLogger(__name__)


def getMachineInfo() -> str:
    """A one-line description of this process: ``PID 1234 on host (x86_64)``."""
    uname = platform.uname()
    return f"PID {os.getpid()} on {uname.node} ({uname.machine})"


def process_info() -> Dict:
    """What a process tells the task manager about itself when it registers."""
    info = {"host": socket.gethostname(), "pid": os.getpid(),
            "machine": platform.machine(), "python": platform.python_version(),
            "description": getMachineInfo()}
    slurm = slurm_job()
    if slurm is not None:
        info["slurm"] = slurm
    return info


#: The SLURM variables a slave reports (``task_manager show -v``), and their keys.
SLURM_VARIABLES = (("job_id", "SLURM_JOB_ID"), ("array_job_id", "SLURM_ARRAY_JOB_ID"),
                   ("array_task_id", "SLURM_ARRAY_TASK_ID"), ("step_id", "SLURM_STEP_ID"),
                   ("procid", "SLURM_PROCID"))


def slurm_job() -> Optional[Dict[str, str]]:
    """The SLURM job this process runs in (ids as strings), or None outside SLURM."""
    if not os.environ.get("SLURM_JOB_ID"):
        return None
    return {key: os.environ[name] for key, name in SLURM_VARIABLES if os.environ.get(name)}


def slurm_job_name(slurm: Optional[Dict]) -> Optional[str]:
    """``12345``, ``12340_7`` for an array task (as squeue writes it), ``12345.0`` in a step."""
    if not slurm or not slurm.get("job_id"):
        return None
    if slurm.get("array_job_id") and slurm.get("array_task_id"):
        name = f"{slurm['array_job_id']}_{slurm['array_task_id']}"
    else:
        name = slurm["job_id"]
    step = slurm.get("step_id")
    return f"{name}.{step}" if step and step.isdigit() else name


def non_loopback_addresses() -> List[str]:
    """IPv4 addresses of this machine's interfaces other than loopback."""
    found = []
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                found.append(address.address)
    return found


class ResourceSampler:
    """CPU % and resident memory of this process (or of ``pid``), sent with each heartbeat.

    CPU % is psutil's: 100 is one core busy (so up to 100 x cores), averaged
    since the previous sample. Over less than ``MIN_CPU_SECONDS`` it would be
    noise (CPU time is counted in clock ticks), so the previous figure is
    sent again, or none at first.
    """

    MIN_CPU_SECONDS = 0.5

    def __init__(self, pid: Optional[int] = None) -> None:
        self._process = psutil.Process(pid)
        self._process.cpu_percent(None)  # the first call only starts the interval
        self._cpu_since = time.monotonic()
        self._cpu: Optional[float] = None

    def sample(self) -> Dict:
        try:
            with self._process.oneshot():
                now = time.monotonic()
                if now - self._cpu_since >= self.MIN_CPU_SECONDS:
                    self._cpu, self._cpu_since = self._process.cpu_percent(None), now
                return {"cpu_percent": self._cpu, "rss_bytes": self._process.memory_info().rss}
        except psutil.Error:
            return {}


_allocator_tuned = False

#: Allocations below this come from the heap (glibc's maximum, on 64-bit Linux).
MMAP_THRESHOLD = 32 * 1024 * 1024


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
    M_TOP_PAD, M_MMAP_THRESHOLD = -2, -3
    if mallopt(M_TOP_PAD, ctypes.c_int(pad)) == 1:
        _allocator_tuned = True
        log.debug("malloc top pad set to %d bytes", pad)
    # Setting the pad also freezes glibc's mmap threshold at 128 KiB, so every larger
    # buffer would be mapped afresh (a page fault per 4 KiB). Up to glibc's largest
    # threshold (32 MiB), large buffers come from the heap, where freed ones are reused.
    mallopt(M_MMAP_THRESHOLD, ctypes.c_int(MMAP_THRESHOLD))


# ---------------------------------------------------------------- where output goes

def stream_identity(fd: int) -> Optional[Tuple[int, int]]:
    """(device, inode) of what a file descriptor writes to; None if it is closed."""
    try:
        status = os.fstat(fd)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def output_streams() -> dict:
    """Where this process prints (its stdout and stderr): a master tells its slaves, which
    compare their own streams with it (``slave/output.py``)."""
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "streams": [identity for identity in map(stream_identity, (1, 2)) if identity is not None]}


def shares_master_stream(fd: int, where: dict) -> bool:
    """Does ``fd`` of this process write where the master prints (``output_streams``)?"""
    identity = stream_identity(fd)
    if identity is None or where.get("host") != socket.gethostname():
        return False
    return any(tuple(known) == identity for known in where.get("streams", ()))
