"""Function calls on the farm: how an Executor's tasks are pickled (the slave that runs them
is ``function_slave.py``, imported only in slaves).

A call travels as a task whose tag names its function (so that
``task_manager show`` lists the functions waiting and running) and whose
parameters are small::

    master (Executor)                          slave (FunctionSlave)
    -----------------                          ---------------------
    each distinct function: pickled once,
    stored as shared data under a label  --->  fetched once per slave, cached
    a call: (label, CALL, args, kwargs)  ---->  function(*args, **kwargs)
    a map chunk: (label, MAP, [x, ...])  ---->  list(map(function, chunk))
      or (label, STARMAP, [args, ...])   ---->  list(starmap(function, chunk))

Functions and arguments are pickled with the standard pickler (C speed);
only what it cannot pickle, or what refers to ``__main__`` (which the slave
does not share), goes through cloudpickle, as lambdas and closures must. The
slave registers with ``ANY_TAG``: it runs every tag, since it needs no code
of the user's.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import re
import sys
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Tuple

from ..errors import SerializationError
from ..wire.pickle_by_value import dumps_by_value
from . import by_value

log = logging.getLogger(__name__)

#: Shared-data labels of stored functions start with this.
FUNCTION_PREFIX = "function_"

#: What a task holds: one call, or a chunk of a map over one iterable or several.
CALL, MAP, STARMAP = 0, 1, 2


def tag_for(function: Any) -> str:
    """A task tag naming ``function``: its name made an identifier (``<lambda>`` -> ``lambda``)."""
    target = function
    while isinstance(target, functools.partial):
        target = target.func
    name = getattr(target, "__name__", None) or type(target).__name__
    tag = re.sub(r"\W+", "_", str(name)).strip("_") or "call"
    return tag if tag.isidentifier() else f"f_{tag}"


def dumps_function(function: Any) -> bytes:
    """Pickle a function once: by reference if importable, by value otherwise (cloudpickle).

    cloudpickle is imported only when needed: it takes a while.
    """
    try:
        return dumps_by_value(by_value.with_source(function))   # by value: with its source lines
    except Exception as error:
        raise SerializationError(
            f"the function {function!r} cannot be pickled ({type(error).__name__}: {error}); "
            f"an Executor sends only picklable callables to its slaves") from error


def dumps_call(tag: str, parameters: Tuple) -> bytes:
    """Pickle a task's parameters; an unpicklable argument raises SerializationError naming it."""
    try:
        return dumps_by_value(parameters)
    except Exception as error:
        raise SerializationError(
            f"submit({tag}, ...): {_culprit(parameters)} cannot be pickled "
            f"({type(error).__name__}: {error}); only picklable values can be sent to a slave") from error


def _culprit(parameters: Tuple) -> str:
    """Names the first argument that cannot be pickled: 'argument #2 (lock)' or "keyword argument 'x'"."""
    _, kind, arguments, *rest = parameters
    if kind == CALL:
        candidates = [(f"argument #{i + 1}", value) for i, value in enumerate(arguments)]
        candidates += [(f"keyword argument {name!r}", value) for name, value in rest[0].items()]
    elif kind == MAP:
        candidates = [(f"map item {n + 1}", value) for n, value in enumerate(arguments)]
    else:
        candidates = [(f"argument #{i + 1} of map item {n + 1}", value)
                      for n, items in enumerate(arguments) for i, value in enumerate(items)]
    for name, value in candidates:
        try:
            dumps_by_value(value)
        except Exception:
            return f"{name} ({type(value).__name__})"
    return "an argument"


def chunks(iterables: Sequence[Iterable], size: int) -> Iterator[Tuple[int, List]]:
    """``(MAP, items)`` or ``(STARMAP, argument tuples)``, ``size`` at a time (the last may be shorter)."""
    kind, items = (MAP, iter(iterables[0])) if len(iterables) == 1 else (STARMAP, zip(*iterables))
    return ((kind, chunk) for chunk in iter(lambda: list(itertools.islice(items, size)), []))


def runner_source(first: Sequence[str], last: Sequence[str], watchdog_period: Optional[float]) -> str:
    """The slave code an Executor stores: ``task_manager slave LABEL`` and spawned slaves run it."""
    return ("from scientific_ms.executor.function_slave import serve_functions\n"
            f"serve_functions({list(first)!r}, {list(last)!r}, {watchdog_period!r})\n")


def import_paths() -> Tuple[List[str], List[str]]:
    """Where the slaves look for the modules that functions and arguments refer to.

    First, ahead of their own path: the master's script folder and working
    directory (the user's code). Last, behind it: every other folder on the
    master's sys.path, so that what the master added is found, but never in
    place of a slave's own installed packages.
    """
    first = [os.getcwd()]
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None)
    if script and getattr(main, "__spec__", None) is None and os.path.isfile(script):
        first.insert(0, os.path.dirname(os.path.abspath(script)))
    last = [os.path.abspath(path) for path in sys.path if path and os.path.isdir(path)]
    return first, [path for path in dict.fromkeys(last) if path not in first]


def add_import_paths(first: Iterable[str], last: Iterable[str]) -> None:
    """Put the folders of :func:`import_paths` before and after this process's sys.path."""
    for path in reversed(list(first)):
        if os.path.isdir(path) and path not in sys.path:
            sys.path.insert(0, path)
    sys.path.extend(path for path in last if os.path.isdir(path) and path not in sys.path)
