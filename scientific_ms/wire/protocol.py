"""What crosses the wire between a master and its slaves: names, statuses, records.

The path of one task, master to slave and back, and the keeper's heartbeats
beside it: ``docs/architecture.md`` ("The path of one task").

Every call is authenticated before Pyro5 reads a byte (``auth.py``).
Payloads are pickled by ``payload.py`` and carried as bytes by Pyro5's
marshal serializer, which passes bytes through without base64; marshal
carries plain tuples, so the records below travel as tuples with their
fields in order. This module is their one codec: :func:`tasks_to_wire`
and :func:`answers_to_wire` make the tuples, :func:`tasks_from_wire` and
:func:`answers_from_wire` make :class:`TaskMessage` and :class:`Answer`
records of them again; everywhere else they are read by field name.
Large buffers of a payload (``payload.Pickled``) travel out of band, right
after the ``exchange`` message that names them (``buffers.py``).
"""

from __future__ import annotations

import marshal
import os
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from .buffers import payload_from_wire, payload_to_wire
from .payload import Payload

#: The Pyro5 object name of a master's task manager is this prefix plus its label.
OBJECT_PREFIX = "TaskManager."


def object_name(label: str) -> str:
    return OBJECT_PREFIX + label


# Statuses returned to slaves (exceptions do not cross marshal cleanly).
OK = "ok"
TERMINATED = "terminated"   # the master has finished: the slave exits
UNKNOWN = "unknown"         # the master declared this process dead: register again
REVOKED = "revoked"         # (agent_watch) tasks handed to this slave went to an idle one: exchange now

#: Why a slave says goodbye on its own (``unregister``'s third argument; ``slave/departure.py``):
#: each is counted as ``left_<reason>`` in the status.
LEFT_IDLE = "idle"
LEFT_SIGTERM = "sigterm"
LEAVE_REASONS = (LEFT_IDLE, LEFT_SIGTERM)

#: The calls a master serves (``server.TaskManagerService``):
#:
#: ``register(role, info, tags, watchdog_period) -> (status, process_id)``
#: ``unregister(process_id, abandoned=[], reason=None)``   a goodbye: held tasks go back
#:     unblamed, except the assignments it started and gave up (a loss each); ``reason``:
#:     "idle" or "sigterm" when a slave leaves on its own (``departure.py``), counted in the
#:     status as ``left_idle`` / ``left_sigterm``; older slaves send one or two arguments
#: ``register`` info: ``machine.process_info()``, with ``slurm`` (job ids) in a SLURM job
#: ``exchange(process_id, answers, max_tasks, wait[, queue_seconds[, output]])``
#:     ``-> (status, [TaskMessage], [revoked assignment])``
#:     revoked: tasks handed to this slave earlier, not to be started (another slave has them);
#:     each TaskMessage carries the GPU ids its task was given, or None (protocol 5), and
#:     the cores it holds, or None when it holds no resources (protocol 6);
#:     queue_seconds: the work the slave wants queued behind the task it runs, which covers
#:     its round trip (``core/flow.py``); a slave that leaves it out (or sends None) gets the
#:     fixed target; output: ([line], dropped), what its handlers printed and logged since
#:     its last call and how many lines it dropped (``slave/output.py``, ``core/output.py``)
#: ``exchange([(process_id, answers, max_tasks, queue_seconds, output), ...], wait)``
#:     ``-> [(status, [TaskMessage], [revoked assignment]), ...]``   the batch form, a keeper's
#:     relay's (``slave/relay.py``): the exchanges of several workers in one call, replies in
#:     order; with ``wait`` > 0 it returns once one of them gets a task
#: ``get_data(label) -> (found, payload or reason)``  shared data, stored code
#: ``status(wait=0, failures=False) -> dict``    what ``task_manager show`` prints; ``wait`` > 0:
#:                                               answered when the job ends, or after ``wait`` s;
#:     ``failures``: also the last failed tasks with their tracebacks (the dashboard's; protocol 4)
#:
#: A keeper (``keeper.py``: a process that runs no user code and keeps the slave
#: processes, its workers, that do) registers as role "agent" (a lone slave's keeper
#: does not register), and a worker it forked registers with ``info["agent"]`` = its id:
#:
#: ``agent_watch(agent_id, [(process_id, stats or None)], timeout) -> (status, [unknown ids])``
#:     the heartbeats of its workers (None: stopped), then a wait for the end or a revocation
#: ``lost(process_id, reason, running=[]) -> bool``  one of its workers died: reschedule now,
#:                                               blaming only the assignment it had started
CALLS = frozenset({"register", "unregister", "exchange", "get_data", "status", "agent_watch", "lost"})

#: Calls whose arguments, and reply, travel packed into one marshal string (:func:`pack`):
#: Pyro5 rebuilds every list, tuple and dict of a message element by element after
#: unmarshalling it (to revive classes, which these calls never carry); for the calls
#: that carry every answer and every task that walk cost more per task than storing
#: the answer (the master's side) or running a small task (the slave's), and for the
#: heartbeats of a keeper of many workers. One bytes value is passed through as it is.
PACKED_CALLS = frozenset({"exchange", "agent_watch"})


def pack(values: tuple) -> bytes:
    return marshal.dumps(values)


def unpack(packed: bytes) -> tuple:
    """The arguments or reply of a packed call (the connection is authenticated before
    any byte is read, and Pyro5 itself unmarshals every message: the same trust)."""
    if not isinstance(packed, bytes):
        raise TypeError(f"a packed call carries one bytes value, got {type(packed).__name__}")
    return marshal.loads(packed)


def payload_size(payload: Optional[Payload]) -> int:
    """The bytes of a payload, its buffers included (0 for none)."""
    return len(payload) if payload is not None else 0


class TaskMessage(NamedTuple):
    """A task as the master sends it to a slave."""
    task_id: str
    assignment: int              # this hand-out's number; its answer names it
    tag: str
    payload: Payload             # pickled parameters (a payload.Pickled when buffers travel beside)
    time_limit: Optional[float]  # seconds, or None
    gpus: Optional[Tuple[int, ...]] = None   # the GPU ids it was given (core/resources.py), or None
    cores: Optional[int] = None              # the cores it holds, if it holds resources (protocol 6)


class Answer(NamedTuple):
    """A slave's answer to one task."""
    task_id: str
    assignment: int
    ok: bool          # False: payload is a pickled exception
    payload: Payload  # pickled result or exception (a payload.Pickled when buffers travel beside)
    traceback: str    # the remote traceback as text ("" for a result)
    seconds: Optional[float] = None   # how long the handler ran (None: not measured)


def tasks_to_wire(tasks: Iterable) -> Tuple[List[tuple], list]:
    """Tasks (anything with the fields of :class:`TaskMessage`) as plain tuples for
    marshal, and the out-of-band buffers that follow them (``buffers.py``)."""
    buffers: list = []
    records = [(t.task_id, t.assignment, t.tag, payload_to_wire(t.payload, buffers), t.time_limit, t.gpus,
                t.cores)
               for t in tasks]
    return records, buffers


#: Where the payload is in the tuple of a TaskMessage and of an Answer (this codec's own business).
_PAYLOAD = 3


def _name_buffers(records: Sequence[tuple]) -> bool:
    """Does a payload among ``records`` (as they crossed the wire) stand for a
    ``payload.Pickled``, its buffers following the message?"""
    return any(type(record[_PAYLOAD]) is tuple for record in records)


def _received(record: tuple, sock) -> tuple:
    """``record`` with its payload's buffers read from ``sock`` (in message order)."""
    return (*record[:_PAYLOAD], payload_from_wire(record[_PAYLOAD], sock), *record[_PAYLOAD + 1:])


def tasks_from_wire(records: Sequence[tuple], sock) -> List[TaskMessage]:
    """The :class:`TaskMessage` records of a reply, their buffers read from ``sock``
    (the socket the reply came on) if any travelled out of band."""
    if _name_buffers(records):
        return [TaskMessage(*_received(record, sock)) for record in records]
    return list(map(TaskMessage._make, records))


def answers_to_wire(answers: Iterable[Answer]) -> Tuple[List[tuple], list]:
    """:class:`Answer` records as plain tuples for marshal, and the out-of-band
    buffers that follow them."""
    buffers: list = []
    records = [(a.task_id, a.assignment, a.ok, payload_to_wire(a.payload, buffers), a.traceback, a.seconds)
               for a in answers]
    return records, buffers


def answers_from_wire(records: Sequence[tuple], sock) -> List[Answer]:
    """The :class:`Answer` records of a request, their buffers read from ``sock``
    (the socket it came on) if any travelled out of band; ``sock`` None: none may."""
    if _name_buffers(records):
        if sock is None:
            raise ValueError("an answer names buffers sent out of band, but no socket carries them")
        return [Answer(*_received(record, sock)) for record in records]
    return [Answer(*record) for record in records]   # ``seconds`` may be left out (it has a default)


# ---------------------------------------------------------------- stored slave code

#: Shared-data keys under which a master keeps the slaves' code, so that
#: spawned slaves and ``task_manager slave LABEL`` can run it.
SLAVE_CODE = "slave_code"       # the source text
SLAVE_SCRIPT = "slave_script"   # its file name (for tracebacks), or None
SLAVE_CWD = "cwd"               # the master's working directory
SLAVE_ARGV = "argv"             # sys.argv for the slave
STORED_CODE_KEYS = (SLAVE_CODE, SLAVE_SCRIPT, SLAVE_CWD, SLAVE_ARGV)

#: Shared-data key under which a master says whether it wants its slaves' output, and
#: where it prints it: a pickled dict {"forward": bool, "host": name, "streams":
#: [(device, inode)]} (``master/output.py``, ``slave/output.py``).
SLAVE_OUTPUT = "slave_output"


# ---------------------------------------------------------------- spawned slaves

#: Environment variables that tell a spawned slave where its master is.
MASTER_VARIABLE = "SCIENTIFIC_MS_MASTER"
SECRET_VARIABLE = "SCIENTIFIC_MS_SECRET"
TLS_CA_VARIABLE = "SCIENTIFIC_MS_TLS_CA"


def slave_environment(host: str, port: int, secret: bytes,
                      tls_ca: Optional[str] = None) -> Dict[str, str]:
    """The environment of a slave process spawned for the master at host:port."""
    env = dict(os.environ, **{MASTER_VARIABLE: f"{host}:{port}", SECRET_VARIABLE: secret.decode()})
    if tls_ca and not env.get(TLS_CA_VARIABLE):
        env[TLS_CA_VARIABLE] = tls_ca
    return env
