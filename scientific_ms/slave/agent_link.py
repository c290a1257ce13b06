"""A slave process behind a node agent: it talks to its agent, never to the master.

The agent (``agent.py``) starts each slave with one end of a socket pair,
``SCIENTIFIC_MS_AGENT_FD`` holding its number and the agent's PID. Messages are pickled tuples in
``multiprocessing.connection`` framing; the agent is the slave's parent on
the same host, so nothing here crosses the network::

    slave -> agent   ("hello", info, tags, watchdog_period)   ready to serve
                     ("answer", Answer fields)                 one task done
                     ("get_data", label)                      shared data or stored code
                     ("leaving", [abandoned assignments])     terminationTest() is true
    agent -> slave   ("task", TaskMessage fields)             run this now
                     ("data", found, payload or reason)       the reply to get_data
                     ("end",)                                 exit cleanly

The agent sends a task only to an idle slave, so while a handler runs the
only message it can receive is the reply to its own ``get_data``. The slave
sends no heartbeats: its agent watches the process itself (alive, stopped,
busy in C code), which a handler holding the GIL cannot delay.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from multiprocessing.connection import Connection
from typing import Callable, Dict, List, Optional, Tuple

from .. import settings
from ..core.tasks import ANY_TAG
from ..machine import process_info

from ..errors import TaskManagerTermination

ENVIRONMENT = "SCIENTIFIC_MS_AGENT_FD"


class MasterEndedError(TaskManagerTermination):
    """The agent says the master ended while this slave waited for data: a normal end."""

_link: Optional["AgentLink"] = None

log = logging.getLogger(__name__)


class AgentLink:
    """The slave's end of its agent's socket pair."""

    def __init__(self, fd: int):
        self._conn = Connection(fd)

    # what a MasterConnection offers that a slave behind an agent uses

    def call(self, method: str, *args, timeout: Optional[float] = None):
        if method != "get_data":
            raise ValueError(f"a slave behind a node agent cannot call {method!r}")
        try:
            self._conn.send(("get_data",) + args)
            reply = self._conn.recv()
        except (EOFError, OSError):
            reply = ("end",)   # the agent is gone
        if reply[0] != "data":   # ("end",): the master ended, its agent ends its slaves
            raise MasterEndedError("the master ended before this slave got its code; exiting")
        return reply[1], reply[2]

    def close(self) -> None:
        pass   # the link lives as long as the process

    # the serving loop

    def serve(self, handlers: Dict[str, Callable], run: Callable[..., tuple],
              termination_test: Callable[[], bool], label: str, watchdog_period: Optional[float]) -> None:
        """Serve the tasks the agent hands over, one at a time, until it says end.

        ``run(handler, task)``: runs one task and returns its answer;
        ``termination_test()``: true once the slave should leave on its own.
        """
        self.hello(process_info(), sorted(handlers), watchdog_period)
        while True:
            if termination_test():
                log.info("terminationTest() is true: this slave of %r leaves", label)
                self.leave([])
                return
            message = self.next_message(settings.POLL_SECONDS)
            if message is None:
                continue
            if message[0] != "task":   # ("end",): the job is over, or the agent stops
                return
            task = message[1]
            handler = handlers.get(task[2]) or handlers[ANY_TAG]   # task[2]: TaskMessage.tag
            self.answer(run(handler, task))

    # its steps

    def hello(self, info: dict, tags: List[str], watchdog_period: Optional[float]) -> None:
        self._conn.send(("hello", info, tags, watchdog_period))

    def next_message(self, timeout: float) -> Optional[Tuple]:
        """The agent's next message; None after ``timeout`` s; ("end",) if the agent is gone."""
        try:
            if not self._conn.poll(timeout):
                return None
            return self._conn.recv()
        except (EOFError, OSError):
            return ("end",)

    def answer(self, answer: tuple) -> None:
        self._conn.send(("answer", tuple(answer)))

    def leave(self, abandoned: List[int]) -> None:
        self._conn.send(("leaving", list(abandoned)))


def current() -> Optional[AgentLink]:
    """This process's link to its node agent, or None for a slave on its own.

    The first call takes the variable out of the environment, so that
    processes the slave's code starts neither see nor inherit it.
    """
    global _link
    if _link is None:
        value = os.environ.pop(ENVIRONMENT, None)
        if value is not None:
            fd, agent_pid = (int(part) for part in value.split(","))
            _belong_to_agent(agent_pid)
            os.set_inheritable(fd, False)
            _link = AgentLink(fd)
    return _link


def _belong_to_agent(agent_pid: int) -> None:
    """Die with the agent, and leave SIGTERM to it (it ends this slave after its task).

    A batch system's SIGTERM at walltime reaches every process of the job;
    the agent then hands back the queued tasks and says goodbye for its
    slaves. If the agent dies, its slaves die with it (Linux), so no slave
    outlives its allocation.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            PR_SET_PDEATHSIG = 1
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            return
        if os.getppid() != agent_pid:   # the agent died before we could ask
            os._exit(1)
