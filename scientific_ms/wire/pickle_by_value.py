"""Pickling a value for a slave that may lack its code (an Executor's functions and calls,
the code ``interactive.py`` sends): by reference where the standard pickler can, else by
value with cloudpickle, imported only then."""

from __future__ import annotations

import pickle
import sys
from typing import Any, Optional

from .payload import PROTOCOL


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
