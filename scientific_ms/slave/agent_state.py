"""What the node agent's threads share (``agent.py``), under one lock.

The main thread (the slaves' lives), the fetch thread and the watch thread
(``agent_master.py``) all read and change the same few things: the slave
processes and what each holds, the answers waiting to go to the master,
and whether the agent stops. :class:`AgentState` holds them, with the lock
that guards them and the few steps every thread takes on them (hand a
slave its next task, take in what an exchange returned, stop).
"""

from __future__ import annotations

import collections
import socket
import threading
import time
from typing import Dict, List, Optional

from .agent_child import Child

#: Why an agent stops without saying goodbye for its slaves: the master is over or gone.
SILENT_STOPS = ("terminated", "lost")


class AgentState:
    """The node agent's shared state; ``lock`` guards every attribute but the wake-up pair.

    ``changed`` (on ``lock``) is where the fetch thread waits for answers or
    wants; :meth:`wake` interrupts the main thread's wait for its slaves.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)   # the fetch thread waits here
        self.children: Dict[int, Child] = {}    # by fileno of its socket
        self.outbox: List[tuple] = []           # (slave_id, answer) for the next exchange
        self.outbox_since = 0.0                 # when its oldest answer came
        self.fetch_waiting: Optional[float] = None   # since when the fetch thread waits for work
        self.stopping: Optional[str] = None     # why the agent stops
        self.stop_deadline: Optional[float] = None
        self.exit_code = 0
        self.reregister = False                 # a slave was declared dead: register it again
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_writer.setblocking(False)

    # ------------------------------------------------------------------ waking the main thread

    @property
    def wake_reader(self) -> socket.socket:
        """Readable after :meth:`wake`: one of the things the main thread waits for."""
        return self._wake_reader

    def wake(self) -> None:
        """Interrupt the main thread's wait (safe in a signal handler: takes no lock)."""
        try:
            self._wake_writer.send(b"x")
        except (BlockingIOError, OSError):
            pass   # a wake-up is already pending

    def woken(self) -> None:
        """The main thread saw the wake-up: clear it."""
        self._wake_reader.recv(4096)

    # ------------------------------------------------------------------ stopping

    def stop(self, reason: str, grace: float, code: int) -> None:
        """Stop the agent (the first reason counts): its slaves get ``grace`` seconds."""
        with self.lock:
            if self.stopping is None:
                self.stopping = reason
                self.stop_deadline = time.monotonic() + grace
                self.exit_code = code
            self.changed.notify_all()
        self.wake()

    @property
    def says_goodbye(self) -> bool:
        """Whether the slaves still unregister as they go (not once the master is over or gone)."""
        return self.stopping not in SILENT_STOPS

    # ------------------------------------------------------------------ the slaves (lock held)

    def add(self, child: Child) -> None:
        self.children[child.conn.fileno()] = child

    def remove(self, child: Child) -> None:
        """Forget a slave process and close its socket."""
        del self.children[child.conn.fileno()]
        child.conn.close()

    def registered(self) -> List[Child]:
        """The slaves registered at the master now."""
        return [child for child in self.children.values() if child.slave_id is not None]

    def wants(self) -> List[tuple]:
        """``(slave_id, how many tasks to ask for it)`` for every registered slave."""
        return [(child.slave_id, child.want()) for child in self.registered()]

    @staticmethod
    def send(child: Child, message: tuple) -> None:
        try:
            child.conn.send(message)
        except OSError:
            pass   # it died: its end of file is read next

    def dispatch(self, child: Child) -> None:
        """Hand an idle slave its next task."""
        if self.stopping is not None:
            return
        while child.queue and len(child.sent) < child.ahead():
            task = child.queue.popleft()
            if not child.sent:
                child.started = time.monotonic()
            child.sent.append(task)
            self.send(child, ("task", task))
            if task[4] is not None:   # a time limit: the main loop must watch it
                self.wake()

    def apply(self, tasks: list, revoked: list, unknown: list) -> None:
        """Take in what an exchange returned."""
        by_id = {child.slave_id: child for child in self.registered()}
        for slave_id, batch in tasks:
            child = by_id.get(slave_id)
            if child is not None:   # else it died meanwhile: the master requeued these
                child.queue.extend(batch)
                self.dispatch(child)
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
                self.reregister = True
        if unknown:
            self.wake()

    def take_answers(self) -> List[tuple]:
        """The answers waiting to go, which the caller now sends."""
        answers, self.outbox = self.outbox, []
        return answers
