"""A slave's second chance: waiting for a journaled master that vanished to be started again.

A master that keeps a journal can be killed and run again with the same
command; it then resumes the job. Slaves it did not start itself (started
by hand, by ``task_manager slave``, or under mpiexec) need not die with it:
for a grace period they look for a master of the same label and, when one
appears, register with it and serve on. Slaves the master spawned exit as
before: the restarted master spawns its own.

How a slave knows: a journaled master stores the shared data item
``journaled_master`` (its PID and host); the slave reads it once, right
after registering. A master without a journal stores nothing, and its
slaves keep today's behaviour (grace 0) unless ``rejoin_grace`` or
``SCIENTIFIC_MS_REJOIN_GRACE`` says otherwise. The restarted master reads
its secret from the journal, so every slave's secret still opens it.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Optional

from .. import settings
from ..errors import ConnectionLostError, MasterNotFoundError
from ..wire import leaving
from ..wire.client import MasterConnection, connect
from ..wire.payload import loads_value
from .session import Session

log = logging.getLogger(__name__)

#: The shared data item by which a journaled master says so.
JOURNALED_MASTER = "journaled_master"
#: How long to wait for the old session's heartbeat thread to end.
_WATCH_JOIN_SECONDS = 5.0


def grace_for(connection: MasterConnection, explicit: Optional[float]) -> float:
    """Seconds to wait for the master at ``connection`` should it vanish."""
    found, data = connection.call("get_data", JOURNALED_MASTER, timeout=30.0)
    info = loads_value(data) if found else None
    spawned = leaving.spawned_by_master() or info is not None and info.get("pid") == os.getppid()
    if info is not None and spawned and info.get("host") == socket.gethostname():
        return 0.0   # spawned by this master: the restarted master starts its own slaves
    if explicit is not None:
        return explicit
    return settings.rejoin_grace(None, journaled=info is not None)


def wait_for_restarted_master(slave, session: Session, error: ConnectionLostError) -> Optional[MasterConnection]:
    """After ``slave`` lost its master: a connection to its restarted master, or None.

    Waits up to ``session.rejoin_grace``, saying in its log why and how long;
    reads the slave's public ``label``, ``master_host``, ``key_file`` and
    ``process_id``. The caller serves the new master in ``session.renewed()``.
    """
    grace = session.rejoin_grace
    if not grace:
        return None
    if session.watch_thread is not None:
        session.watch_thread.join(_WATCH_JOIN_SECONDS)
    log.warning("slave %s of %r: %s; its master keeps a journal, so this slave waits up to %.0f s "
                "for it to be started again (rejoin_grace, SCIENTIFIC_MS_REJOIN_GRACE), then exits",
                slave.process_id, slave.label, error, grace)
    try:
        connection = connect(slave.label, slave.master_host, key_file=slave.key_file,
                             wait=True, wait_timeout=grace)
    except MasterNotFoundError:
        log.error("slave %s of %r: no master came back within %.0f s; exiting",
                  slave.process_id, slave.label, grace)
        return None
    log.warning("slave of %r found its master again at %s; joining it", slave.label, connection.address)
    return connection
