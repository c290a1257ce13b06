"""runJob and initializeMasterProcess: one script or two, and who plays which role."""

from __future__ import annotations

import atexit
import importlib.util
import inspect
import logging
import os
import sys
from pathlib import Path
from typing import Optional, Type

from . import discovery, mpi
from .errors import ConfigurationError
from .master import MasterProcess
from .slave import SlaveProcess

log = logging.getLogger(__name__)


def runJob(label: str, master_class: Type[MasterProcess], slave_class: Type[SlaveProcess],
           watchdog_period: Optional[float] = 120.0, launch_slaves: int = 0, *,
           progress: Optional[bool] = None, journal: Optional[str] = None) -> None:
    """Run a job whose master and slave are defined in the calling script.

    The process becomes the master, unless it runs as a slave: started by
    ``task_manager slave LABEL``, spawned by the master (``launch_slaves``
    slaves on this machine), or an MPI rank other than 0. The master keeps
    the script's source so that ``task_manager slave LABEL`` can run more
    slaves, on any machine, in the master's working directory.
    ``progress``: see :class:`MasterProcess` (None: SCIENTIFIC_MS_PROGRESS).
    ``journal``: a journal file, so that the same command run again after
    the master was killed resumes the job (see :class:`MasterProcess`).
    """
    discovery.check_label(label)
    if not (isinstance(master_class, type) and issubclass(master_class, MasterProcess)):
        raise ConfigurationError(f"runJob: master_class must be a subclass of MasterProcess, got {master_class!r}")
    if not (isinstance(slave_class, type) and issubclass(slave_class, SlaveProcess)):
        raise ConfigurationError(f"runJob: slave_class must be a subclass of SlaveProcess, got {slave_class!r}")
    context = discovery.current_slave_context()
    if context is not None and context.label == label:
        slave_class(label, watchdog_period=watchdog_period).start()
        return
    if mpi.runs_under_mpi():
        mpi.run_job(label, master_class, slave_class, watchdog_period, launch_slaves, progress=progress,
                    journal=journal)
        return
    master = make_master(master_class, label, progress=progress, journal=journal)
    script = _main_script()
    if script is not None:
        master.store_slave_code(script.read_text(), str(script), sys.argv)
    elif launch_slaves:
        master.shutdown()
        raise ConfigurationError("runJob(launch_slaves=...) re-runs the script in each slave, "
                                 "but this program has no script file (interactive session?)")
    if launch_slaves:
        master.launchSlaveJobs(launch_slaves)
    master.start()


def make_master(master_class: Type[MasterProcess], label: str, **options) -> MasterProcess:
    """``master_class(label, **options)``, passing only the options given (not None),
    so that subclasses whose __init__ takes just the label still work."""
    return master_class(label, **{name: value for name, value in options.items() if value is not None})


def _main_script() -> Optional[Path]:
    main = sys.modules.get("__main__")
    try:
        path = inspect.getsourcefile(main) if main is not None else None
    except TypeError:
        path = None
    return Path(path).resolve() if path and os.path.isfile(path) else None


def initializeMasterProcess(label: str, slave_script: Optional[str] = None,
                            slave_module: Optional[str] = None,
                            use_name_server: bool = True, *,
                            progress: Optional[bool] = None,
                            journal: Optional[str] = None) -> MasterProcess:
    """Start a master without subclassing; it shuts down when the interpreter exits.

    ``slave_script`` (a file) or ``slave_module`` (an importable module
    with ``do_<tag>`` functions) is stored so that ``task_manager slave
    LABEL`` and ``launchSlaveJobs`` can run slaves. Under mpiexec, ranks
    other than 0 become slaves running that code and exit when it ends.
    ``journal``: see :class:`MasterProcess`.
    """
    if slave_script is not None and slave_module is not None:
        raise ConfigurationError("give slave_script or slave_module, not both")
    source = script = None
    if slave_script is not None:
        path = Path(slave_script).expanduser().resolve()
        try:
            source = path.read_text()
        except OSError as error:
            raise ConfigurationError(f"cannot read the slave script {slave_script}: {error.strerror}") from None
        script = str(path)
    elif slave_module is not None:
        if importlib.util.find_spec(slave_module) is None:
            raise ConfigurationError(f"slave_module {slave_module!r} cannot be imported here")
        source = (f"from {slave_module} import *\n"
                  f"from scientific_ms import startSlaveProcess\n"
                  f"startSlaveProcess()\n")
    if mpi.runs_under_mpi() and mpi.rank() != 0:
        mpi.serve_as_slave_rank(label)  # does not return
    master = MasterProcess(label, use_name_server, progress=progress, journal=journal)
    atexit.register(master.shutdown)
    if source is not None:
        master.store_slave_code(source, script, [script or slave_module])
    if mpi.runs_under_mpi():
        mpi.announce_master(master)
    return master
