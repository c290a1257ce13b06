"""scientific_ms: a fault-tolerant, networked master/slave task farm.

A Python 3 re-creation of ScientificPython's
``Scientific.DistributedComputing.MasterSlave`` on Pyro5. See README.md.
"""

from .core.manager import TaskManager
from .errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectionLostError,
    LabelInUseError,
    MasterNotFoundError,
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
from .job import initializeMasterProcess, runJob
from .machine import getMachineInfo
from .master.forkserver import warm_start
from .master.journal_file import JournalError
from .master.journal_report import JournalRecord, read_journal
from .master.master import MasterProcess
from .provision.local import LocalSlaves
from .provision.slurm import SlurmSlaves
from .slave.slave import SlaveProcess, startSlaveProcess
from .wire.payload import GlobalStateValue

__version__ = "0.1.0"

#: Set to True for debug logging (as in the original); or SCIENTIFIC_MS_DEBUG=1.
debug = False


def __getattr__(name: str):
    # Imported on first use: slave processes start faster without concurrent.futures (nor
    # multiprocessing, nor joblib).
    if name == "Executor":
        from .executor.executor import Executor
        return Executor
    if name == "Pool":
        from .pools.pool import Pool
        return Pool
    if name == "register_joblib":
        from .pools import register_joblib
        return register_joblib
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MasterProcess", "SlaveProcess", "runJob", "initializeMasterProcess", "startSlaveProcess",
    "GlobalStateValue", "getMachineInfo", "TaskManager", "Executor", "Pool", "register_joblib", "RemoteTraceback",
    "TaskRaisedException", "TaskManagerTermination", "ScientificMSError", "ConfigurationError",
    "SerializationError", "SlaveLostError", "TaskTimeLimitError", "NoTasksPendingError", "RemoteError",
    "LabelInUseError", "MasterNotFoundError", "AuthenticationError", "ConnectionLostError",
    "read_journal", "JournalRecord", "JournalError", "SlurmSlaves", "LocalSlaves", "ProvisionError",
    "debug", "warm_start",
]
