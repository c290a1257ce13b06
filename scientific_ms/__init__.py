"""scientific_ms: a fault-tolerant, networked master/slave task farm.

A Python 3 re-creation of ScientificPython's
``Scientific.DistributedComputing.MasterSlave`` on Pyro5. See README.md.
"""

import importlib
from typing import TYPE_CHECKING

from .errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectionLostError,
    LabelInUseError,
    MasterNotFoundError,
    MPIProgramError,
    NoTasksPendingError,
    ProvisionError,
    RemoteError,
    RemoteTraceback,
    ScientificMSError,
    SerializationError,
    SlaveLostError,
    TaskManagerTermination,
    TaskRaisedException,
    TaskTimeLimitError,
)

if TYPE_CHECKING:   # what the names below are, for type checkers; imported on first use
    from .core.manager import TaskManager
    from .executor.executor import Executor
    from .job import initializeMasterProcess, runJob
    from .machine import getMachineInfo
    from .master.forkserver import warm_start
    from .master.journal_file import JournalError
    from .master.journal_report import JournalRecord, read_journal
    from .master.master import MasterProcess
    from .mpi_program import run_mpi_program
    from .pools import register_joblib
    from .pools.pool import Pool
    from .provision.local import LocalSlaves
    from .provision.slurm import SlurmSlaves
    from .slave.entry import startSlaveProcess
    from .slave.slave import SlaveProcess
    from .wire.payload import GlobalStateValue

#: Public names imported on first use, with the module of each: a slave, a fork server, or a
#: program that wants only the Executor imports only what it uses.
_LAZY = {
    "TaskManager": ".core.manager",
    "initializeMasterProcess": ".job", "runJob": ".job",
    "getMachineInfo": ".machine",
    "warm_start": ".master.forkserver",
    "JournalError": ".master.journal_file",
    "JournalRecord": ".master.journal_report", "read_journal": ".master.journal_report",
    "MasterProcess": ".master.master",
    "run_mpi_program": ".mpi_program",
    "LocalSlaves": ".provision.local", "SlurmSlaves": ".provision.slurm",
    "SlaveProcess": ".slave.slave", "startSlaveProcess": ".slave.entry",
    "GlobalStateValue": ".wire.payload",
    "Executor": ".executor.executor",
    "Pool": ".pools.pool", "register_joblib": ".pools",
}

__version__ = "0.1.0"

#: Set to True for debug logging (as in the original); or SCIENTIFIC_MS_DEBUG=1.
debug = False


def __getattr__(name: str):
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where, __name__), name)
    globals()[name] = value   # once
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "MasterProcess", "SlaveProcess", "runJob", "initializeMasterProcess", "startSlaveProcess",
    "GlobalStateValue", "getMachineInfo", "TaskManager", "Executor", "Pool", "register_joblib", "RemoteTraceback",
    "TaskRaisedException", "TaskManagerTermination", "ScientificMSError", "ConfigurationError",
    "SerializationError", "SlaveLostError", "TaskTimeLimitError", "NoTasksPendingError", "RemoteError",
    "LabelInUseError", "MasterNotFoundError", "AuthenticationError", "ConnectionLostError",
    "read_journal", "JournalRecord", "JournalError", "SlurmSlaves", "LocalSlaves", "ProvisionError",
    "debug", "warm_start", "run_mpi_program", "MPIProgramError",
]
