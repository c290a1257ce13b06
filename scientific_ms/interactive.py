"""Notebooks and REPLs: slave code that travels by value, and a label taken back from this process.

A script's master stores the script's source, and its slaves run it again
(``master/launch.py``). A Jupyter kernel, a REPL or ``python -c`` has no
script file: there, ``runJob`` stores the slave *class* pickled by value
(cloudpickle pickles what ``__main__`` defines by value, as it does for an
Executor's functions, ``executor/calls.py``), and ``initializeMasterProcess``
stores the handler functions given as ``handlers=``. The stored code is a
two-line program that calls :func:`serve_by_value`; ``task_manager slave
LABEL`` and the master's spawned slaves run it as they run a script.

Running a notebook cell again must not fail because the cell's earlier
master still holds the label: :func:`end_earlier_master` ends a master of
the same label that this very process started (through ``runJob`` or
``initializeMasterProcess``), with a log line saying so.
"""

from __future__ import annotations

import atexit
import base64
import logging
import sys
import weakref
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Union

from .errors import ConfigurationError, SerializationError
from .master.launch import main_script
from .wire import discovery, leaving
from .wire.payload import loads_value
from .wire.pickle_by_value import dumps_by_value

log = logging.getLogger(__name__)

#: What ``initializeMasterProcess(handlers=...)`` takes: {tag: function} or functions named after their tag.
Handlers = Union[Mapping[str, Callable], Iterable[Callable]]

#: The argv that slaves running code stored by value see (there is no script to name).
BY_VALUE_ARGV = ["scientific_ms-by-value"]

#: Stored code above this size (bytes, pickled) gets a warning: it is fetched by every slave.
LARGE_CODE = 16 * 1024 * 1024

#: The masters that runJob and initializeMasterProcess started in this process, by label.
_masters: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()


def is_interactive() -> bool:
    """True where the program has no script file: a notebook's kernel, a REPL, ``python -c``."""
    return main_script() is None


# ---------------------------------------------------------------- the master's side

def handler_table(handlers: Handlers) -> Dict[str, Callable]:
    """{tag: function} from ``handlers``: a mapping, or functions whose name is the tag
    (``do_<tag>`` names the tag too, as in a slave script)."""
    if isinstance(handlers, Mapping):
        table = dict(handlers)
    else:
        try:
            functions = list(handlers)
        except TypeError:
            raise ConfigurationError(f"handlers: a dict {{tag: function}} or a list of functions, "
                                     f"got {handlers!r}") from None
        table = {}
        for function in functions:
            name = getattr(function, "__name__", None)
            if not isinstance(name, str) or not name.isidentifier():
                raise ConfigurationError(f"handlers: {function!r} has no name to serve as its tag; "
                                         f"give handlers as a dict {{tag: function}}")
            table[name[3:] if name.startswith("do_") and len(name) > 3 else name] = function
    if not table:
        raise ConfigurationError("handlers: no handler given")
    for tag, function in table.items():
        if not (isinstance(tag, str) and tag.isidentifier()):
            raise ConfigurationError(f"handlers: the tag {tag!r} is not an identifier (tasks are "
                                     f"requested as requestTask(tag, ...))")
        if not callable(function):
            raise ConfigurationError(f"handlers: the handler of {tag!r} is a {type(function).__name__}, "
                                     f"not a function")
    return table


def slave_class_code(slave_class: type, watchdog_period: Optional[float]) -> str:
    """The stored slave code of ``runJob`` without a script: run ``slave_class`` by value."""
    return _code(("class", slave_class, watchdog_period), f"the slave class {slave_class.__qualname__}")


def handlers_code(handlers: Mapping[str, Callable], watchdog_period: Optional[float] = 120.0) -> str:
    """The stored slave code of ``initializeMasterProcess(handlers=...)``: serve them by value."""
    return _code(("handlers", dict(handlers), watchdog_period), f"the handlers {sorted(handlers)}")


def _code(what: tuple, name: str) -> str:
    from .executor.calls import import_paths  # where the slaves find the modules the code imports
    try:
        pickled = dumps_by_value(what)
    except Exception as error:
        raise SerializationError(
            f"{name} cannot be pickled to be sent to the slaves ({type(error).__name__}: {error}); "
            f"in a notebook the slaves get the code by value: what it refers to must be picklable "
            f"(open files, locks and connections in its class attributes or globals are not)") from error
    if len(pickled) > LARGE_CODE:
        log.warning("%s: %.0f MB pickled, with the notebook's values they use (globals, closures); "
                    "every slave fetches all of it. Pass large values as task parameters, "
                    "or share them once with setGlobalState.", name, len(pickled) / 1e6)
    first, last = import_paths()
    return ("from scientific_ms.interactive import serve_by_value\n"
            f"serve_by_value({first!r}, {last!r}, {base64.b64encode(pickled).decode()!r})\n")


def remember(master: Any) -> None:
    """Note ``master`` as this process's master of its label (see :func:`end_earlier_master`)."""
    _masters[master.label] = master


def end_earlier_master(label: str) -> None:
    """End the master of ``label`` that runJob or initializeMasterProcess started earlier in this
    process (a notebook cell run again), so that the new one can take the label."""
    earlier = _masters.pop(label, None)
    if earlier is None or earlier.task_manager.terminated:   # gone already: shut down, or its job ended
        return
    log.warning("label %r: ending this process's earlier master of that label (a cell run again?) "
                "to start the new one; its slaves leave", label)
    earlier.shutdown()
    atexit.unregister(earlier.shutdown)   # initializeMasterProcess's: the master is gone


# ---------------------------------------------------------------- the slave's side

def serve_by_value(first: Iterable[str], last: Iterable[str], pickled: str) -> None:
    """Run the slave code stored by value (see :func:`slave_class_code`, :func:`handlers_code`)
    for the master of the current slave context. Errors end the process with a message."""
    from .executor.calls import add_import_paths
    from .slave.entry import ending_with_a_message
    from .slave.slave import SlaveProcess
    context = discovery.current_slave_context()
    if context is None:
        raise ConfigurationError("serve_by_value() runs under 'task_manager slave LABEL' or in a slave "
                                 "spawned by a master; nothing says which master to serve")
    add_import_paths(first, last)
    try:
        kind, code, watchdog_period = loads_value(base64.b64decode(pickled))
    except Exception as error:
        leaving.refuse()   # a replacement would fail the same way
        sys.stderr.write(f"scientific_ms: the slave code of {context.label!r}, sent by value, cannot be "
                         f"loaded here ({type(error).__name__}: {error}).\n  A module it refers to must be "
                         f"importable in the slave too (installed, or in the master's working directory)\n")
        raise SystemExit(1) from None
    with ending_with_a_message(context.label):
        if kind == "class":
            code(context.label, watchdog_period=watchdog_period).start()
        else:
            SlaveProcess(context.label, watchdog_period=watchdog_period).start(
                {f"do_{tag}": function for tag, function in code.items()})
