"""scientific_ms: a fault-tolerant, networked master/slave task farm.

A Python 3 re-creation of ScientificPython's
``Scientific.DistributedComputing.MasterSlave`` on Pyro5. See README.md.
"""

from .errors import (AuthenticationError, ConfigurationError, ConnectionLostError, LabelInUseError,
                     MasterNotFoundError, NoTasksPendingError, RemoteError, RemoteTraceback,
                     ScientificMSError, SerializationError, SlaveLostError, TaskManagerTermination,
                     TaskRaisedException, TaskTimeLimitError)
from .executor import Executor
from .job import initializeMasterProcess, runJob
from .machine import getMachineInfo
from .manager import TaskManager
from .master import MasterProcess
from .payload import GlobalStateValue
from .slave import SlaveProcess, startSlaveProcess

__version__ = "0.1.0"

#: Set to True for debug logging (as in the original); or SCIENTIFIC_MS_DEBUG=1.
debug = False

__all__ = [
    "MasterProcess", "SlaveProcess", "runJob", "initializeMasterProcess", "startSlaveProcess",
    "GlobalStateValue", "getMachineInfo", "TaskManager", "Executor", "RemoteTraceback",
    "TaskRaisedException", "TaskManagerTermination", "ScientificMSError", "ConfigurationError",
    "SerializationError", "SlaveLostError", "TaskTimeLimitError", "NoTasksPendingError", "RemoteError",
    "LabelInUseError", "MasterNotFoundError", "AuthenticationError", "ConnectionLostError",
    "debug",
]
