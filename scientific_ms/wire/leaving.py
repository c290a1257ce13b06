"""How a slave that the master spawned tells it that it leaves on purpose.

Both ends of that pipe are here, beside the rest of what passes between a
master and its slaves: the master's supervisor (``master/supervisor.py``)
holds a :class:`LeavingChannel`, the slave (``slave/slave.py``, its keeper,
``cli/commands.py``) calls the functions below.

The master's supervisor replaces a spawned slave that dies, not one that
leaves on purpose (its ``terminationTest`` is true, or the master finished).
The exit status cannot tell them apart: a handler may end its process with
``sys.exit(0)`` or ``os._exit(0)`` in the middle of a task. So each child
gets the write end of a pipe (its number in ``SCIENTIFIC_MS_LEAVING_FD``)
and writes one byte there when it ends cleanly; a child that exits without
writing it died, whatever its status. A child whose script refuses to serve
(it would start a master of its own: ``job.py``) writes another byte, so
that the supervisor starts no replacement, which would refuse too.

::

    supervisor (master)                       spawned slave
    LeavingChannel()  -- pipe, pass_fds -->   claim()      at start-up
    ...                                       announce()   when it ends cleanly
                                              refuse()     when its script refuses to serve
    outcome()         <-- one byte, or EOF --
"""

from __future__ import annotations

import contextlib
import os
from typing import Dict, Optional, Tuple

ENVIRONMENT = "SCIENTIFIC_MS_LEAVING_FD"
#: What a child writes: it leaves on purpose, or it refuses to serve. Nothing: it died.
LEFT, REFUSED = b"1", b"R"

_claimed: Optional[int] = None
_spawned = False


class LeavingChannel:
    """The supervisor's end of one child's pipe."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)

    def child_environment(self, env: Dict[str, str]) -> Dict[str, str]:
        return dict(env, **{ENVIRONMENT: str(self._write)})

    @property
    def pass_fds(self) -> Tuple[int]:
        return (self._write,)

    def started(self) -> None:
        """The child holds the write end now; ours must close, or EOF never comes."""
        os.close(self._write)

    def outcome(self) -> Optional[bytes]:
        """After the child exited: LEFT, REFUSED, or None (it died). Closes the pipe."""
        try:
            said = os.read(self._read, 16)
        except BlockingIOError:   # a grandchild still holds the write end, and wrote nothing
            return None
        finally:
            os.close(self._read)
        return REFUSED if REFUSED in said else LEFT if said else None

    def close(self) -> None:
        """When the child could not be started."""
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)


def claim() -> None:
    """In the slave process, before any user code runs: take the pipe out of the
    environment, so that processes the slave starts neither see nor inherit it."""
    global _claimed, _spawned
    value = os.environ.pop(ENVIRONMENT, None)
    if value is None:
        return
    _spawned = True
    try:
        fd = int(value)
        os.set_inheritable(fd, False)
    except (ValueError, OSError):
        return
    _claimed = fd


def spawned_by_master() -> bool:
    """True in a slave process that a master's supervisor started (after ``claim()``)."""
    return _spawned


def announce() -> None:
    """The slave ends on purpose: tell the supervisor that spawned it, if any."""
    _say(LEFT)


def refuse() -> None:
    """The slave's script refuses to serve (its error says why): tell the supervisor
    that spawned it, if any, not to start another."""
    _say(REFUSED)


def _say(what: bytes) -> None:
    global _claimed
    fd, _claimed = _claimed, None
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.write(fd, what)
        os.close(fd)


def forget() -> None:
    """In a process forked from the slave (its keeper): close our copy of the pipe unwritten."""
    global _claimed
    fd, _claimed = _claimed, None
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
