"""``SlurmSlaves``: slave jobs submitted with sbatch, watched with squeue, cancelled with scancel.

Each job is a batch script: the ``setup`` lines (module load, activating an
environment), then ``exec`` of the node agent, so that the agent *is* the
batch shell: SLURM's ``--signal=B:TERM@SECONDS`` walltime warning and
scancel's SIGTERM reach the keeper, which drains (``slave/keeper.py``). The
master's secret travels in the environment (sbatch's default ``--export=ALL``),
never on a command line. A keeper that loses its master ends, so a job whose
master was killed ends within seconds, and one that starts after its master
died finds nobody to serve and ends at once.

The three client commands are called through ``subprocess``: they are the
one interface every SLURM site has, and nothing here needs more (a library
such as psij-python would add a dependency to wrap the same three calls).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import shutil
import subprocess
from typing import Dict, Iterable, List, Optional, Sequence

from ..errors import ConfigurationError, ProvisionError
from .provider import DONE, PENDING, RUNNING, JobRequest, Provider, SlaveJobs

log = logging.getLogger(__name__)

#: Seconds an sbatch, squeue or scancel call may take.
COMMAND_TIMEOUT = 60.0

#: Jobs end staggered: the k-th of every ``max_jobs`` submitted asks for k steps less walltime,
#: the steps whole minutes (SLURM's unit) adding up to at most this fraction of the walltime.
STAGGER_FRACTION = 0.2

#: squeue's states that mean the job has not started (yet), and those that mean it runs.
PENDING_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD",
                  "SUSPENDED", "RESIZING"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}


def walltime_seconds(walltime: Optional[str]) -> Optional[float]:
    """SLURM's ``--time`` (minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]) in seconds; None for None."""
    if walltime is None:
        return None
    text = str(walltime).strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if match is None:
        raise ConfigurationError(f"SlurmSlaves(walltime=...): SLURM's --time format "
                                 f"(MINUTES, HH:MM:SS or D-HH:MM:SS), got {walltime!r}")
    days, first, second, third = match.groups()
    numbers = [int(part) for part in (first, second, third) if part is not None]
    if days is not None:   # D-HH, D-HH:MM, D-HH:MM:SS
        hours, minutes, seconds = (numbers + [0, 0])[:3]
        return float(int(days) * 86400 + hours * 3600 + minutes * 60 + seconds)
    if len(numbers) == 1:
        return float(numbers[0] * 60)   # minutes
    if len(numbers) == 2:
        return float(numbers[0] * 60 + numbers[1])   # MM:SS
    return float(numbers[0] * 3600 + numbers[1] * 60 + numbers[2])


def run_command(command: Sequence[str], env: Optional[Dict[str, str]] = None,
                stdin: Optional[str] = None) -> subprocess.CompletedProcess:
    """Run one SLURM client command; ProvisionError if it is missing or hangs."""
    try:
        return subprocess.run(list(command), input=stdin, capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT, env=env)
    except FileNotFoundError:
        raise ProvisionError(f"{command[0]} is not on PATH: SlurmSlaves needs SLURM's client commands "
                             f"(sbatch, squeue, scancel) on the machine of the master") from None
    except subprocess.TimeoutExpired:
        raise ProvisionError(f"{' '.join(command[:2])} did not answer within {COMMAND_TIMEOUT:.0f} s") from None


def submission_environment(environment: Dict[str, str]) -> Dict[str, str]:
    """The environment for sbatch: without the SLURM_* variables of a job the master may itself
    run in (they would shape the new job: its memory, CPUs, array...). SLURM_CONF stays, and so
    do the user's SBATCH_* defaults (an account, a partition)."""
    return {name: value for name, value in environment.items()
            if name == "SLURM_CONF" or not name.startswith("SLURM_")}


class SlurmProvider(Provider):
    """Jobs of one master on SLURM."""

    name = "slurm"

    def __init__(self, options: SlurmSlaves):
        self.options = options

    def script(self, request: JobRequest) -> str:
        """The batch script of one job: #SBATCH lines, setup lines, exec of the node agent."""
        arguments = self.options.sbatch_arguments(request.label, request.time_limit)
        lines = ["#!/bin/sh"] + [f"#SBATCH {option}" for option in arguments]
        lines += [f"cd {_quote(request.cwd)}"]
        lines += list(self.options.setup)
        lines += ["exec " + request.shell_line()]
        return "\n".join(lines) + "\n"

    def submit(self, request: JobRequest) -> str:
        result = run_command(["sbatch", "--parsable"], env=submission_environment(request.environment),
                             stdin=self.script(request))
        if result.returncode != 0:
            options = " ".join(self.options.sbatch_arguments(request.label))
            raise ProvisionError(f"sbatch refused the slave job ({options}): "
                                 f"{result.stderr.strip() or result.stdout.strip()}")
        job_id = result.stdout.strip().split(";")[0]
        if not job_id:
            raise ProvisionError(f"sbatch gave no job id: {result.stdout!r} {result.stderr.strip()!r}")
        log.info("submitted SLURM job %s", job_id)
        return job_id

    def check(self, request: JobRequest) -> None:
        """``sbatch --test-only``: a bad partition, account or QOS fails here, with sbatch's message."""
        result = run_command(["sbatch", "--test-only"], env=submission_environment(request.environment),
                             stdin=self.script(request))
        if result.returncode != 0:
            raise ProvisionError(f"sbatch refuses the slave jobs "
                                 f"({' '.join(self.options.sbatch_arguments(request.label))}): "
                                 f"{result.stderr.strip() or result.stdout.strip()}")

    def states(self, job_ids: Iterable[str]) -> Dict[str, str]:
        ids = list(job_ids)
        if not ids:
            return {}
        result = run_command(["squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%i %T"])
        found: Dict[str, str] = {}
        if result.returncode == 0:
            for line in result.stdout.splitlines():
                parts = line.split()
                if len(parts) >= 2:
                    found[parts[0]] = parts[1]
        elif "invalid job id" not in result.stderr.lower():   # all gone is not an error
            raise ProvisionError(f"squeue failed, the jobs' last states are kept: {result.stderr.strip()}")
        return {job_id: _state(found.get(job_id)) for job_id in ids}

    def cancel(self, job_ids: Iterable[str]) -> None:
        ids = list(job_ids)
        if not ids:
            return
        result = run_command(["scancel", *ids])
        if result.returncode != 0:
            log.warning("scancel %s: %s", " ".join(ids), result.stderr.strip())


def _state(slurm_state: Optional[str]) -> str:
    if slurm_state in PENDING_STATES:
        return PENDING
    if slurm_state in RUNNING_STATES:
        return RUNNING
    return DONE


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


class SlurmSlaves(SlaveJobs):
    """Slaves as SLURM jobs, each a node agent of ``slaves_per_job`` slaves, held between
    ``min_jobs`` and ``max_jobs`` from the waiting work.

    ``walltime`` (SLURM's ``--time``), ``partition``, ``account``, ``qos``,
    ``cpus_per_slave`` (``--cpus-per-task`` is ``slaves_per_job *
    cpus_per_slave``), ``memory`` (``--mem``), ``job_name`` (default
    ``sms-LABEL``), ``sbatch_options`` (more ``#SBATCH`` arguments, such as
    ``"--constraint=gpu"``), ``setup`` (shell lines run before the node agent:
    ``module load ...``, ``source venv/bin/activate``), ``output`` (``-o``
    file pattern; default ``/dev/null``). ``warning``: seconds before the
    walltime at which the job drains (``--signal=B:TERM@warning``; default
    120 when a walltime is given); a replacement is submitted
    ``replace_ahead`` seconds before that, if work remains.
    ``idle_timeout``, ``resources`` (``"gpu=4,memory=256G"``: what each
    node offers tasks that need resources) and the counts: :class:`SlaveJobs`.
    """

    def __init__(self, slaves_per_job: int = 1, min_jobs: int = 0, max_jobs: int = 1, *,
                 walltime: Optional[str] = None, partition: Optional[str] = None, account: Optional[str] = None,
                 qos: Optional[str] = None, cpus_per_slave: int = 1, memory: Optional[str] = None,
                 job_name: Optional[str] = None, sbatch_options: Sequence[str] = (), setup: Sequence[str] = (),
                 idle_timeout: Optional[float] = 60.0, warning: Optional[float] = None,
                 replace_ahead: float = 60.0, output: str = "/dev/null", resources: Optional[object] = None):
        super().__init__(slaves_per_job, min_jobs, max_jobs, idle_timeout=idle_timeout,
                         replace_ahead=replace_ahead, resources=resources)
        if isinstance(cpus_per_slave, bool) or not isinstance(cpus_per_slave, int) or cpus_per_slave < 1:
            raise ConfigurationError(f"SlurmSlaves(cpus_per_slave=...): a whole number >= 1, got {cpus_per_slave!r}")
        if isinstance(setup, str) or isinstance(sbatch_options, str):
            raise ConfigurationError("SlurmSlaves(setup=..., sbatch_options=...): a list of strings, "
                                     "one line or option each")
        self.walltime = walltime
        self.walltime_seconds = walltime_seconds(walltime)
        if warning is None and self.walltime_seconds is not None:
            warning = min(120.0, self.walltime_seconds / 2)
        if warning is not None and not (isinstance(warning, (int, float)) and warning > 0):
            raise ConfigurationError(f"SlurmSlaves(warning=...): seconds > 0, got {warning!r}")
        self.warning = warning
        self.partition, self.account, self.qos = partition, account, qos
        self.cpus_per_slave = cpus_per_slave
        self.memory = memory
        self.job_name = job_name
        self.sbatch_options = list(sbatch_options)
        self.setup = list(setup)
        self.output = output

    def provider(self) -> Provider:
        return SlurmProvider(self)

    def walltime_warning(self) -> Optional[float]:
        if self.walltime_seconds is None or self.warning is None:
            return None
        return max(0.0, self.walltime_seconds - self.warning)

    def time_limit(self, number: int) -> Optional[float]:
        """The walltime of the job submitted after ``number`` others: staggered so that jobs
        submitted together do not all end (and need replacing) together."""
        if self.walltime_seconds is None:
            return None
        step = 60 * math.floor(self.walltime_seconds * STAGGER_FRACTION / self.max_jobs / 60)
        return self.walltime_seconds - (number % self.max_jobs) * step

    def request(self, label: str, host: str, port: int, environment: Dict[str, str], cwd: str,
                keep: bool, number: int = 0) -> JobRequest:
        request = super().request(label, host, port, environment, cwd, keep, number)
        limit = self.time_limit(number)
        if limit is None:
            return request
        warning_after = None if self.warning is None else max(0.0, limit - self.warning)
        return dataclasses.replace(request, time_limit=limit, warning_after=warning_after)

    def sbatch_arguments(self, label: str, time_limit: Optional[float] = None) -> List[str]:
        """The ``#SBATCH`` arguments of a job (``time_limit``: its staggered walltime, in seconds)."""
        arguments = [f"--job-name={self.job_name or 'sms-' + label}", "--nodes=1", "--ntasks=1",
                     f"--cpus-per-task={self.slaves_per_job * self.cpus_per_slave}",
                     f"--output={self.output}"]
        walltime = self.walltime
        if time_limit is not None and time_limit != self.walltime_seconds:
            walltime = str(int(time_limit // 60))   # minutes: the steps are whole minutes
        for option, value in (("--time", walltime), ("--partition", self.partition),
                              ("--account", self.account), ("--qos", self.qos), ("--mem", self.memory)):
            if value is not None:
                arguments.append(f"{option}={value}")
        if self.warning is not None:
            arguments.append(f"--signal=B:TERM@{int(round(self.warning))}")
        return arguments + self.sbatch_options

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", walltime={self.walltime!r}, partition={self.partition!r})"


def slurm_reachable(timeout: float = 10.0) -> bool:
    """Whether SLURM answers here (``sinfo`` runs and succeeds): a script may fall back to
    ``LocalSlaves`` when it does not."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, timeout=timeout,
                              stdin=subprocess.DEVNULL).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
