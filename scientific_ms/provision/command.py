"""``task_manager provision LABEL``: hold slave jobs for a master that is already running.

The same loop as ``launchSlaveJobs(SlurmSlaves(...))`` (``provisioner.py``),
run in the command's process: it reads the master's waiting work from its
status every ``STATUS_SECONDS``, submits node agents that dial the master's
address, and cancels every job it submitted when the master ends or goes
away, or when the command gets Ctrl-C or SIGTERM. The status carries no
per-tag estimates, so every waiting task counts as long: the command holds
up to ``--max-jobs`` while work waits, and idle jobs leave.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Dict, Optional

from ..errors import ConfigurationError, ConnectionLostError
from ..master.launch import fetch_stored_code
from ..wire.client import connect
from ..wire.protocol import slave_environment
from .attach import master_host
from .local import LocalSlaves
from .provider import JobRequest, SlaveJobs
from .provisioner import Provisioner
from .slurm import SlurmSlaves

log = logging.getLogger(__name__)

#: Seconds between two reads of the master's status.
STATUS_SECONDS = 2.0

#: Seconds one status call may take.
STATUS_TIMEOUT = 30.0


class RemoteWork:
    """The waiting work of a master as its last status showed it (what ``Provisioner`` reads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: Dict[str, Dict[str, int]] = {}
        self.terminated = False

    def update(self, status: dict) -> None:
        with self._lock:
            self._tasks = status.get("tasks", {})
            self.terminated = bool(status.get("terminated"))

    def counts(self) -> Dict[str, Dict[str, int]]:
        with self._lock:
            return {"waiting": dict(self._tasks.get("waiting", {})), "running": dict(self._tasks.get("running", {}))}

    def waiting_estimates(self) -> Dict[str, Optional[float]]:
        return dict.fromkeys(self.counts()["waiting"])   # not in the status: each task counts as long

    def store_data(self, key: str, data: bytes) -> None:
        """The job table stays in this process (the jobs' slaves show in ``show`` with their job ids)."""


def options(parser: argparse.ArgumentParser) -> None:
    """The options of ``task_manager provision``."""
    kind = parser.add_mutually_exclusive_group(required=True)
    kind.add_argument("--slurm", action="store_true", help="submit the jobs with sbatch")
    kind.add_argument("--local", action="store_true", help="start the node agents on this machine")
    parser.add_argument("-n", "--slaves-per-job", type=int, default=1, metavar="N", help="slaves per job (default 1)")
    parser.add_argument("--min-jobs", type=int, default=0, metavar="N", help="jobs held even without work (0)")
    parser.add_argument("--max-jobs", type=int, default=1, metavar="N", help="most jobs held (default 1)")
    parser.add_argument("--idle-timeout", type=float, default=60.0, metavar="SECONDS",
                        help="a job whose slaves had no work this long ends (default 60)")
    for name in ("walltime", "partition", "account", "qos", "memory"):
        parser.add_argument(f"--{name}", default=None, help=f"SLURM's --{'time' if name == 'walltime' else name}"
                            if name != "memory" else "SLURM's --mem")
    parser.add_argument("--setup", action="append", default=[], metavar="LINE",
                        help="a shell line run before the node agent (repeat for more)")
    parser.add_argument("--sbatch-option", action="append", default=[], metavar="OPTION",
                        help="one more #SBATCH argument, e.g. --sbatch-option=--constraint=cpu (repeat for more)")


def spec_from(args: argparse.Namespace) -> SlaveJobs:
    """The ``SlurmSlaves`` or ``LocalSlaves`` the options describe."""
    counts = dict(slaves_per_job=args.slaves_per_job, min_jobs=args.min_jobs, max_jobs=args.max_jobs)
    if args.local:
        return LocalSlaves(**counts, idle_timeout=args.idle_timeout)
    return SlurmSlaves(**counts, idle_timeout=args.idle_timeout, walltime=args.walltime,
                       partition=args.partition, account=args.account, qos=args.qos, memory=args.memory,
                       setup=args.setup, sbatch_options=args.sbatch_option)


def run(args: argparse.Namespace) -> int:
    """Hold slave jobs (SLURM's or local) for a running master, fitted to its work, until it ends."""
    spec = spec_from(args)   # bad options fail before the master is looked for
    connection = connect(args.label, args.master, key_file=args.key_file, wait=args.wait)
    try:
        return provision(args, spec, connection)
    finally:
        connection.close()


def provision(args: argparse.Namespace, spec: SlaveJobs, connection) -> int:
    """Hold ``spec``'s jobs for the master at ``connection`` until it ends; cancel them then."""
    code = fetch_stored_code(connection, STATUS_TIMEOUT)
    if code is None or not code.cwd:
        raise ConfigurationError(f"the master of {args.label!r} stored no slave code: its node agents "
                                 f"would have nothing to run (start it with runJob, or "
                                 f"initializeMasterProcess(..., slave_script=...))")
    host = connection.host
    if not spec.on_this_machine and (host == "localhost" or host.startswith("127.")):
        host = master_host("0.0.0.0", local=False)   # the master runs here: jobs elsewhere dial our address
    environment = slave_environment(host, connection.port, connection.secret)
    work = RemoteWork()
    work.update(connection.status(STATUS_TIMEOUT))
    cwd = code.cwd

    def request(keep: bool, number: int) -> JobRequest:
        return spec.request(args.label, host, connection.port, environment, cwd, keep, number)

    provisioner = Provisioner(spec, work, request)
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        provisioner.start()
        print(f"holding {spec!r} for {args.label!r} at {connection.host}:{connection.port}; "
              f"Ctrl-C cancels the jobs", file=sys.stderr, flush=True)
        while not work.terminated:
            try:
                work.update(connection.status(STATUS_TIMEOUT, wait=STATUS_SECONDS))
            except ConnectionLostError as error:
                log.info("%s", error)
                break
    finally:
        provisioner.stop()
        signal.signal(signal.SIGTERM, previous)
        print(f"{provisioner.submitted} job(s) submitted; none left", file=sys.stderr, flush=True)
    return 0


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)
