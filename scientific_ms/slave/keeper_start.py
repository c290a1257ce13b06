"""How a keeper comes to be (``keeper.py`` says what it does): forked by a lone slave at
``start()`` (:func:`become_lone_keeper`), or as the process of ``task_manager slave LABEL
-n N`` (:func:`run_keeper`)."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from multiprocessing.connection import Connection
from typing import Union

from .. import settings
from ..wire import leaving
from ..wire.client import MasterConnection, forget_handed_over
from .keeper import Keeper
from .keeper_lives import flush_output
from .keeper_workers import Worker
from .worker_link import WorkerLink

log = logging.getLogger(__name__)


def become_lone_keeper(label: str) -> WorkerLink:
    """Fork this process's keeper (see the module docstring); returns this worker's link.

    The keeper never returns from here, but the replacements it forks do:
    each continues as the worker, with its own link.
    """
    ours, theirs = socket.socketpair()
    flush_output()
    parent = os.getpid()
    pid = os.fork()
    if pid != 0:
        theirs.close()
        return WorkerLink(Connection(ours.detach()), pid, keeper_is_child=True)
    ours.close()
    code = 1
    try:
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)   # a killpg of the worker's group (its launcher's) spares its keeper
        leaving.forget()       # the supervisor's pipe is the worker's to write
        forget_handed_over()   # the worker's connection to be (task_manager slave), not ours
        restarts = settings.slave_restarts(None)   # for the replacements it forks itself
        keeper = Keeper(label, lone=True, replace_killed=not leaving.spawned_by_master(),
                        max_restarts=restarts)
        keeper.install_signals()
        keeper.lives.add(Worker(parent, Connection(theirs.detach()), False, restarts))
        result = keeper.run()
        if isinstance(result, WorkerLink):
            return result   # a replacement worker: it serves
        code = result
    except BaseException:   # never unwind into the slave's code: this process is the keeper
        log.exception("the keeper of %r failed", label)
    flush_output()
    os._exit(code)


def run_keeper(label: str, connection: MasterConnection, count: int, max_restarts: int) -> Union[int, WorkerLink]:
    """``task_manager slave LABEL -n N``: keep ``count`` workers; the exit code in the
    keeper, a :class:`WorkerLink` in each worker (which then runs the slave code)."""
    keeper = Keeper(label, lone=False, connection=connection, count=count, max_restarts=max_restarts)
    keeper.install_signals()
    return keeper.run()
