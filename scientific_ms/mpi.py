"""MPI launch: rank 0 is the master, other ranks are slaves. The only module importing mpi4py.

MPI is used once: rank 0 broadcasts the master's address and secret, and
every rank calls ``MPI_Finalize`` straight after. Every task goes over
Pyro5, so no rank ever waits inside an MPI call (MPICH's progress engine
spins there) and a dead rank cannot wedge a collective.

How a slave rank lives and ends, and why::

    hydra_pmi_proxy (or orted, slurmstepd)
     `-- python job.py   rank k: MPI_Init, bcast, MPI_Finalize, fork; then
          |              waits for its child (os.waitpid: no CPU) and exits
          |              through libc exit(), which sends PMI "finalize"
          `-- python job.py   the slave: serves tasks over Pyro5, then leaves
               |              with os._exit (no PMI traffic at all)
               `-- its keeper (``slave/keeper.py``): heartbeats, time limits; a
                   worker it forks to replace a slave it killed is served until
                   the end too (the rank is their subreaper)

Measured with MPICH 5.0.2's Hydra (see docs/guide/mpi.md):

* The proxy SIGKILLs every rank as soon as it reaps a direct child that a
  signal killed, whatever ``-disable-auto-cleanup`` says; so the process
  that does the work (and may be SIGKILLed or segfault) must not be the
  proxy's child. Its parent reports the death as an ordinary exit status.
* MPICH sends PMI "finalize" from a C ``atexit`` handler, not from
  ``MPI_Finalize``. A rank whose PMI socket closes without it is a failure
  (default: every rank is killed). Exactly one process per rank must send
  it: the waiter, through libc ``exit()``; the forked slave never runs C
  exit handlers.
* With ``-disable-auto-cleanup`` Hydra sends SIGUSR1 to every rank each
  time a rank ends; its default action kills, so ranks ignore it (set
  before ``MPI_Init``, so that no rank can end before all ignore it).

``SCIENTIFIC_MS_MPI_SUPERVISE=0`` turns the fork off: the rank process is
then the slave (a SIGKILLed slave rank then takes the MPI job down).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import traceback
from typing import Any, Callable, Dict, List, NoReturn, Optional

from . import settings
from .errors import ConfigurationError, MasterNotFoundError, ScientificMSError
from .master.launch import address_record, run_stored_slave_code, start_script_master
from .wire import discovery

log = logging.getLogger(__name__)

#: Variables that MPI launchers set in every rank they start.
_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "MPI_LOCALRANKID")
#: Those among them that hold the rank in MPI_COMM_WORLD (MPI_LOCALRANKID is per node).
_WORLD_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")

#: Version of the broadcast record.
_PROTOCOL = 1
#: Seconds to wait for each of the master's addresses when a slave rank picks one.
_PROBE_SECONDS = 2.0
#: Seconds a slave rank gives the master to hand over its stored slave code.
_FETCH_SECONDS = 30.0


class _World:
    """This process's place in the MPI job, once MPI is initialised."""

    def __init__(self, rank: int, size: int):
        self.rank = rank
        self.size = size
        self.finalized = False
        self.announced = False


_world: Optional[_World] = None


def runs_under_mpi() -> bool:
    """True if an MPI launcher started this process (mpi4py is not imported to find out)."""
    return any(name in os.environ for name in _RANK_VARIABLES)


def rank() -> int:
    """This process's rank in MPI_COMM_WORLD; 0 when not started by an MPI launcher.

    Under an MPI launcher this initialises MPI (once): rank 0 must be
    initialised before it does anything that may fail, or the other ranks
    would wait in MPI_Init for ever.
    """
    if not runs_under_mpi():
        return 0
    return _start().rank


def size() -> int:
    """Number of ranks in MPI_COMM_WORLD (1 when not started by an MPI launcher)."""
    return _start().size if runs_under_mpi() else 1


# ---------------------------------------------------------------- start-up

def _import_mpi():
    try:
        import mpi4py
    except ImportError:
        found = ", ".join(f"{name}={os.environ[name]}" for name in _RANK_VARIABLES if name in os.environ)
        raise ConfigurationError(
            f"this process was started by an MPI launcher ({found}) but mpi4py is not installed: "
            f"install it ('pip install mpi4py', built against the MPI that runs mpiexec; see "
            f"docs/guide/mpi.md), or run the script without mpiexec") from None
    # MPI_Finalize is called by this module right after the broadcast; the
    # PMI goodbye is sent by MPICH's own C exit handler.
    mpi4py.rc.finalize = False
    from mpi4py import MPI
    return MPI


def _start() -> _World:
    """Initialise MPI once; rank 0 promises the other ranks an announcement."""
    global _world
    if _world is not None:
        return _world
    # Before MPI_Init: no rank gets past MPI_Init before every rank is there,
    # so none can end (and make Hydra send SIGUSR1) before all ignore it.
    if signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL:
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    MPI = _import_mpi()
    comm = MPI.COMM_WORLD
    _world = _World(comm.Get_rank(), comm.Get_size())
    expected = next((os.environ[name] for name in _WORLD_RANK_VARIABLES if name in os.environ), None)
    if expected is not None and int(expected) != _world.rank:
        log.warning("the launcher says rank %s, MPI says rank %d; using MPI's", expected, _world.rank)
    if _world.size == 1:
        log.warning("MPI_COMM_WORLD has a single rank: this process is the master and no rank "
                    "serves as a slave (was the launcher given -n, or does srun need --mpi=pmix?)")
    if _world.rank == 0:
        atexit.register(_announce_failure_at_exit)
    return _world


def _broadcast(record: Optional[Dict]) -> Dict:
    """The one collective: rank 0 sends ``record``, every rank returns it; then MPI ends."""
    world = _start()
    MPI = _import_mpi()
    try:
        record = MPI.COMM_WORLD.bcast(record, root=0)
    finally:
        world.announced = True
        if not world.finalized:
            world.finalized = True
            MPI.Finalize()
    return record


# ---------------------------------------------------------------- rank 0

def announce_master(master) -> None:
    """Rank 0: broadcast the master's address and secret to the other ranks."""
    world = _start()
    if world.rank != 0:
        raise ConfigurationError(f"announce_master() runs on rank 0, not on rank {world.rank}")
    if world.announced:
        return
    record = dict(address_record(master.label, master.port, master.secret, master.host),
                  protocol=_PROTOCOL)
    _broadcast(record)
    log.info("rank 0 announced the master of %r (port %d) to %d slave ranks",
             master.label, master.port, world.size - 1)


def announce_failure(reason: str) -> None:
    """Rank 0: tell the other ranks that no master will come, so that they exit."""
    world = _start()
    if world.rank == 0 and not world.announced:
        _broadcast({"protocol": _PROTOCOL, "error": reason})


def _announce_failure_at_exit() -> None:
    world = _world
    if world is not None and not world.announced:
        announce_failure("rank 0 ended before its master started (see rank 0's error above)")


def run_job(label: str, master_class, slave_class, watchdog_period: Optional[float],
            launch_slaves: int, progress: Optional[bool] = None, journal: Optional[str] = None,
            dashboard=None, slave_output=None) -> Any:
    """runJob under an MPI launcher: rank 0 runs the master (returns what its run() returns),
    the other ranks serve."""
    world = _start()
    if world.rank != 0:
        _serve_rank(label, lambda: slave_class(label, watchdog_period=watchdog_period).start())
    try:
        master = start_script_master(label, master_class, progress=progress, journal=journal,
                                     dashboard=dashboard, slave_output=slave_output)
    except BaseException as error:
        announce_failure(f"rank 0 could not start the master of {label!r}: {error}")
        raise
    try:
        announce_master(master)
    except BaseException as error:
        announce_failure(f"rank 0 could not start the master of {label!r}: {error}")
        master.shutdown()
        raise
    if launch_slaves:
        master.launchSlaveJobs(launch_slaves)
    return master.start()


# ---------------------------------------------------------------- ranks >= 1

def serve_as_slave_rank(label: str) -> NoReturn:
    """Ranks >= 1 of a two-script job: run the slave code the master stored, then exit."""
    _serve_rank(label, lambda: run_stored_slave_code(label, _FETCH_SECONDS))


def serve_as_function_rank(serve: Callable[[], None]) -> NoReturn:
    """Ranks >= 1 of an Executor's job: serve whichever master rank 0 announces, then exit.

    ``serve`` finds the label in the slave context that is set before it runs.
    """
    _serve_rank(None, serve)


def _serve_rank(label: Optional[str], serve: Callable[[], None]) -> NoReturn:
    """Serve the master announced by rank 0 (of ``label``; None: of any label)."""
    world = _start()
    if world.rank == 0:
        raise ConfigurationError("rank 0 runs the master, not a slave")
    where = f"slave rank {world.rank} of {label!r}" if label else f"slave rank {world.rank}"
    record = _broadcast(None)
    if "error" in record:
        _leave(1, f"scientific_ms: {where}: {record['error']}; exiting")
    if label is None:
        label = record.get("label", "?")
        where = f"slave rank {world.rank} of {label!r}"
    elif record.get("label") != label:
        _leave(1, f"scientific_ms: {where}: rank 0 announced the master of {record.get('label')!r}, "
                  f"not {label!r}; exiting")
    try:
        host = _reachable_host(record)
    except ScientificMSError as error:
        _leave(1, f"scientific_ms: {where}: {error}")
    discovery.set_slave_context(discovery.SlaveContext(label, host, record["port"],
                                                       record["secret"].encode()))
    # mpiexec shows every rank's output where it shows the master's: forwarded lines need no copy
    # (the slave's output module: imported here, on a slave rank, not by every master)
    from .slave import output as slave_output
    slave_output.launcher_shows_output()
    log.info("%s: master at %s:%d", where, host, record["port"])
    if not settings.flag("MPI_SUPERVISE", True):
        _leave(_run(serve, where))
    sys.stdout.flush()
    sys.stderr.flush()
    _become_subreaper()
    child = os.fork()
    if child == 0:
        code = _run(serve, where)
        try:
            atexit._run_exitfuncs()
        finally:
            _flush()
            os._exit(code)  # never the C exit handlers: the waiter owns the PMI connection
    _wait_and_leave(child, where)


def _run(serve: Callable[[], None], where: str) -> int:
    """Run the slave; its exit code."""
    try:
        serve()
        return 0
    except SystemExit as end:
        if end.code is None or isinstance(end.code, int):
            return end.code or 0
        _say(str(end.code))
        return 1
    except KeyboardInterrupt:
        return 130
    except MasterNotFoundError as error:
        # It answered rank 0's announcement a moment ago: it has ended since.
        _say(f"scientific_ms: {where}: the master ended before this rank could join "
             f"(finished, or failed: see rank 0's output); exiting")
        log.debug("%s: %s", where, error)
        return 0
    except ScientificMSError as error:
        _say(f"scientific_ms: {where}: {error}")
        return 1
    except BaseException:
        traceback.print_exc()
        return 1


def _wait_and_leave(child: int, where: str) -> NoReturn:
    """The rank's own process: wait for the slave without CPU, then exit with its status."""
    # Ctrl-C reaches the whole process group: the slave decides, the waiter reports.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # SIGTERM (a batch system's walltime, scancel) is the slave's to handle: it gives its
    # tasks back and exits 0 (departure.py); this process passes it on and waits.
    signal.signal(signal.SIGTERM, lambda signum, frame: _forward(child, signum))
    atexit._clear()  # the script's exit handlers belong to the slave, which ran them
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    _reap_the_rest()
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        # Exit 0: the farm absorbs a dead slave, and launchers that abort the whole job
        # when a rank exits non-zero (Open MPI's mpirun, srun --kill-on-bad-exit) must
        # not take the master down for it. The master's exit status is the job's.
        _leave(0, f"scientific_ms: {where}: the slave process {child} was killed by {name}; "
                  f"its tasks run again on other slaves", run_exit_handlers=False)
    _leave(code, run_exit_handlers=False)


def _become_subreaper() -> None:
    """Linux: the slave's keeper, and a worker it forked to replace a slave it killed for
    a time limit, become this process's children when the slave ends, so that this
    rank lasts as long as they serve (see ``slave/keeper.py``)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        PR_SET_CHILD_SUBREAPER = 36
        ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1)
    except (OSError, AttributeError):
        pass


def _reap_the_rest() -> None:
    """Wait for the descendants that came back to us (the slave's keeper and workers)."""
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def _forward(child: int, signum: int) -> None:
    try:
        os.kill(child, signum)
    except ProcessLookupError:
        pass


def _leave(code: int, message: Optional[str] = None, *, run_exit_handlers: bool = True) -> NoReturn:
    """End this rank's process through libc exit(): MPICH's exit handler says goodbye to PMI.

    Not sys.exit: SystemExit would unwind through the user's script (its
    ``finally`` blocks, the code after runJob) in a rank that only serves.
    """
    if message:
        _say(message)
    if run_exit_handlers:
        try:
            atexit._run_exitfuncs()
        except BaseException:
            pass
    _flush()
    try:
        import ctypes
        ctypes.CDLL(None).exit(code)
    finally:
        os._exit(code)


def _say(message: str) -> None:
    """One line on stderr in one write: the launcher merges every rank's output."""
    try:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass


def _reachable_host(record: Dict) -> str:
    """The first of the master's addresses that answers as its label: loopback on its host."""
    hosts: List[str] = discovery.hosts_of(record)
    for host in hosts:
        if discovery.probe(host, record["port"], record["label"], timeout=_PROBE_SECONDS):
            return host
    raise ConfigurationError(
        f"cannot reach the master (rank 0 on {record.get('hostname')}) at port {record['port']} on any of "
        f"{', '.join(hosts) or 'no addresses'}; set SCIENTIFIC_MS_ADVERTISE to an address of rank 0's "
        f"host that the other nodes can reach")
