"""The provider interface: what a batch system must do for the master to hold slave jobs.

A *provider* submits, watches and cancels jobs; each job runs one node agent
(``python -m scientific_ms slave LABEL -m HOST:PORT -n N``: a keeper with N
workers, ``slave/keeper.py``). It knows nothing of tasks: how many jobs to
hold is decided by ``scaling.py`` and acted on by ``provisioner.py``.

:class:`SlaveJobs` is the user's side: the options every provider shares
(``slaves_per_job``, ``min_jobs``, ``max_jobs``, ``idle_timeout``) and
:meth:`SlaveJobs.provider`, which builds the provider. Adding a batch system
(PBS, LSF, HTCondor, ...) means a subclass of each: see docs/guide/clusters.md.
"""

from __future__ import annotations

import abc
import dataclasses
import shlex
import sys
from typing import Dict, Iterable, List, Optional

from ..core.needs import offer_text
from ..errors import ConfigurationError

#: The states a job goes through, as providers report them.
PENDING, RUNNING, DONE = "pending", "running", "done"


@dataclasses.dataclass(frozen=True)
class JobRequest:
    """One job to submit: the node agent's command, its environment and folder."""
    label: str
    command: List[str]          # the node agent: python -m scientific_ms slave LABEL -m HOST:PORT -n N ...
    environment: Dict[str, str]   # the whole environment, with SCIENTIFIC_MS_SECRET
    cwd: str
    time_limit: Optional[float] = None      # this job's walltime in seconds (None: the options')
    warning_after: Optional[float] = None   # seconds after its start at which it is told to drain

    def shell_line(self) -> str:
        """The command as one shell line (for batch scripts)."""
        return shlex.join(self.command)


class Provider(abc.ABC):
    """Submits, watches and cancels jobs on one batch system (or on this machine)."""

    #: Short name shown by ``task_manager show`` ("slurm", "local", ...).
    name = "provider"

    @abc.abstractmethod
    def submit(self, request: JobRequest) -> str:
        """Submit one job; its id. Raise :class:`ProvisionError` with the batch system's message."""

    @abc.abstractmethod
    def states(self, job_ids: Iterable[str]) -> Dict[str, str]:
        """{id: PENDING | RUNNING | DONE} for ``job_ids``; a job the system no longer knows is DONE."""

    def check(self, request: JobRequest) -> None:
        """Raise :class:`ProvisionError` if ``request`` would be refused (checked once, at launch)."""
        return None   # a provider that cannot check ahead finds out at the first submission

    @abc.abstractmethod
    def cancel(self, job_ids: Iterable[str]) -> None:
        """Cancel jobs, pending or running (a running one's node agent gets SIGTERM and drains)."""

    def close(self) -> None:
        """Release what the provider holds (processes to reap, ...); after every job is cancelled."""
        return None


class SlaveJobs(abc.ABC):
    """Slaves held as jobs of ``slaves_per_job`` workers, between ``min_jobs`` and ``max_jobs``.

    Pass one wherever a number of local slaves goes: ``runJob(...,
    launch_slaves=...)``, ``master.launchSlaveJobs(...)``, ``Executor(slaves=...)``.
    ``idle_timeout``: seconds a job's slaves wait without work before the job
    ends (the jobs kept for ``min_jobs`` never time out).
    ``replace_ahead``: seconds before a job's walltime warning at which, if
    work remains, its replacement is submitted (providers without a walltime
    ignore it). ``resources``: what each job's host offers tasks that need
    resources, shared by its slaves (``"gpu=4,memory=256G"``; the node
    agent's ``--resources``, docs/guide/resources.md).
    """

    #: Whether the jobs run on the master's machine (their agents then dial the loopback address).
    on_this_machine = False

    def __init__(self, slaves_per_job: int = 1, min_jobs: int = 0, max_jobs: int = 1, *,
                 idle_timeout: Optional[float] = 60.0, replace_ahead: float = 60.0,
                 resources: Optional[object] = None):
        for name, value, least in (("slaves_per_job", slaves_per_job, 1), ("min_jobs", min_jobs, 0),
                                   ("max_jobs", max_jobs, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigurationError(f"{type(self).__name__}({name}=...): a whole number >= {least}, "
                                         f"got {value!r}")
        if min_jobs > max_jobs:
            raise ConfigurationError(f"{type(self).__name__}: min_jobs ({min_jobs}) is above "
                                     f"max_jobs ({max_jobs})")
        if idle_timeout is not None and not (isinstance(idle_timeout, (int, float)) and idle_timeout > 0):
            raise ConfigurationError(f"{type(self).__name__}(idle_timeout=...): seconds > 0 or None, "
                                     f"got {idle_timeout!r}")
        self.slaves_per_job = slaves_per_job
        self.min_jobs = min_jobs
        self.max_jobs = max_jobs
        self.idle_timeout = idle_timeout
        self.replace_ahead = float(replace_ahead)
        self.resources = None if resources is None else \
            offer_text(resources, f"{type(self).__name__}(resources={resources!r})")

    @abc.abstractmethod
    def provider(self) -> Provider:
        """A new provider for one master."""

    def walltime_warning(self) -> Optional[float]:
        """Seconds after a job starts at which it is told to drain (SIGTERM); None: never."""
        return None

    def request(self, label: str, host: str, port: int, environment: Dict[str, str], cwd: str,
                keep: bool, number: int = 0) -> JobRequest:
        """The job that runs a node agent for the master at host:port (``keep``: no idle timeout;
        ``number``: how many jobs were submitted before it)."""
        command = [sys.executable, "-m", "scientific_ms", "slave", label, "-m", f"{host}:{port}",
                   "-n", str(self.slaves_per_job)]
        if self.idle_timeout is not None and not keep:
            command += ["--idle-timeout", repr(float(self.idle_timeout))]
        if self.resources is not None:
            command += ["--resources", self.resources]
        return JobRequest(label, command, environment, cwd, warning_after=self.walltime_warning())

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(slaves_per_job={self.slaves_per_job}, min_jobs={self.min_jobs}, "
                f"max_jobs={self.max_jobs}, idle_timeout={self.idle_timeout})")
