"""A node agent: one process per host between the master and N slave processes.

``task_manager slave LABEL -n N`` runs one. The agent runs no user code. It
holds the host's connections to the master and speaks for all its slaves
at once, so the master's cost grows with hosts, not slaves; its slaves are
its children and talk to it over socket pairs (``agent_link.py``)::

    master  <== agent_exchange ==  fetch thread   answers in, tasks out, batched
            <== agent_watch =====  watch thread   heartbeats of every slave at once
            <== register, lost,    main thread    the slaves' lives, and answers
                unregister,                       while the fetch thread waits
                agent_exchange                    for work
                                     |
                                     +-- socket pair -- slave process 1 (runs handlers)
                                     +-- socket pair -- slave process N

The master still registers each slave under its own id, so every guarantee
holds per slave, and the agent knows each one's state:

* a slave that dies is noticed at once (the agent is its parent): its
  running task alone is blamed, the tasks queued for it go back unblamed,
  and a fresh slave replaces it;
* a slave that is stopped (SIGSTOP) gets no heartbeat, so the master
  declares it dead after the watchdog limit, as for any slave; a slave busy
  in C code, even holding the GIL, keeps its heartbeats, since they come
  from the agent;
* a task past its time limit whose handler does not stop within
  ``KILL_GRACE_SECONDS`` is answered with TaskTimeLimitError and its slave
  killed and replaced; the tasks queued for it run at once elsewhere;
* a killed agent drops its connections: the master reschedules the tasks
  of all its slaves, which die with it (they are killed when their parent
  dies);
* SIGTERM (a batch system's walltime) or Ctrl-C: no new tasks, queued ones
  go back, running ones get ``SCIENTIFIC_MS_TERM_GRACE`` seconds (default
  20) to finish, then the agent says goodbye for every slave, without
  blaming the tasks it gives back, and exits (0 for SIGTERM);
* with an idle timeout (``--idle-timeout``), once none of its slaves has had
  work for that long the agent says goodbye for all of them and exits 0, so
  that a batch allocation is freed when the queue runs dry.

The parts: ``agent_state.py`` (what the threads share, under one lock),
``agent_master.py`` (the calls to the master and the fetch and watch
threads), ``agent_lifecycle.py`` (starting, replacing, timing and ending
the slave processes), ``agent_child.py`` (one slave as the agent sees it).
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import time
from multiprocessing.connection import wait as wait_for_any
from typing import Dict, Optional, Sequence

from .. import settings
from ..errors import ConnectionLostError
from ..machine import process_info
from ..wire.client import MasterConnection
from ..wire.protocol import OK
from . import departure
from .agent_child import Child
from .agent_lifecycle import Lifecycle
from .agent_master import ANSWER_DELAY_SECONDS, ANSWERS_PER_CALL, MainCalls, MasterSide
from .agent_state import AgentState

log = logging.getLogger(__name__)


class NodeAgent:
    """Runs ``count`` slave processes of ``label`` behind one set of connections.

    ``connection``: an open connection to the master; ``command``: the
    command that runs one slave (it finds its agent through its
    environment). :meth:`run` returns the exit code.
    """

    def __init__(self, label: str, connection: MasterConnection, count: int, command: Sequence[str],
                 env: Optional[Dict[str, str]] = None, max_restarts: Optional[int] = None,
                 idle_timeout: Optional[float] = None):
        self.label = label
        self.count = count
        self._stop_grace = settings.term_grace()
        self._idle = departure.IdleClock(idle_timeout)
        self._state = AgentState()
        self._main = MainCalls(connection, self._state)   # the main thread's
        self._lives = Lifecycle(self._state, self._main, command, dict(os.environ if env is None else env),
                                settings.slave_restarts(max_restarts))
        self._signalled: Optional[tuple] = None  # (reason, code) from a signal handler
        self.agent_id: Optional[int] = None

    # ------------------------------------------------------------------ main thread

    def run(self) -> int:
        status, self.agent_id = self._main.call("register", "agent", dict(process_info(), slaves=self.count),
                                                None, None)
        if status != OK:
            log.info("the master of %r has already finished", self.label)
            return 0
        log.info("node agent %s for %r at %s: starting %d slaves", self.agent_id, self.label,
                 self._main.connection.address, self.count)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        master_side = MasterSide(self._state, self._main.connection, self.agent_id, self._master_lost)
        try:
            for _ in range(self.count):
                self._lives.start(self._lives.max_restarts)
            master_side.start()
            self._serve_children()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._lives.kill_all()
            with self._state.lock:
                self._state.changed.notify_all()
            if self._state.says_goodbye:
                self._main.quietly("unregister", self.agent_id)
            master_side.join(timeout=1.0)
        return self._state.exit_code

    def _on_signal(self, signum, frame) -> None:
        # The main thread may hold the lock right now: only note it, and wake the loop.
        self._signalled = ("interrupted", 130) if signum == signal.SIGINT else (departure.SIGTERM, 0)
        self._state.wake()

    def _take_signal(self) -> None:
        (reason, code), self._signalled = self._signalled, None
        if self._state.stopping is None:
            log.warning("node agent of %r %s: no new tasks; running ones get %.0f s to finish",
                        self.label, "interrupted" if code else "got SIGTERM", self._stop_grace)
        self._state.stop(reason, self._stop_grace, code)

    def _serve_children(self) -> None:
        state = self._state
        while True:
            with state.lock:
                conns = [child.conn for child in state.children.values()]
                if not conns:
                    if state.stopping is None:
                        log.error("node agent of %r has no slave processes left", self.label)
                        state.exit_code = 1
                    return
            ready = wait_for_any(conns + [state.wake_reader], self._next_timeout())
            for conn in ready:
                if conn is state.wake_reader:
                    state.woken()
                    continue
                child = state.children.get(conn.fileno())
                if child is None:
                    continue
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    self._lives.ended(child)
                    continue
                try:
                    self._on_message(child, message)
                except ConnectionLostError as error:
                    self._master_lost(error)
            try:
                if self._signalled is not None:
                    self._take_signal()
                self._lives.enforce_time_limits()
                self._flush_answers()
                self._check_idle()
                if state.reregister:
                    self._register_again()
                if state.stopping is not None:
                    self._lives.wind_down()
            except ConnectionLostError as error:
                self._master_lost(error)

    def _next_timeout(self) -> float:
        """Seconds until the next time limit or stop deadline falls due."""
        state = self._state
        now = time.monotonic()
        due = [now + settings.POLL_SECONDS]
        with state.lock:
            due.extend(self._lives.deadlines())
            if state.stop_deadline is not None:
                due.append(state.stop_deadline)
            if self._idle.idle_timeout is not None and state.stopping is None:
                due.append(self._idle.last_work + self._idle.idle_timeout)
            if state.outbox and state.fetch_waiting is not None:
                due.append(state.fetch_waiting + ANSWER_DELAY_SECONDS)
        return max(0.0, min(due) - now) + 0.001

    def _on_message(self, child: Child, message: tuple) -> None:
        kind = message[0]
        if kind == "answer":
            self._on_answer(child, message[1])
        elif kind == "hello":
            child.hello = message[1:]
            self._register(child)
        elif kind == "get_data":
            found, value = self._main.call("get_data", message[1])
            with self._state.lock:
                self._state.send(child, ("data", found, value))
        elif kind == "leaving":
            log.info("slave %s (PID %d) leaves (its terminationTest is true)", child.slave_id, child.pid)
            with self._state.lock:
                child.leaving = True
                slave_id, child.slave_id = child.slave_id, None
                child.queue.clear()
            if slave_id is not None:
                self._main.call("unregister", slave_id, message[1])

    def _register(self, child: Child) -> None:
        info, tags, watchdog_period = child.hello
        status, slave_id = self._main.call("register", "slave", dict(info, agent=self.agent_id),
                                           tags, watchdog_period)
        if status != OK:
            self._state.stop("terminated", settings.ABANDON_GRACE_SECONDS, 0)
            return
        with self._state.lock:
            child.slave_id = slave_id
            held, child.held = child.held, []
            self._state.changed.notify_all()
        log.debug("slave %s is PID %d", slave_id, child.pid)
        if held:
            self._main.deliver([(slave_id, answer) for answer in held])

    def _register_again(self) -> None:
        """Slaves the master declared dead (stopped, cut off) join again once they run."""
        self._state.reregister = False
        for child in list(self._state.children.values()):
            if child.slave_id is None and child.hello is not None and not child.leaving:
                if child.runnable():
                    log.warning("the master of %r declared slave PID %d dead; it runs again and "
                                "joins again", self.label, child.pid)
                    self._register(child)
                else:
                    self._state.reregister = True   # look again at the next turn

    def _on_answer(self, child: Child, answer: tuple) -> None:
        """``answer``: the fields of protocol.Answer, as the plain tuple marshal carries."""
        state = self._state
        seconds = answer[5] or 0.0
        with state.lock:
            now = time.monotonic()
            if child.sent and child.sent[0][1] == answer[1]:
                child.sent.popleft()
                child.started = now   # the next one sent starts now
            else:   # (not expected: answers come in the order the tasks were sent)
                child.sent = collections.deque(t for t in child.sent if t[1] != answer[1])
            child.average = seconds if child.average is None else 0.8 * child.average + 0.2 * seconds
            state.dispatch(child)
            slave_id = child.slave_id
            if slave_id is None:
                child.held.append(answer)
                return
            if state.stopping is None:
                if not state.outbox:
                    state.outbox_since = time.monotonic()
                state.outbox.append((slave_id, answer))
                if len(state.outbox) >= ANSWERS_PER_CALL or child.want():
                    state.changed.notify_all()
                return   # with the fetch thread's next call, or _flush_answers if that waits long
        self._main.deliver([(slave_id, answer)])

    def _flush_answers(self) -> None:
        """Answers that wait while the fetch thread's call waits for work (the master has
        none for now) go out on the main connection, ``ANSWER_DELAY_SECONDS`` at most late."""
        state = self._state
        with state.lock:
            since = state.fetch_waiting
            if not state.outbox or since is None or time.monotonic() - since < ANSWER_DELAY_SECONDS:
                return
            answers = state.take_answers()
            wanting = {slave_id for slave_id, _ in answers}
            wants = [(child.slave_id, child.want()) for child in state.children.values()
                     if child.slave_id in wanting]
        self._main.deliver(answers, wants)

    def _check_idle(self) -> None:
        if self._idle.idle_timeout is None or self._state.stopping is not None:
            return
        with self._state.lock:
            busy = any(child.sent or child.queue for child in self._state.children.values())
        if busy:
            self._idle.busy()
        elif self._idle.expired():
            log.info("node agent of %r: no work for %g s; its slaves leave", self.label, self._idle.idle_timeout)
            self._state.stop(departure.IDLE, 0.0, 0)

    def _master_lost(self, error: Exception) -> None:
        if self._state.stopping is None:
            log.error("node agent of %r lost its master: %s; stopping its slaves", self.label, error)
        self._state.stop("lost", settings.ABANDON_GRACE_SECONDS, 1)
