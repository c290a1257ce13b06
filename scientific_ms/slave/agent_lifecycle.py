"""The lives of a node agent's slave processes (``agent.py``): starting and
replacing them, killing one whose task outruns its time limit, and ending
them all when the agent stops.

A slave that dies is noticed at once (the agent is its parent): its running
task alone is blamed, the tasks queued for it go back unblamed, and a fresh
slave replaces it, up to the restart limit. A task past its time limit whose
handler does not stop within ``KILL_GRACE_SECONDS`` is answered with
TaskTimeLimitError and its slave killed and replaced.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from multiprocessing.connection import Connection
from typing import Dict, List, Sequence

from .. import settings
from ..errors import TaskTimeLimitError
from ..wire.payload import dumps_exception
from ..wire.protocol import Answer
from . import agent_link
from .agent_child import Child
from .agent_master import MainCalls
from .agent_state import AgentState

log = logging.getLogger(__name__)

#: A handler past its time limit gets this long to stop before its slave is killed.
KILL_GRACE_SECONDS = 1.0


class Lifecycle:
    """Starts, replaces, times and ends the slave processes in ``state.children``.

    ``command``: what runs one slave (it finds its agent through its
    environment); ``calls``: the main thread's calls to the master, through
    which deaths, time-outs and goodbyes are reported.
    """

    def __init__(self, state: AgentState, calls: MainCalls, command: Sequence[str], env: Dict[str, str],
                 max_restarts: int):
        self._state = state
        self._calls = calls
        self._command = list(command)
        self._env = env
        self.max_restarts = max_restarts

    def start(self, restarts_left: int) -> None:
        """Start one slave process, which may be replaced ``restarts_left`` times."""
        ours, theirs = socket.socketpair()
        env = dict(self._env, **{agent_link.ENVIRONMENT: f"{theirs.fileno()},{os.getpid()}"})
        try:
            # Its own session: Ctrl-C in the terminal reaches the agent alone, which ends
            # each slave after its task (agent_link.current() makes it ignore SIGTERM too).
            process = subprocess.Popen(self._command, env=env, stdin=subprocess.DEVNULL,
                                       pass_fds=(theirs.fileno(),), start_new_session=True)
        finally:
            theirs.close()
        conn = Connection(ours.detach())
        with self._state.lock:
            self._state.add(Child(process, conn, restarts_left))
        log.info("started slave process %d", process.pid)

    def ended(self, child: Child) -> None:
        """Its socket closed: the slave process ended. Report it and replace it."""
        code = child.process.wait()
        with self._state.lock:
            self._state.remove(child)
            running, slave_id = child.running, child.slave_id
            stopping = self._state.stopping
        if child.leaving:
            return
        if stopping is not None:
            if slave_id is not None and self._state.says_goodbye:
                self._calls.goodbye(slave_id)
            return
        cause = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        if slave_id is not None:
            self._calls.call("lost", slave_id, f"its process {child.pid} ended ({cause})",
                             [running[1]] if running else [])
        if child.restarts_left <= 0:
            log.error("slave process %d died (%s); restart limit of %d reached, not replacing it",
                      child.pid, cause, self.max_restarts)
            return
        log.warning("slave process %d died (%s)%s; starting a replacement", child.pid, cause,
                    f" while running task {running[0]}" if running else "")
        self.start(child.restarts_left - 1)

    def deadlines(self) -> List[float]:
        """When each running task with a time limit is overdue (with the lock held)."""
        return [child.started + child.running[4] + KILL_GRACE_SECONDS for child in self._state.children.values()
                if child.running is not None and child.running[4] is not None]

    def enforce_time_limits(self) -> None:
        """Kill and replace each slave whose task is overdue; answer the task with TaskTimeLimitError."""
        now = time.monotonic()
        with self._state.lock:
            overdue = [child for child in self._state.children.values()
                       if child.running is not None and child.running[4] is not None
                       and now > child.started + child.running[4] + KILL_GRACE_SECONDS]
        for child in overdue:
            task_id, assignment, tag, _, limit = child.running
            message = (f"task {task_id} (do_{tag}) ran longer than its time limit of {limit:g} s and "
                       f"did not stop; its slave process {child.pid} was killed and replaced")
            log.warning("%s", message)
            child.process.kill()
            child.process.wait()
            with self._state.lock:
                self._state.remove(child)
                slave_id = child.slave_id
            if slave_id is not None:
                error = TaskTimeLimitError(message)
                answer = Answer(task_id, assignment, False, dumps_exception(error),
                                f"TaskTimeLimitError: {message}\n", now - child.started)
                self._calls.deliver([(slave_id, tuple(answer))])
                self._calls.call("unregister", slave_id)   # the tasks queued for it run elsewhere
            if self._state.stopping is None:
                self.start(child.restarts_left)

    def wind_down(self) -> None:
        """While stopping: end idle slaves at once, busy ones when done or at the deadline."""
        state = self._state
        past_deadline = time.monotonic() >= (state.stop_deadline or 0.0)
        goodbye = state.says_goodbye
        with state.lock:
            children = list(state.children.values())
        for child in children:
            if child.leaving and child.running is None:
                continue   # told to end already (or leaving on its own): its exit is awaited
            if child.running is None or past_deadline:
                with state.lock:
                    slave_id, child.slave_id = child.slave_id, None
                    running = child.running
                    child.sent.clear()
                    child.queue.clear()
                    child.leaving = True
                    if running is None:
                        state.send(child, ("end",))
                if running is not None:
                    log.warning("slave process %d still runs task %s; abandoning it", child.pid, running[0])
                    child.process.kill()
                if goodbye and slave_id is not None:
                    self._calls.goodbye(slave_id)

    def kill_all(self) -> None:
        """Every slave process ends with the agent (a grace for those told to end)."""
        with self._state.lock:
            children = list(self._state.children.values())
            self._state.children.clear()
        deadline = time.monotonic() + settings.ABANDON_GRACE_SECONDS
        for child in children:
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
            child.conn.close()
