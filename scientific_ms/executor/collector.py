"""An Executor's collector thread: takes the answers from the master and settles their slots.

The Executor and its collector share one table, task id -> slot (a Future
or a map's MapSlot), or the answer that came before its slot. A task id and
its slot meet there through ``dict.setdefault``, which is atomic: whichever
of the submitting thread (``Executor._queue``) and the collector comes
second settles the slot, so an answer that arrives before its slot is
stored is never lost. When the collector ends (the job ended, or a bug in
it), it shuts the master down and fails every slot left.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Dict, Optional

from ..errors import NoTasksPendingError, RemoteTraceback, TaskManagerTermination, TaskRaisedException
from ..master.master import MasterProcess

log = logging.getLogger(__name__)

#: The collector takes up to this many answers from the task manager at once.
ANSWERS_AT_ONCE = 256


class Collector:
    """The thread that settles the slots of ``slots`` (shared with the Executor ``label``) with
    the answers of ``master``, from start until the end of the job or :meth:`stop_when_done`."""

    def __init__(self, master: MasterProcess, label: str, slots: Dict[str, Any]):
        self._master = master
        self._label = label
        self._slots = slots   # task id -> Future or MapSlot, or an answer that came first
        self._wakeup = threading.Event()
        self._idle = False
        self._stopping = False
        self._closed = False
        self._thread = threading.Thread(target=self._collect, name=f"scientific_ms-collector-{label}", daemon=True)
        self._thread.start()

    def queued(self) -> None:
        """New slots are in the table: wake the collector if it waits for calls; settle them
        (as failed) if it has ended already, as nobody else would."""
        if self._idle:
            self._wakeup.set()
        if self._closed:
            self._fail_leftovers()

    def stop_when_done(self) -> None:
        """End once no call is outstanding (call :meth:`wake` after withdrawing calls)."""
        self._stopping = True

    def wake(self) -> None:
        """Let a collector waiting for calls look again."""
        self._wakeup.set()

    def join(self) -> None:
        """Wait until the collector has ended (and shut the master down)."""
        self._thread.join()

    def _collect(self) -> None:
        failure: BaseException = RuntimeError("the executor was shut down before this call was done")
        try:
            self._collect_answers()
        except BaseException as error:   # a bug here must not leave futures waiting for ever
            log.exception("the collector of Executor %r failed", self._label)
            failure = error
        finally:
            try:
                self._master.shutdown()
            finally:
                self._closed = True
                self._fail_leftovers(failure)

    def _collect_answers(self) -> None:
        master, slots = self._master, self._slots
        while True:
            try:
                outcomes = master.take_answers(ANSWERS_AT_ONCE)
            except TaskManagerTermination:
                log.warning("the task manager of Executor %r ended; failing the calls not done", self._label)
                return
            except NoTasksPendingError:
                if self._stopping:
                    return
                if not self._idle:
                    self._idle = True   # say so, then look once more before waiting
                    continue
                log.debug("Executor %r: no calls outstanding; waiting for one", self._label)
                self._wakeup.wait()
                self._wakeup.clear()
                self._idle = False
                continue
            master.count_delivered()
            for outcome in outcomes:
                try:
                    ok, value = True, master.read_answer(outcome)
                except TaskRaisedException as error:
                    ok, value = False, _remote(error)
                slot = slots.setdefault(outcome.task_id, (ok, value))
                if type(slot) is not tuple:   # the slot is there: settle it (else submit will)
                    del slots[outcome.task_id]
                    slot.settle(ok, value)

    def _fail_leftovers(self, error: Optional[BaseException] = None) -> None:
        error = error or RuntimeError("the executor was shut down before this call was done")
        while True:
            try:
                _, slot = self._slots.popitem()
            except KeyError:
                return
            if type(slot) is not tuple:
                slot.settle(False, error)


def _remote(error: TaskRaisedException) -> BaseException:
    """The exception a call raised on its slave, with the slave's traceback as its cause."""
    exception = error.exception
    exception.__cause__ = RemoteTraceback(error.traceback)
    return exception
