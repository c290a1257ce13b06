"""A slave script's entry point: ``startSlaveProcess()`` serves the script's ``do_<tag>``
functions, and :func:`ending_with_a_message` ends a slave process on an error with a
message rather than a traceback (also for the Executor's slaves and notebooks' handlers)."""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator, Optional

from ..errors import ConfigurationError, ScientificMSError
from ..wire import discovery
from .slave import SlaveProcess


def startSlaveProcess(label: Optional[str] = None, master_host: Optional[str] = None, *,
                      wait: bool = False, wait_timeout: Optional[float] = None,
                      watchdog_period: Optional[float] = 120.0,
                      idle_timeout: Optional[float] = None, resources: Optional[object] = None) -> None:
    """Serve the ``do_<tag>`` functions of the calling script as a slave.

    Call it at the end of a slave script. ``label`` may be omitted when the
    script runs through ``task_manager slave LABEL``. ``idle_timeout``: leave
    after that many seconds without work (see :class:`SlaveProcess`). ``resources``:
    what this slave's host offers, ``"gpu=2,memory=64G"`` or a dict (docs/guide/resources.md). Errors
    end the process with a message and exit code 1.
    """
    context = discovery.current_slave_context()
    if label is None:
        if context is None:
            raise ConfigurationError("startSlaveProcess() needs the master's label, unless the "
                                     "script is run by 'task_manager slave LABEL'")
        label = context.label
    namespace = vars(sys.modules["__main__"])
    with ending_with_a_message(label):
        SlaveProcess(label, master_host, watchdog_period, wait=wait, wait_timeout=wait_timeout,
                     idle_timeout=idle_timeout, resources=resources).start(namespace)


@contextlib.contextmanager
def ending_with_a_message(label: str) -> Iterator[None]:
    """Around a slave entry point's serving: its errors end the process with a message
    (exit status 1), Ctrl-C with status 130, without a traceback."""
    try:
        yield
    except ScientificMSError as error:
        sys.stderr.write(f"scientific_ms: {error}\n")
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        sys.stderr.write(f"scientific_ms: slave of {label!r} interrupted; its tasks went back to the master\n")
        raise SystemExit(130) from None
