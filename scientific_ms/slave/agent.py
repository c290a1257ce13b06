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
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from multiprocessing.connection import Connection, wait as wait_for_any
from typing import Dict, List, Optional, Sequence

from . import agent_link, departure

from .. import settings
from ..wire.client import MasterConnection
from ..errors import ConnectionLostError, ScientificMSError, TaskTimeLimitError
from .agent_child import Child
from .agent_master import ANSWER_DELAY_SECONDS, ANSWERS_PER_CALL, MasterSide
from ..machine import process_info
from ..wire.payload import dumps_exception
from ..wire.protocol import OK, TERMINATED, Answer

log = logging.getLogger(__name__)

#: A handler past its time limit gets this long to stop before its slave is killed.
KILL_GRACE_SECONDS = 1.0


class NodeAgent(MasterSide):
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
        self._command = list(command)
        self._env = dict(os.environ if env is None else env)
        self._max_restarts = settings.slave_restarts(max_restarts)
        self._stop_grace = settings.term_grace()
        self._idle = departure.IdleClock(idle_timeout)
        self._main = connection          # the main thread's
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)   # the fetch thread waits here
        self._children: Dict[int, Child] = {}   # by fileno of its socket
        self._outbox: List[tuple] = []          # (slave_id, answer) for the next exchange
        self._outbox_since = 0.0                # when its oldest answer came
        self._fetch_waiting: Optional[float] = None   # since when the fetch thread waits for work
        self._stopping: Optional[str] = None    # why the agent stops
        self._stop_deadline: Optional[float] = None
        self._exit_code = 0
        self._reregister = False                # a slave was declared dead: register it again
        self._signalled: Optional[tuple] = None  # (reason, code) from a signal handler
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_writer.setblocking(False)
        self.agent_id: Optional[int] = None

    # ------------------------------------------------------------------ main thread

    def run(self) -> int:
        status, self.agent_id = self._main.call("register", "agent", dict(process_info(), slaves=self.count),
                                                None, None)
        if status != OK:
            log.info("the master of %r has already finished", self.label)
            return 0
        log.info("node agent %s for %r at %s: starting %d slaves", self.agent_id, self.label,
                 self._main.address, self.count)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        threads = [threading.Thread(target=self._fetch_loop, name="scientific_ms-agent-fetch", daemon=True),
                   threading.Thread(target=self._watch_loop, name="scientific_ms-agent-watch", daemon=True)]
        try:
            for _ in range(self.count):
                self._start_child(self._max_restarts)
            for thread in threads:
                thread.start()
            self._serve_children()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._kill_all()
            with self._lock:
                self._changed.notify_all()
            if self._stopping not in ("terminated", "lost"):
                self._quietly("unregister", self.agent_id)
            for thread in threads:
                thread.join(timeout=1.0)
        return self._exit_code

    def _on_signal(self, signum, frame) -> None:
        # The main thread may hold the lock right now: only note it, and wake the loop.
        self._signalled = ("interrupted", 130) if signum == signal.SIGINT else (departure.SIGTERM, 0)
        self._wake()

    def _take_signal(self) -> None:
        (reason, code), self._signalled = self._signalled, None
        if self._stopping is None:
            log.warning("node agent of %r %s: no new tasks; running ones get %.0f s to finish",
                        self.label, "interrupted" if code else "got SIGTERM", self._stop_grace)
        self._stop(reason, self._stop_grace, code)

    def _stop(self, reason: str, grace: float, code: int) -> None:
        with self._lock:
            if self._stopping is None:
                self._stopping = reason
                self._stop_deadline = time.monotonic() + grace
                self._exit_code = code
            self._changed.notify_all()
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_writer.send(b"x")
        except (BlockingIOError, OSError):
            pass   # a wake-up is already pending

    def _serve_children(self) -> None:
        while True:
            with self._lock:
                conns = [child.conn for child in self._children.values()]
                if not conns:
                    if self._stopping is None:
                        log.error("node agent of %r has no slave processes left", self.label)
                        self._exit_code = 1
                    return
            ready = wait_for_any(conns + [self._wake_reader], self._next_timeout())
            for conn in ready:
                if conn is self._wake_reader:
                    self._wake_reader.recv(4096)
                    continue
                child = self._children.get(conn.fileno())
                if child is None:
                    continue
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    self._child_ended(child)
                    continue
                try:
                    self._on_message(child, message)
                except ConnectionLostError as error:
                    self._master_lost(error)
            try:
                if self._signalled is not None:
                    self._take_signal()
                self._enforce_time_limits()
                self._flush_answers()
                self._check_idle()
                if self._reregister:
                    self._register_again()
                if self._stopping is not None:
                    self._wind_down()
            except ConnectionLostError as error:
                self._master_lost(error)

    def _next_timeout(self) -> float:
        """Seconds until the next time limit or stop deadline falls due."""
        now = time.monotonic()
        due = [now + settings.POLL_SECONDS]
        with self._lock:
            for child in self._children.values():
                if child.running is not None and child.running[4] is not None:
                    due.append(child.started + child.running[4] + KILL_GRACE_SECONDS)
            if self._stop_deadline is not None:
                due.append(self._stop_deadline)
            if self._idle.idle_timeout is not None and self._stopping is None:
                due.append(self._idle.last_work + self._idle.idle_timeout)
            if self._outbox and self._fetch_waiting is not None:
                due.append(self._fetch_waiting + ANSWER_DELAY_SECONDS)
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
            with self._lock:
                self._send(child, ("data", found, value))
        elif kind == "leaving":
            log.info("slave %s (PID %d) leaves (its terminationTest is true)", child.slave_id, child.pid)
            with self._lock:
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
            self._stop("terminated", settings.ABANDON_GRACE_SECONDS, 0)
            return
        with self._lock:
            child.slave_id = slave_id
            held, child.held = child.held, []
            self._changed.notify_all()
        log.debug("slave %s is PID %d", slave_id, child.pid)
        if held:
            self._deliver([(slave_id, answer) for answer in held])

    def _register_again(self) -> None:
        """Slaves the master declared dead (stopped, cut off) join again once they run."""
        self._reregister = False
        for child in list(self._children.values()):
            if child.slave_id is None and child.hello is not None and not child.leaving:
                if child.runnable():
                    log.warning("the master of %r declared slave PID %d dead; it runs again and "
                                "joins again", self.label, child.pid)
                    self._register(child)
                else:
                    self._reregister = True   # look again at the next turn

    def _on_answer(self, child: Child, answer: tuple) -> None:
        """``answer``: the fields of protocol.Answer, as the plain tuple marshal carries."""
        seconds = answer[5] or 0.0
        with self._lock:
            now = time.monotonic()
            if child.sent and child.sent[0][1] == answer[1]:
                child.sent.popleft()
                child.started = now   # the next one sent starts now
            else:   # (not expected: answers come in the order the tasks were sent)
                child.sent = collections.deque(t for t in child.sent if t[1] != answer[1])
            child.average = seconds if child.average is None else 0.8 * child.average + 0.2 * seconds
            self._dispatch(child)
            slave_id = child.slave_id
            if slave_id is None:
                child.held.append(answer)
                return
            if self._stopping is None:
                if not self._outbox:
                    self._outbox_since = time.monotonic()
                self._outbox.append((slave_id, answer))
                if len(self._outbox) >= ANSWERS_PER_CALL or child.want():
                    self._changed.notify_all()
                return   # with the fetch thread's next call, or _flush_answers if that waits long
        self._deliver([(slave_id, answer)])

    def _flush_answers(self) -> None:
        """Answers that wait while the fetch thread's call waits for work (the master has
        none for now) go out on the main connection, ``ANSWER_DELAY_SECONDS`` at most late."""
        with self._lock:
            since = self._fetch_waiting
            if not self._outbox or since is None or time.monotonic() - since < ANSWER_DELAY_SECONDS:
                return
            answers, self._outbox = self._outbox, []
            wanting = {slave_id for slave_id, _ in answers}
            wants = [(child.slave_id, child.want()) for child in self._children.values()
                     if child.slave_id in wanting]
        self._deliver(answers, wants)

    def _deliver(self, answers: List[tuple], wants: Sequence[tuple] = ()) -> None:
        status, tasks, revoked, unknown = self._main.agent_exchange(answers, list(wants), 0.0)
        with self._lock:
            self._apply(tasks, revoked, unknown)
        if status == TERMINATED:
            self._stop("terminated", settings.ABANDON_GRACE_SECONDS, 0)

    def _send(self, child: Child, message: tuple) -> None:
        try:
            child.conn.send(message)
        except OSError:
            pass   # it died: its end of file is read next

    def _dispatch(self, child: Child) -> None:
        """Hand an idle slave its next task (with the lock held)."""
        if self._stopping is not None:
            return
        while child.queue and len(child.sent) < child.ahead():
            task = child.queue.popleft()
            if not child.sent:
                child.started = time.monotonic()
            child.sent.append(task)
            self._send(child, ("task", task))
            if task[4] is not None:   # a time limit: the main loop must watch it
                self._wake()

    def _apply(self, tasks: list, revoked: list, unknown: list) -> None:
        """Take in what an exchange returned (with the lock held)."""
        by_id = {child.slave_id: child for child in self._children.values() if child.slave_id is not None}
        for slave_id, batch in tasks:
            child = by_id.get(slave_id)
            if child is not None:   # else it died meanwhile: the master requeued these
                child.queue.extend(batch)
                self._dispatch(child)
        for slave_id, assignments in revoked:   # another slave runs them now
            child = by_id.get(slave_id)
            if child is not None:
                dropped = set(assignments)
                child.queue = collections.deque(t for t in child.queue if t[1] not in dropped)
        for slave_id in unknown:
            child = by_id.get(slave_id)
            if child is not None:   # declared dead: what it held runs elsewhere now
                child.slave_id = None
                child.queue.clear()
                self._reregister = True
        if unknown:
            self._wake()

    def _child_ended(self, child: Child) -> None:
        code = child.process.wait()
        with self._lock:
            del self._children[child.conn.fileno()]
            running, slave_id = child.running, child.slave_id
            child.conn.close()
            stopping = self._stopping
        if child.leaving:
            return
        if stopping is not None:
            if slave_id is not None and stopping not in ("terminated", "lost"):
                self._goodbye(slave_id)
            return
        cause = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        if slave_id is not None:
            self._main.call("lost", slave_id, f"its process {child.pid} ended ({cause})",
                            [running[1]] if running else [])
        if child.restarts_left <= 0:
            log.error("slave process %d died (%s); restart limit of %d reached, not replacing it",
                      child.pid, cause, self._max_restarts)
            return
        log.warning("slave process %d died (%s)%s; starting a replacement", child.pid, cause,
                    f" while running task {running[0]}" if running else "")
        self._start_child(child.restarts_left - 1)

    def _enforce_time_limits(self) -> None:
        now = time.monotonic()
        with self._lock:
            overdue = [child for child in self._children.values()
                       if child.running is not None and child.running[4] is not None
                       and now > child.started + child.running[4] + KILL_GRACE_SECONDS]
        for child in overdue:
            task_id, assignment, tag, _, limit = child.running
            message = (f"task {task_id} (do_{tag}) ran longer than its time limit of {limit:g} s and "
                       f"did not stop; its slave process {child.pid} was killed and replaced")
            log.warning("%s", message)
            child.process.kill()
            child.process.wait()
            with self._lock:
                del self._children[child.conn.fileno()]
                child.conn.close()
                slave_id = child.slave_id
            if slave_id is not None:
                error = TaskTimeLimitError(message)
                answer = Answer(task_id, assignment, False, dumps_exception(error),
                                f"TaskTimeLimitError: {message}\n", now - child.started)
                self._deliver([(slave_id, tuple(answer))])
                self._main.call("unregister", slave_id)   # the tasks queued for it run elsewhere
            if self._stopping is None:
                self._start_child(child.restarts_left)

    def _wind_down(self) -> None:
        """While stopping: end idle slaves at once, busy ones when done or at the deadline."""
        past_deadline = time.monotonic() >= (self._stop_deadline or 0.0)
        goodbye = self._stopping not in ("terminated", "lost")
        with self._lock:
            children = list(self._children.values())
        for child in children:
            if child.leaving and child.running is None:
                continue   # told to end already (or leaving on its own): its exit is awaited
            if child.running is None or past_deadline:
                with self._lock:
                    slave_id, child.slave_id = child.slave_id, None
                    running = child.running
                    child.sent.clear()
                    child.queue.clear()
                    child.leaving = True
                    if running is None:
                        self._send(child, ("end",))
                if running is not None:
                    log.warning("slave process %d still runs task %s; abandoning it", child.pid, running[0])
                    child.process.kill()
                if goodbye and slave_id is not None:
                    self._goodbye(slave_id)

    def _goodbye(self, slave_id: int) -> None:
        """Unregister a slave as the agent stops: what it held goes back unblamed
        (the walltime or the user stopped it, not its task), with the reason."""
        reason = self._stopping if self._stopping in departure.REASONS else None
        self._quietly("unregister", slave_id, [], reason)

    def _check_idle(self) -> None:
        if self._idle.idle_timeout is None or self._stopping is not None:
            return
        with self._lock:
            busy = any(child.sent or child.queue for child in self._children.values())
        if busy:
            self._idle.busy()
        elif self._idle.expired():
            log.info("node agent of %r: no work for %g s; its slaves leave", self.label, self._idle.idle_timeout)
            self._stop(departure.IDLE, 0.0, 0)

    def _master_lost(self, error: Exception) -> None:
        if self._stopping is None:
            log.error("node agent of %r lost its master: %s; stopping its slaves", self.label, error)
        self._stop("lost", settings.ABANDON_GRACE_SECONDS, 1)

    def _quietly(self, method: str, *args) -> None:
        try:
            self._main.call(method, *args, timeout=5.0)
        except ScientificMSError:
            pass

    def _start_child(self, restarts_left: int) -> None:
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
        with self._lock:
            self._children[conn.fileno()] = Child(process, conn, restarts_left)
        log.info("started slave process %d", process.pid)

    def _kill_all(self) -> None:
        """Every slave process ends with the agent (a grace for those told to end)."""
        with self._lock:
            children = list(self._children.values())
            self._children.clear()
        deadline = time.monotonic() + settings.ABANDON_GRACE_SECONDS
        for child in children:
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
            child.conn.close()
