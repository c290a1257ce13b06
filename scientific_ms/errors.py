"""The package's exceptions: one base class, and the errors users catch."""

from __future__ import annotations


class ScientificMSError(Exception):
    """Base class of every error raised by scientific_ms."""


class TaskManagerTermination(ScientificMSError):
    """The task manager has been terminated; no more tasks or results."""


class TaskRaisedException(ScientificMSError):
    """A task handler on a slave raised an exception (or the task was lost).

    Attributes:
        task_id: the id returned by ``requestTask``.
        tag: the task's tag.
        exception: the exception object raised by the handler (unpickled in
            the master), or a :class:`RemoteError` standing in for one that
            could not be pickled.
        traceback: the remote traceback, as text.
    """

    def __init__(self, task_id: str, tag: str, exception: BaseException, traceback: str):
        super().__init__(task_id, tag, exception, traceback)
        self.task_id = task_id
        self.tag = tag
        self.exception = exception
        self.traceback = traceback
        self.__cause__ = exception

    def __str__(self) -> str:
        return (f"task {self.task_id} ({self.tag}) raised "
                f"{type(self.exception).__name__}: {self.exception}\n"
                f"Remote traceback:\n{self.traceback}")


class RemoteError(ScientificMSError):
    """Stands in for a remote exception that could not be pickled."""


class SlaveLostError(ScientificMSError):
    """A task kept losing the slaves that ran it (a poison task)."""


class TaskTimeLimitError(ScientificMSError, TimeoutError):
    """A task's handler ran longer than its time limit.

    A TimeoutError, as ``concurrent.futures`` users expect of a time limit.
    """


class RemoteTraceback(ScientificMSError):
    """The ``__cause__`` of an exception re-raised by an Executor's future: the slave's traceback, as text."""

    def __init__(self, traceback: str):
        super().__init__(traceback)
        self.traceback = traceback

    def __str__(self) -> str:
        return f"\n\"\"\"\n{self.traceback.rstrip()}\n\"\"\""


class NoTasksPendingError(ScientificMSError, LookupError):
    """``retrieveResult`` was called with no matching task outstanding.

    Waiting would never end, so the call fails at once instead.
    """


class ConfigurationError(ScientificMSError, ValueError):
    """A bad argument, option or environment variable."""


class LabelInUseError(ScientificMSError):
    """Another live master already serves this label."""


class MasterNotFoundError(ScientificMSError):
    """No master could be found for a label, or it cannot be reached."""

    #: True when the master's host refused the connection: nobody listens at that address now.
    refused: bool = False


class ConnectionDroppedError(MasterNotFoundError):
    """The master closed a new connection before its verdict on our secret: it ended,
    or it was too busy (it drops the oldest of too many connections still authenticating)."""


class AuthenticationError(ScientificMSError):
    """The peer does not know this master's secret (or is not a master)."""


class UnknownProcessError(ScientificMSError, KeyError):
    """A process id the task manager does not know (it left or was declared dead)."""


class SerializationError(ScientificMSError, TypeError):
    """A value that has to cross the network cannot be pickled or unpickled."""


class ConnectionLostError(ScientificMSError, ConnectionError):
    """The connection to the master broke, or the master cannot be reached."""


class ProvisionError(ScientificMSError):
    """A batch system refused a slave job (its own message is in the text), or cannot be reached."""


class MPIProgramError(ScientificMSError):
    """An MPI program started by ``run_mpi_program`` failed: a rank exited non-zero or was
    killed (its launcher then ended the others), or it ran past its timeout.

    Attributes:
        command: the command line, launcher included.
        returncode: the launcher's exit status (negative: the signal that killed it;
            None: it was killed for its timeout).
        stderr: what the program wrote to its standard error.
    """

    def __init__(self, message: str, command=(), returncode=None, stderr: str = ""):
        super().__init__(message, command, returncode, stderr)   # all of it, so that it pickles
        self.message = message
        self.command = list(command)
        self.returncode = returncode
        self.stderr = stderr

    def __str__(self) -> str:
        return self.message
