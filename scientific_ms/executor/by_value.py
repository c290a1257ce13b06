"""Functions an Executor sends by value (defined in ``__main__``, lambdas, closures).

Two things the pickle alone does not do well:

* cloudpickle names the code of such a function ``<dynamic-code>``, so a
  slave's traceback shows no file and no source lines. :func:`with_source`
  wraps the function with its file's name and lines; unpickling the
  wrapper on the slave (:func:`restore_source`) gives its code objects
  their file name back and puts the lines in ``linecache``, so the remote
  traceback reads as a local one does.
* a function that captures a large value (a closure cell, a global of
  ``__main__``) carries it inside the stored function: :func:`warn_if_large`
  says so once per function, naming what it captured.
"""

from __future__ import annotations

import linecache
import logging
import os
import sys
import types
from typing import Any, Dict, List, Optional, Tuple

from ..wire.pickle_by_value import plain_pickle

log = logging.getLogger(__name__)

#: The file name cloudpickle gives the code of the functions it pickles by value.
DYNAMIC_CODE = "<dynamic-code>"


class _Sourced:
    """Pickles as ``restore_source(function, file name, lines)``."""

    def __init__(self, function: Any, filename: str, lines: List[str]):
        self.function, self.filename, self.lines = function, filename, lines

    def __reduce__(self):
        return restore_source, (self.function, self.filename, self.lines)


def with_source(function: Any) -> Any:
    """``function``, wrapped with its source file's lines if it goes by value; else itself."""
    code = getattr(function, "__code__", None)
    if not isinstance(code, types.CodeType) or plain_pickle(function) is not None:
        return function
    filename = code.co_filename
    if not os.path.isfile(filename):
        return function
    lines = linecache.getlines(filename)
    return _Sourced(function, filename, lines) if lines else function


def restore_source(function: Any, filename: str, lines: List[str]) -> Any:
    """On the slave: name ``function``'s code (and that of the functions it reaches) after
    ``filename``, register its lines in ``linecache``; return the function."""
    if not os.path.isfile(filename) or linecache.getlines(filename) != lines:
        # mtime None: linecache.checkcache keeps the entry (the file may differ or not exist here)
        linecache.cache[filename] = (sum(map(len, lines)), None, list(lines), filename)
    _rename(function, filename, set())
    return function


def _rename(function: Any, filename: str, seen: set) -> None:
    if not isinstance(function, types.FunctionType) or id(function) in seen:
        return
    seen.add(id(function))
    if function.__code__.co_filename == DYNAMIC_CODE:
        function.__code__ = _renamed_code(function.__code__, filename)
    for name in function.__code__.co_names:   # helpers of the same script, sent with it
        _rename(function.__globals__.get(name), filename, seen)
    for cell in function.__closure__ or ():
        try:
            _rename(cell.cell_contents, filename, seen)
        except ValueError:   # an empty cell
            pass


def _renamed_code(code: types.CodeType, filename: str) -> types.CodeType:
    consts = tuple(_renamed_code(c, filename) if isinstance(c, types.CodeType) and c.co_filename == DYNAMIC_CODE
                   else c for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


# ---------------------------------------------------------------- large captured values

def captured(function: Any) -> Dict[str, Any]:
    """What ``function`` carries by value: its closure cells and the ``__main__`` globals it uses."""
    code = getattr(function, "__code__", None)
    if not isinstance(code, types.CodeType):
        return {}
    found: Dict[str, Any] = {}
    for name, cell in zip(code.co_freevars, function.__closure__ or ()):
        try:
            found[name] = cell.cell_contents
        except ValueError:
            pass
    namespace = getattr(function, "__globals__", {})
    if namespace is vars(sys.modules.get("__main__", types)) or getattr(function, "__module__", None) == "__main__":
        for name in code.co_names:
            if name in namespace and not isinstance(namespace[name], (types.ModuleType, type)) \
                    and not callable(namespace[name]):
                found[name] = namespace[name]
    return found


def _size(value: Any) -> int:
    size = getattr(value, "nbytes", None)
    if isinstance(size, int):
        return size
    if isinstance(value, (bytes, bytearray, memoryview, str)):
        return len(value)
    return sys.getsizeof(value)


def warn_if_large(function: Any, pickled_size: int, threshold: int, label: str) -> None:
    """Warn if ``function``'s pickle is over ``threshold`` bytes, naming the values it captured."""
    if pickled_size <= threshold:
        return
    sizes: List[Tuple[int, str]] = sorted(((_size(value), name) for name, value in captured(function).items()),
                                          reverse=True)
    names = ", ".join(f"{name!r} ({size / 1e6:.0f} MB)" for size, name in sizes[:5] if size >= 1e6) or \
        ", ".join(repr(name) for _, name in sizes[:5]) or "values it refers to"
    log.warning("Executor %r: the function %s takes %.0f MB pickled: it captures %s.\n"
                "  It is pickled into the stored function and fetched by every slave. Pass such a\n"
                "  value as an argument, or read it inside the function (from a file); a\n"
                "  MasterProcess (runJob) shares it once through setGlobalState.",
                label, _name(function), pickled_size / 1e6, names)


def _name(function: Any) -> Optional[str]:
    return getattr(function, "__qualname__", None) or repr(function)
