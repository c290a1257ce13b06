"""How task parameters, results and exceptions are pickled (protocol 5).

Parameters are pickled in the master when the task is requested, so an
unpicklable one fails at ``requestTask``. A :class:`GlobalStateValue`
anywhere inside them is pickled as a reference (a persistent id) and the
slave puts the value in its place, fetched once per slave.
"""

from __future__ import annotations

import io
import pickle
import sys
import traceback as traceback_module
from typing import Any, Callable, Optional, Tuple

from .errors import ConfigurationError, RemoteError, SerializationError
from .limits import check_parameters

PROTOCOL = 5


class GlobalStateValue:
    """Placeholder for a value stored once with ``MasterProcess.setGlobalState``.

    Pass it as (or inside) a task parameter; the slave's handler receives
    the value itself.
    """

    __slots__ = ("state_id", "name", "label")

    def __init__(self, state_id: int, name: str):
        self.state_id = state_id
        self.name = name
        self.label = state_label(state_id, name)

    def __repr__(self) -> str:
        return f"GlobalStateValue({self.state_id!r}, {self.name!r})"

    def __reduce__(self):
        return (GlobalStateValue, (self.state_id, self.name))


def state_label(state_id: int, name: str) -> str:
    return f"state_{state_id}_{name}"


class _ParameterPickler(pickle.Pickler):
    def __init__(self, file, known_state: Optional[Callable[[GlobalStateValue], bool]] = None):
        super().__init__(file, PROTOCOL)
        self._known_state = known_state

    def persistent_id(self, obj: Any):
        if type(obj) is GlobalStateValue:
            if self._known_state is not None and not self._known_state(obj):
                raise ConfigurationError(f"{obj!r} names a global state value that was deleted or never "
                                         f"set (setGlobalState returns the state ids)")
            return obj.label
        return None


class _ParameterUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, fetch_state: Callable[[str], Any]):
        super().__init__(io.BytesIO(data))
        self._fetch_state = fetch_state

    def persistent_load(self, label: str) -> Any:
        return self._fetch_state(label)


def dumps_parameters(tag: str, parameters: Tuple,
                     known_state: Optional[Callable[[GlobalStateValue], bool]] = None) -> bytes:
    """Pickle a task's parameters; the error names the parameter that failed.

    ``known_state`` tells whether a GlobalStateValue names a stored value.
    """
    buffer = io.BytesIO()
    try:
        _ParameterPickler(buffer, known_state).dump(parameters)
    except ConfigurationError:
        raise
    except Exception as error:
        culprit = _first_unpicklable(parameters)
        raise SerializationError(
            f"requestTask({tag!r}, ...): parameter {culprit} cannot be pickled "
            f"({type(error).__name__}: {error}); only picklable values can be sent to a slave") from error
    check_parameters(tag, buffer.tell())
    return buffer.getvalue()


def _first_unpicklable(parameters: Tuple) -> str:
    for index, value in enumerate(parameters):
        try:
            _ParameterPickler(io.BytesIO()).dump(value)
        except Exception:
            return f"#{index + 1} ({type(value).__name__})"
    return "?"


def loads_parameters(payload: bytes, fetch_state: Callable[[str], Any]) -> Tuple:
    return _ParameterUnpickler(payload, fetch_state).load()


def dumps_value(value: Any) -> bytes:
    return pickle.dumps(value, protocol=PROTOCOL)


def loads_value(data: bytes) -> Any:
    """Unpickle a value that this package pickled (shared data, stored code)."""
    return pickle.loads(data)


def dumps_exception(error: BaseException) -> bytes:
    """Pickle an exception so that it will unpickle in the master.

    Exceptions whose constructor takes other arguments than ``args`` often
    pickle fine but fail to unpickle; those, and unpicklable ones, travel
    as a RemoteError carrying the type name and message.
    """
    try:
        data = pickle.dumps(error, protocol=PROTOCOL)
        pickle.loads(data)
        return data
    except Exception:
        return pickle.dumps(RemoteError(f"{type(error).__module__}.{type(error).__qualname__}: {error}"),
                            protocol=PROTOCOL)


def format_exception(error: BaseException) -> str:
    return "".join(traceback_module.format_exception(type(error), error, error.__traceback__))


def loads_answer(payload: bytes, task_id: str) -> Any:
    """Unpickle a result or exception in the master."""
    try:
        return pickle.loads(payload)
    except Exception as error:
        raise SerializationError(
            f"the answer to task {task_id} cannot be unpickled in the master "
            f"({type(error).__name__}: {error}); a class defined only in the slave's script (its "
            f"__main__) is unknown here: define it in a module that master and slaves both import") from error


def unreadable_answer(ok: bool, traceback: str, error: Exception) -> Tuple[BaseException, str]:
    """(exception, traceback text) to report for an answer the master cannot unpickle.

    The slave's text survives: an exception becomes a RemoteError carrying
    the slave's message, with the remote traceback; a result, the error
    naming the class that could not be found.
    """
    if not ok and traceback.strip():
        message = traceback.rstrip().splitlines()[-1]
        return (RemoteError(f"{message} (the master cannot rebuild this exception: {error})"), traceback)
    return error, "(no remote traceback: the slave computed the result, the master cannot unpickle it)\n"


# ---------------------------------------------------------------- by value (the Executor's functions)

def plain_pickle(value: Any) -> Optional[bytes]:
    """``value`` pickled by the standard pickler, if the slaves can unpickle that; else None.

    Not when it refers to ``__main__`` (a slave's is not the master's), nor
    when the user asked cloudpickle to send some modules by value.
    """
    by_value = sys.modules.get("cloudpickle.cloudpickle")
    if by_value is not None and getattr(by_value, "_PICKLE_BY_VALUE_MODULES", True):
        return None
    try:
        data = pickle.dumps(value, protocol=PROTOCOL)
    except Exception:
        return None
    return None if b"__main__" in data else data


def dumps_by_value(value: Any) -> bytes:
    """Pickle ``value`` for a slave that lacks its code: by reference where the standard
    pickler can, else by value with cloudpickle (imported only then: it takes a while).
    Raises what cloudpickle raises for a value that cannot be pickled at all."""
    data = plain_pickle(value)
    if data is not None:
        return data
    import cloudpickle
    return cloudpickle.dumps(value, protocol=PROTOCOL)
