"""The slaves a master starts itself, and their end at its shutdown.

``MasterProcess.launchSlaveJobs`` lands here: ``n`` slave processes on this
machine, supervised (``supervisor.py``) and started by the master's starter
(spawned, or forked from a warm template: ``forkserver.py``), or slave jobs
held through a provider (``SlurmSlaves``, ``LocalSlaves``: ``provision/``).
:meth:`StartedSlaves.stop` ends them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from .. import settings
from ..errors import ConfigurationError
from ..provision import is_slave_jobs
from ..wire.protocol import slave_environment
from . import launch
from .forkserver import SlaveStarter, shared_for
from .supervisor import SlaveSupervisor

if TYPE_CHECKING:
    from ..provision.provisioner import Provisioner
    from .master import MasterProcess


class StartedSlaves:
    """The slaves ``master`` started (``launch``): their processes and jobs, until :meth:`stop`.

    ``start_method``, ``preload``: the master's options (see MasterProcess), checked here. Reads
    the master's public attributes (label, host, port, secret, ``tls_cert``, ``slave_restarts``)
    when a launch needs them.
    """

    def __init__(self, master: MasterProcess, start_method: Optional[str], preload: Optional[Sequence[str]]):
        self._master = master
        given = settings.preload(preload)
        wanted = given is not None or shared_for(()) is not None   # preload=, or warm_start() was called
        self._starter = SlaveStarter(settings.start_method(start_method, "forkserver" if wanted else "spawn"), given)
        self._supervisor: Optional[SlaveSupervisor] = None
        self._provisioners: List[Provisioner] = []   # slave jobs held for this master (provision/)

    def launch(self, n: Any) -> None:
        """``launchSlaveJobs(n)``: ``n`` slave processes here, or ``n``'s slave jobs if a SlaveJobs."""
        master = self._master
        if is_slave_jobs(n):
            from ..provision.attach import provision
            cwd = launch.stored_cwd(master.task_manager)
            if cwd is None:
                raise ConfigurationError("launchSlaveJobs() needs the slaves' code: use runJob(), or "
                                         "initializeMasterProcess(label, slave_script=... or slave_module=...)")
            self._provisioners.append(provision(master, n, cwd, tls_ca=master.tls_cert))
            return
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigurationError(f"launchSlaveJobs(n): n must be a whole number >= 0, got {n!r}")
        cwd = launch.stored_cwd(master.task_manager)
        if cwd is None:
            raise ConfigurationError(
                "launchSlaveJobs() needs the slaves' code: use runJob(), or "
                "initializeMasterProcess(label, slave_script=... or slave_module=...)")
        if self._supervisor is None:
            host = "127.0.0.1" if master.host in ("0.0.0.0", "", "localhost") else master.host
            # the master's certificate is the right CA for a self-signed one
            env = slave_environment(host, master.port, master.secret, tls_ca=master.tls_cert)
            self._supervisor = SlaveSupervisor(launch.slave_command(master.label), env, cwd,
                                               master.slave_restarts,
                                               job_over=lambda: master.task_manager.terminated,
                                               starter=self._starter)
        self._supervisor.launch(n)

    def jobs(self) -> List[Dict]:
        """The slave jobs held: id, provider, state, ages."""
        return [job for provisioner in self._provisioners for job in provisioner.jobs()]

    @property
    def pids(self) -> List[int]:
        """PIDs of the slave processes started here that run now."""
        return self._supervisor.pids if self._supervisor is not None else []

    @property
    def restarts(self) -> int:
        """How many slave processes that died were replaced so far."""
        return self._supervisor.restarts if self._supervisor is not None else 0

    def stop(self, timeout: float) -> None:
        """End the slave processes (waiting up to ``timeout`` s for them), the fork server, and
        cancel the slave jobs still pending or running."""
        if self._supervisor is not None:
            self._supervisor.stop(timeout)
        self._starter.close()   # the fork server, once its slaves are gone
        for provisioner in self._provisioners:
            provisioner.stop()   # cancels the slave jobs still pending or running
