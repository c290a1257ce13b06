"""The slave that runs an Executor's calls (``calls.py`` says how they travel).

Imported only where a slave runs: by the code an Executor stores
(``calls.runner_source``), on MPI ranks and in the warm template; a master
never needs it.
"""

from __future__ import annotations

import itertools
from typing import Any, Dict, Optional, Sequence

from ..core.tasks import ANY_TAG
from ..errors import ConfigurationError
from ..slave.entry import ending_with_a_message
from ..slave.slave import SlaveProcess
from ..wire import discovery
from ..wire.payload import loads_value
from ..wire.pickle_by_value import dumps_by_value
from .calls import CALL, MAP, add_import_paths


class FunctionSlave(SlaveProcess):
    """A slave that runs whatever functions an Executor sends; it needs no code of the user's."""

    def start(self, namespace: Optional[Dict[str, object]] = None) -> None:
        """Serve until the master finishes (``namespace`` is ignored: every tag is served)."""
        super().start({f"do_{ANY_TAG}": self._call})

    def _call(self, function_label: str, kind: int, arguments: Sequence, keywords: Optional[dict] = None) -> Any:
        function = self._fetch_state(function_label)   # cached: fetched once per slave
        if not callable(function):
            raise TypeError(f"the Executor's function {function_label!r} is a {type(function).__name__}, "
                            f"not a callable: it was stored under a label of its own by other code")
        if kind == CALL:
            return function(*arguments, **(keywords or {}))
        if kind == MAP:
            return list(map(function, arguments))
        return list(itertools.starmap(function, arguments))

    def _load_parameters(self, payload) -> tuple:
        # An Executor pickles its calls with the standard pickler or cloudpickle (dumps_call):
        # no persistent ids, no out-of-band buffers, so the C unpickler needs no Python hooks.
        if type(payload) is bytes:
            return loads_value(payload)
        return super()._load_parameters(payload)

    def _dump_result(self, result: object) -> bytes:
        # by value if need be: e.g. an instance of a class that came by value with its function
        return dumps_by_value(result)



def serve_functions(first: Sequence[str] = (), last: Sequence[str] = (),
                    watchdog_period: Optional[float] = 120.0) -> None:
    """Run a FunctionSlave for the master of the current slave context.

    ``first`` and ``last``: folders put before and after this process's
    sys.path (see :func:`import_paths`). The context is set by
    ``task_manager slave LABEL``, by a spawning Executor and on MPI ranks.
    Errors end the process with a message.
    """
    context = discovery.current_slave_context()
    if context is None:
        raise ConfigurationError("serve_functions() runs under 'task_manager slave LABEL', in a slave "
                                 "spawned by an Executor, or on an MPI rank; nothing says which master to serve")
    add_import_paths(first, last)
    with ending_with_a_message(context.label):
        FunctionSlave(context.label, watchdog_period=watchdog_period).start()
