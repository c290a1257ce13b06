"""``LocalSlaves``: jobs that are node agents started as subprocesses of this machine.

The same interface as ``SlurmSlaves`` with no batch system: tests without
root, a laptop, or a workstation that should grow and shrink its slaves
with the work. A job is pending until its process starts (at once), running
until it exits; cancelling sends SIGTERM (the keeper drains), then SIGKILL.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import subprocess
import threading
import time
from typing import Dict, Iterable, List

from ..errors import ProvisionError
from .provider import DONE, RUNNING, JobRequest, Provider, SlaveJobs

log = logging.getLogger(__name__)

#: Seconds a cancelled local job's node agent has to drain before it is killed.
CANCEL_GRACE_SECONDS = 10.0


class LocalProvider(Provider):
    """Each job is one ``python -m scientific_ms slave`` process in its own session."""

    name = "local"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: Dict[str, subprocess.Popen] = {}
        self._numbers = itertools.count(1)

    def submit(self, request: JobRequest) -> str:
        try:
            process = subprocess.Popen(request.command, cwd=request.cwd, env=request.environment,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as error:
            raise ProvisionError(f"could not start a local node agent ({request.shell_line()}): {error}") from None
        with self._lock:
            job_id = f"local-{next(self._numbers)}"
            self._jobs[job_id] = process
        log.info("local job %s: node agent PID %d", job_id, process.pid)
        return job_id

    def states(self, job_ids: Iterable[str]) -> Dict[str, str]:
        with self._lock:
            found = {job_id: self._jobs.get(job_id) for job_id in job_ids}
        return {job_id: RUNNING if process is not None and process.poll() is None else DONE
                for job_id, process in found.items()}

    def cancel(self, job_ids: Iterable[str]) -> None:
        with self._lock:
            processes = [self._jobs[job_id] for job_id in job_ids if job_id in self._jobs]
        end_processes(processes, CANCEL_GRACE_SECONDS)

    def pid(self, job_id: str) -> int:
        """The node agent's PID of a local job (tests kill it to play a lost node)."""
        with self._lock:
            return self._jobs[job_id].pid

    def close(self) -> None:
        with self._lock:
            processes = list(self._jobs.values())
        end_processes(processes, 0.0)


def end_processes(processes: List[subprocess.Popen], grace: float) -> None:
    """SIGTERM (the keeper drains), ``grace`` s, then SIGKILL; every process is reaped."""
    for signal_sent in ("terminate", "kill"):
        alive = [process for process in processes if process.poll() is None]
        for process in alive:
            with contextlib.suppress(ProcessLookupError):
                getattr(process, signal_sent)()
        deadline = time.monotonic() + grace
        for process in alive:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.05, deadline - time.monotonic()) if signal_sent == "terminate" else None)


class LocalSlaves(SlaveJobs):
    """Slave jobs started as node agents on this machine (no batch system).

    ``LocalSlaves(slaves_per_job=2, min_jobs=0, max_jobs=4)``: from none to
    four node agents of two slaves each, following the waiting work; idle
    ones leave after ``idle_timeout`` seconds. Options: :class:`SlaveJobs`.
    """

    on_this_machine = True

    def provider(self) -> Provider:
        return LocalProvider()
