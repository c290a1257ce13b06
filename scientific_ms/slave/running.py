"""Running one task in a slave's main thread: its handler, its time limit, its answer.

:func:`run_task` turns a :class:`~scientific_ms.wire.protocol.TaskMessage`
into an :class:`~scientific_ms.wire.protocol.Answer`: the parameters
unpickled, the handler called (under its time limit, told to the keeper,
which ends the handler if the alarm cannot), the result pickled and
checked against the message limit. An exception of the handler becomes a
failed answer; a KeyboardInterrupt or SystemExit (the handler ends the
slave) goes on to the caller.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

from ..errors import SerializationError
from ..wire.limits import check_result
from ..wire.payload import Payload, dumps_exception, format_exception
from ..wire.protocol import Answer, TaskMessage
from .devices import task_environment
from .session import Session
from .timelimit import time_limit
from .worker_link import WorkerLink


def run_task(handler: Callable, task: TaskMessage, session: Session, link: Optional[WorkerLink],
             load: Callable[[Payload], tuple], dump: Callable[[object], Payload]) -> Answer:
    """Run ``task`` with ``handler``; ``load`` and ``dump`` (un)pickle its parameters and
    result (the slave's hooks), ``link`` is the keeper's, if the slave has one."""
    task_id, assignment, tag, limit = task.task_id, task.assignment, task.tag, task.time_limit
    session.current_task = task_id
    started = time.perf_counter()
    devices = None if task.gpus is None and task.cores is None else task_environment(task.gpus, task.cores)
    try:
        parameters = load(task.payload)
        if limit is None:          # most tasks: no context manager, no message to format
            result = handler(*parameters)
        else:
            if link is not None:   # the keeper ends the handler if SIGALRM cannot
                link.started(task_id, assignment, tag, limit)
            try:
                with time_limit(limit, f"task {task_id} (do_{tag})"):
                    result = handler(*parameters)
            finally:
                if link is not None:
                    link.ended(assignment)
        try:
            data = dump(result)
        except Exception as error:
            raise SerializationError(
                f"the result of do_{tag} ({type(result).__name__}) cannot be pickled: {error}") from error
        check_result(tag, len(data))
        return Answer._make((task_id, assignment, True, data, "", time.perf_counter() - started))
    except Exception as error:
        return Answer(task_id, assignment, False, dumps_exception(error), format_exception(error),
                      time.perf_counter() - started)
    finally:
        session.current_task = None
        if devices is not None:
            devices.restore()
