"""runJob and initializeMasterProcess: one script or two, and who plays which role."""

from __future__ import annotations

import atexit
import importlib.util
import logging
from pathlib import Path
from typing import Any, List, Optional, Type

from . import interactive, mpi
from .errors import ConfigurationError
from .master.ending import exit_on_sigterm
from .master.launch import start_script_master
from .master.master import MasterProcess
from .slave.slave import SlaveProcess
from .wire import discovery, leaving

log = logging.getLogger(__name__)


def runJob(label: str, master_class: Type[MasterProcess], slave_class: Type[SlaveProcess],
           watchdog_period: Optional[float] = 120.0, launch_slaves: Any = 0, *,
           progress: Optional[bool] = None, journal: Optional[str] = None, dashboard=None,
           start_method: Optional[str] = None, preload: Optional[List[str]] = None,
           slave_output=None) -> Any:
    """Run a job whose master and slave are defined in the calling script; in the master,
    return what its ``run()`` returned.

    The process becomes the master, unless it runs as a slave: started by
    ``task_manager slave LABEL``, spawned by the master (``launch_slaves``
    slaves on this machine), or an MPI rank other than 0. In a slave,
    runJob does not return: the process exits when the slave ends, so code
    after runJob runs in the master only, once its ``run()`` has ended. The master keeps
    the script's source so that ``task_manager slave LABEL`` can run more
    slaves, on any machine, in the master's working directory. Without a
    script file (a Jupyter notebook, a REPL, ``python -c``) it keeps
    ``slave_class`` itself, pickled by value, and a master of ``label``
    that this process started earlier (the same cell run again) is shut
    down first (docs/guide/notebooks.md).
    ``launch_slaves`` may also be ``SlurmSlaves(...)`` or ``LocalSlaves(...)``:
    slave jobs the master holds from its waiting work (docs/guide/clusters.md).
    ``progress``: see :class:`MasterProcess` (None: SCIENTIFIC_MS_PROGRESS).
    ``journal``: a journal file, so that the same command run again after
    the master was killed resumes the job (see :class:`MasterProcess`).
    ``dashboard``: a live web page of the job (see :class:`MasterProcess`).
    ``start_method`` and ``preload``: how ``launch_slaves`` slaves start, spawned
    or forked from a warm template (see :class:`MasterProcess`, docs/guide/warm-start.md).
    ``slave_output``: where what the slaves print is shown (see :class:`MasterProcess`).
    """
    discovery.check_label(label)
    if not (isinstance(master_class, type) and issubclass(master_class, MasterProcess)):
        raise ConfigurationError(f"runJob: master_class must be a subclass of MasterProcess, got {master_class!r}")
    if not (isinstance(slave_class, type) and issubclass(slave_class, SlaveProcess)):
        raise ConfigurationError(f"runJob: slave_class must be a subclass of SlaveProcess, got {slave_class!r}")
    context = discovery.current_slave_context()
    if context is not None and context.label == label:
        slave_class(label, watchdog_period=watchdog_period).start()
        # As under MPI, a slave's runJob does not return into the script: the code
        # after it (saving the results, say) belongs to the master.
        raise SystemExit(0)
    _refuse_master_in_slave(label, "runJob")
    if mpi.runs_under_mpi():
        return mpi.run_job(label, master_class, slave_class, watchdog_period, launch_slaves,
                           progress=progress, journal=journal, dashboard=dashboard, slave_output=slave_output)
    by_value = interactive.is_interactive()
    if by_value:
        interactive.end_earlier_master(label)   # the same cell run again
    master = start_script_master(label, master_class, progress=progress, journal=journal, dashboard=dashboard,
                                 start_method=start_method, preload=preload, slave_output=slave_output)
    if by_value:
        # No script for the slaves to run again: they get the slave class itself, by value.
        interactive.remember(master)
        try:
            master.store_slave_code(interactive.slave_class_code(slave_class, watchdog_period), None,
                                    interactive.BY_VALUE_ARGV)
        except BaseException:
            master.shutdown()
            raise
    if launch_slaves:
        try:
            master.launchSlaveJobs(launch_slaves)
        except BaseException:   # a batch system that refuses the slave jobs (ProvisionError)
            master.shutdown()
            raise
    return master.start()


def initializeMasterProcess(label: str, slave_script: Optional[str] = None,
                            slave_module: Optional[str] = None,
                            use_name_server: bool = True, *, handlers: Optional[interactive.Handlers] = None,
                            progress: Optional[bool] = None, journal: Optional[str] = None,
                            **options: Any) -> MasterProcess:
    """Start a master without subclassing; it shuts down when the interpreter exits.

    ``slave_script`` (a file) or ``slave_module`` (an importable module
    with ``do_<tag>`` functions) is stored so that ``task_manager slave
    LABEL`` and ``launchSlaveJobs`` can run slaves. Or ``handlers``, the
    handler functions themselves, sent to the slaves by value (for a
    notebook or a REPL, where no file holds them): a dict ``{tag: function}``,
    or a list of functions each serving the tag of its name (``square`` or
    ``do_square`` serve ``"square"``). Under mpiexec, ranks
    other than 0 become slaves running that code and exit when it ends.
    In a notebook or a REPL, a master of the same label started earlier by
    this process (the same cell run again) is shut down first.
    ``journal``: see :class:`MasterProcess`. Other keyword options
    (``task_time_limit``, ``port``, ``secret``, ``slave_restarts``, ...) are
    those of :class:`MasterProcess`. SIGTERM ends the interpreter as Ctrl-C
    does, so the master still shuts down.
    """
    if sum(given is not None for given in (slave_script, slave_module, handlers)) > 1:
        raise ConfigurationError("give one of slave_script, slave_module and handlers, not several")
    source = script = None
    argv: List[str] = []    # the slaves' sys.argv: the script or the module
    if slave_script is not None:
        path = Path(slave_script).expanduser().resolve()
        try:
            source = path.read_text()
        except OSError as error:
            raise ConfigurationError(f"cannot read the slave script {slave_script}: {error.strerror}") from None
        script = str(path)
        argv = [script]
    elif slave_module is not None:
        if importlib.util.find_spec(slave_module) is None:
            raise ConfigurationError(f"slave_module {slave_module!r} cannot be imported here")
        source = (f"from {slave_module} import *\n"
                  f"from scientific_ms import startSlaveProcess\n"
                  f"startSlaveProcess()\n")
        argv = [slave_module]
    elif handlers is not None:
        source = interactive.handlers_code(interactive.handler_table(handlers))
        argv = interactive.BY_VALUE_ARGV
    _refuse_master_in_slave(label, "initializeMasterProcess")
    if mpi.runs_under_mpi() and mpi.rank() != 0:
        mpi.serve_as_slave_rank(label)  # does not return
    if interactive.is_interactive():
        interactive.end_earlier_master(label)   # the same cell run again
    master = MasterProcess(label, use_name_server, progress=progress, journal=journal, **options)
    interactive.remember(master)
    atexit.register(master.shutdown)
    exit_on_sigterm()
    if source is not None:
        master.store_slave_code(source, script, argv)
    if mpi.runs_under_mpi():
        mpi.announce_master(master)
    return master


def _refuse_master_in_slave(label: str, caller: str) -> None:
    """A process started as a slave never becomes a master: its master spawned it to serve,
    and a master here would spawn slaves of its own, which would do the same (a fork bomb)."""
    context = discovery.current_slave_context()
    if context is None:
        return
    if context.label != label:
        problem = (f"this process was spawned as a slave of {context.label!r},\n"
                   f"  but its script asks {caller} for the label {label!r}.\n"
                   f"  A label computed in each process (from os.getpid() or the time) differs in\n"
                   f"  every slave, and each would start a master of its own.")
    else:
        problem = (f"this process was spawned as a slave of {label!r},\n"
                   f"  but its script calls {caller}: a slave's code must not start a master.")
    leaving.refuse()   # the master that spawned us starts no other: it would refuse too
    raise ConfigurationError(
        f"{problem}\n"
        f"  Fix: use a fixed label, or compute it once in the master and pass it to the slaves\n"
        f"  through the environment (they inherit it), e.g.\n"
        f"  label = os.environ.setdefault(\"MY_JOB_LABEL\", f\"sweep-{{os.getpid()}}\")")
