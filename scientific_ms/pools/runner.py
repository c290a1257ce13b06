"""What a Pool's tasks run on a slave: the user's function, over a chunk, after the initializer.

A Pool sends one :class:`Runner` per function to its Executor, which
pickles it once and each slave fetches it once; each task then carries
only a chunk of arguments::

    a chunk of pool.map(f, items)     Runner(f)(MAP, [x, ...])        ->  [f(x), ...]
    a chunk of pool.starmap(f, ...)   Runner(f)(STARMAP, [args, ...]) ->  [f(*args), ...]
    pool.apply(f, a, k)               Runner(f)(APPLY, a, k)          ->  f(*a, **k)

A Pool's ``initializer`` runs once in each slave process, before its first
call of that Pool (slaves are started before the Pool knows its work, and
may join later from elsewhere, so it cannot run at their start).

This module is imported by slaves: it imports nothing heavy.
"""

from __future__ import annotations

import itertools
import re
from typing import Any, Callable, Optional, Sequence, Set

from ..executor.by_value import with_source

#: What a task holds: one call, a chunk of a map, or a chunk of a starmap.
APPLY, MAP, STARMAP = 0, 1, 2

#: Tokens of the initializers this process has run (one per Pool).
_initialized: Set[str] = set()


class Initializer:
    """``function(*args)``, run once per process for the Pool named by ``token``."""

    def __init__(self, token: str, function: Callable, args: Sequence):
        self.token, self.function, self.args = token, function, tuple(args)

    def ensure(self) -> None:
        """Run the initializer unless this process already has (one that raised runs again next time)."""
        if self.token not in _initialized:
            self.function(*self.args)
            _initialized.add(self.token)

    def __reduce__(self):
        # with_source: a function of __main__ goes by value with its source lines (readable tracebacks)
        return Initializer, (self.token, with_source(self.function), self.args)


class Runner:
    """Calls ``function`` for one task of a Pool (see the module's docstring)."""

    def __init__(self, function: Callable, initializer: Optional[Initializer] = None):
        self.function = function
        self.initializer = initializer
        # The Executor names the task after this: task_manager show lists the user's function.
        name = getattr(function, "__name__", None) or type(function).__name__
        self.__name__ = re.sub(r"\W+", "_", str(name)).strip("_") or "call"

    def __call__(self, kind: int, arguments: Sequence, keywords: Optional[dict] = None) -> Any:
        if self.initializer is not None:
            self.initializer.ensure()
        if kind == APPLY:
            return self.function(*arguments, **(keywords or {}))
        if kind == MAP:
            return list(map(self.function, arguments))
        return list(itertools.starmap(self.function, arguments))

    def __reduce__(self):
        return Runner, (with_source(self.function), self.initializer)


def joblib_batch(batch: Callable[[], Any]) -> Any:
    """``batch()``: one stored function runs every joblib batch (a batch is its argument)."""
    return batch()
