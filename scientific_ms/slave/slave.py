"""Slave processes: take tasks, run their ``do_<tag>`` handlers, send answers.

Two threads, each with its own connection:

* the main thread runs handlers, one task after another;
* the feed thread (``feed.py``) hands in answers and fetches tasks, ahead of
  time while tasks are short, so the handler rarely waits for the network.

Its heartbeats come from its keeper (``keeper.py``, ``kept.py``), a process
that runs no user code: a handler holding the GIL or stuck in C code keeps
them, and one stuck past its time limit is ended there. The keeper learns
at once when the master finishes; if the main thread is then still inside a
handler, the slave gives it a moment and exits anyway (the keeper kills it
a moment later if it cannot), so no slave outlives its master by more than
about a second. A slave started in a thread (or with ``keeper=False``) has
no keeper: a watch thread (``heartbeat.py``) beats its heart instead.

What the threads share while serving one master is a ``Session``
(``session.py``).

A slave leaves on its own, as a goodbye the master acts on at once, when it
gets SIGTERM (a batch system's walltime: the running handler gets
``SCIENTIFIC_MS_TERM_GRACE`` seconds to finish) or when it had no work for
``idle_timeout`` seconds (``departure.py``); either way it exits 0.

A slave that the master declared dead (stopped, or cut off, for too long)
and that comes back registers again under a new id; whatever it was running
has been rescheduled, and its late answer counts only if it is the first.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
import threading
from typing import Callable, Dict, List, Mapping, Optional

from .. import settings
from ..core.needs import declared
from ..core.tasks import ANY_TAG
from ..errors import ConfigurationError, ConnectionLostError, ScientificMSError
from ..logs import apply_debug_flag
from ..machine import process_info, tune_allocator
from ..wire import discovery, leaving
from ..wire.client import MasterConnection, connect
from ..wire.payload import Payload, dumps_result, loads_parameters
from ..wire.protocol import LEFT_IDLE, LEFT_SIGTERM, OK, Answer, TaskMessage
from . import departure, rejoin
from .feed import END, LEAVE, TaskFeed
from .heartbeat import Heartbeat
from .kept import KeeperSide
from .output import OutputCapture, start_forwarding
from .running import run_task
from .session import Session

log = logging.getLogger(__name__)



def handlers_in(namespace: Mapping[str, object]) -> Dict[str, Callable]:
    """``{tag: handler}`` for every callable ``do_<tag>`` in a namespace."""
    return {name[3:]: value for name, value in namespace.items()
            if name.startswith("do_") and len(name) > 3 and callable(value)}


class SlaveProcess:
    """Slave process in a master-slave setup.

    Subclass it and add ``do_<tag>(self, *parameters)`` methods, then call
    :meth:`start`. ``label`` names the master; ``master_host`` (``HOST`` or
    ``HOST:PORT``) skips discovery. ``watchdog_period`` is the heartbeat
    interval in seconds (None: no heartbeats, so a hung slave goes
    unnoticed). With ``wait=True`` a slave started before its master waits
    for it (at most ``wait_timeout`` seconds, if given; else at most
    ``idle_timeout`` seconds, if given, after which it returns). ``rejoin_grace``:
    seconds to wait for a master that vanished to be started again under the
    same label (default SCIENTIFIC_MS_REJOIN_GRACE, else 60 s when the master
    keeps a journal and did not start this slave itself, else 0).
    ``idle_timeout``: leave after that many seconds without a task (default
    SCIENTIFIC_MS_IDLE_TIMEOUT, else never), so that a batch allocation is
    freed when the queue runs dry. SIGTERM makes the slave leave too: see
    ``departure.py``. ``keeper``: whether :meth:`start`, in the main thread
    of a POSIX process, forks a keeper process (``keeper.py``; default
    SCIENTIFIC_MS_KEEPER, else yes). ``resources``: what this slave's host
    offers tasks that need resources, ``"gpu=2,memory=64G,cores=8"`` or a dict
    (default SCIENTIFIC_MS_RESOURCES, else no GPU, the memory psutil sees, one
    core; docs/guide/resources.md).
    """

    def __init__(self, label: str, master_host: Optional[str] = None,
                 watchdog_period: Optional[float] = 120.0, *, wait: bool = False,
                 wait_timeout: Optional[float] = None, key_file: Optional[str] = None,
                 hard_exit: bool = True, rejoin_grace: Optional[float] = None,
                 idle_timeout: Optional[float] = None, keeper: Optional[bool] = None,
                 resources: Optional[object] = None):
        self.label = discovery.check_label(label)
        self.resources = declared(resources)   # what this host offers (core/resources.py)
        if watchdog_period is not None and not (isinstance(watchdog_period, (int, float)) and watchdog_period > 0):
            raise ConfigurationError(f"watchdog_period must be a positive number of seconds or None, "
                                     f"got {watchdog_period!r}")
        self.master_host = master_host
        self.watchdog_period = watchdog_period
        self.wait = wait
        self.wait_timeout = wait_timeout
        self.key_file = key_file
        self.hard_exit = hard_exit
        self.rejoin_grace = None if rejoin_grace is None else settings.rejoin_grace(rejoin_grace)
        self.idle_timeout = settings.idle_timeout(idle_timeout)
        self._leave_reason: Optional[str] = None   # LEFT_IDLE or LEFT_SIGTERM once leaving on our own
        self.done = False
        self.process_id: Optional[int] = None
        self.task_methods = {name: method for name, method in inspect.getmembers(self, inspect.isroutine)
                             if name.startswith("do_") and len(name) > 3}
        self._connection: Optional[MasterConnection] = None
        self._session = Session()   # what the threads share while serving one master
        self._registration: tuple = ()
        self._rejoin_lock = threading.Lock()
        self._abandoned: List[int] = []   # assignments whose handler ended this slave
        self._keeper = keeper
        self._kept = KeeperSide(self, lambda: self._session)   # this process's keeper, if any (kept.py)
        self._output = OutputCapture()   # what handlers print, for the master (output.py)

    @property
    def _master_connection(self) -> MasterConnection:
        """The connection to the master, from start() on."""
        if self._connection is None:
            raise ConnectionLostError(f"slave of {self.label!r} is not connected to its master")
        return self._connection

    def terminationTest(self) -> bool:
        """Override to stop serving early; checked before each batch of tasks."""
        return False

    # ------------------------------------------------------------------ main loop

    def start(self, namespace: Optional[Dict[str, object]] = None) -> None:
        """Serve tasks until the master finishes or ``terminationTest()`` is true.

        ``namespace``: a dict holding ``do_<tag>`` functions, used instead of
        this object's methods. Raises ConnectionLostError if the master dies
        (and does not come back within the rejoin grace).
        """
        handlers = handlers_in(namespace if namespace is not None else self.task_methods)
        if not handlers:
            raise ConfigurationError(
                "this slave has no task handlers: define do_<tag> methods on the SlaveProcess "
                "subclass, or do_<tag> functions in the slave script")
        apply_debug_flag()
        tune_allocator()
        self._kept.attach(self._keeper)
        try:
            self._start(handlers)
        except SystemExit:
            raise   # a handler ended this worker: its keeper sees a death
        except BaseException:
            self._kept.finish()
            raise
        finally:
            self._output.uninstall()   # lines the master never got are printed here
        self._kept.finish()

    def _start(self, handlers: Dict[str, Callable]) -> None:
        self._connection = self._kept.relay_connection() or departure.connect_or_leave(
            functools.partial(connect, self.label, self.master_host, key_file=self.key_file),
            self.wait, self.wait_timeout, self.idle_timeout, self.label)
        if self._connection is None:   # waited for a master for the idle timeout: leave
            leaving.announce()
            return
        while True:
            try:
                self._serve_master(handlers)
                return
            except ConnectionLostError as error:
                connection = rejoin.wait_for_restarted_master(self, self._session, error)
                if connection is None:
                    if str(error).startswith("slave of"):
                        raise
                    # lost while registering, before the feed could say so
                    raise ConnectionLostError(f"slave of {self.label!r} lost its master\n  {error}") from None
                self._session = self._session.renewed()
                self.done = False
                self._connection = connection

    def _serve_master(self, handlers: Dict[str, Callable]) -> None:
        """Register with the master at ``self._connection`` and serve it until it ends."""
        # SIGTERM from here on is a goodbye (before, there is nothing to give back).
        termination = departure.TerminationSignal(self._on_sigterm)
        termination.install()
        connection = self._master_connection
        try:
            info = process_info()
            if self._kept.keeper_pid is not None:
                info["keeper"] = self._kept.keeper_pid   # the process that beats our heart (show, tests)
            if self._kept.keeper_id is not None:
                info["agent"] = self._kept.keeper_id   # the master binds us to our keeper's connection
            else:   # a lone slave: its own host pool (a keeper's workers share the keeper's)
                info["resources"] = self.resources
            self._registration = (info, sorted(handlers), self.watchdog_period)
            status, self.process_id = connection.call("register", "slave", *self._registration)
            if status != OK:
                log.info("the master of %r has already finished", self.label)
                self._session.main_done.set()
                connection.close()
                leaving.announce()
                return
            self._serve_registered(handlers)
        finally:
            termination.uninstall()

    def _serve_registered(self, handlers: Dict[str, Callable]) -> None:
        connection = self._master_connection
        log.info("slave %s serving %r at %s, tags %s", self.process_id, self.label,
                 connection.address, ", ".join(sorted(handlers)))
        session = self._session
        clean = False
        try:   # registered: from here on, even a Ctrl-C during these first calls ends in a goodbye
            start_forwarding(self._output, connection, self.process_id)
            session.rejoin_grace = rejoin.grace_for(connection, self.rejoin_grace)
            if self._kept.link is not None:   # the keeper beats our heart, and times our tasks
                self._kept.hello(connection)
            elif self.watchdog_period is not None:
                Heartbeat(self, session, connection, self._rejoin).start()
            self._serve(handlers)
            clean = True
        finally:
            session.leaving.set()   # no more heartbeats or rejoining: we are leaving
            if clean or isinstance(sys.exc_info()[1], (KeyboardInterrupt, SystemExit)):
                # Say goodbye before closing, so that no closing connection reads as a death;
                # name the task a handler was running when it ended the slave: that one is lost.
                self._goodbye(self._master_connection)   # (another one, if the feed kept the first busy)
            session.main_done.set()
            self._master_connection.close()
            session.close_connections()
            self.done = True   # the watch thread ends when its long-poll returns
        leaving.announce()   # reached only when serving ended cleanly

    def _goodbye(self, connection: MasterConnection) -> None:
        """``unregister``: the tasks this slave holds go back; a reason if it leaves on its own."""
        self._kept.leaving()   # first: once unregistered, the keeper must not read our absence as a death
        arguments: List[object] = [self._abandoned] if self._abandoned else []
        if self._leave_reason is not None:
            arguments = [self._abandoned, self._leave_reason]
        try:
            connection.call("unregister", self.process_id, *arguments, timeout=5.0)
        except ScientificMSError:
            pass

    def _serve(self, handlers: Dict[str, Callable]) -> None:
        session, connection, process_id = self._session, self._master_connection, self.process_id
        assert process_id is not None   # registered (_serve_master)
        session.feed = feed = TaskFeed(self._kept.relayed(connection), process_id, self._rejoin,
                                       self._output.buffer if self._output.installed else None)
        if self._leave_reason is not None:   # SIGTERM came before the feed existed
            feed.leave()
        idle = departure.IdleClock(self.idle_timeout)
        feed.start()
        try:
            while True:
                if self.terminationTest():
                    log.info("terminationTest() is true: slave %s stops", self.process_id)
                    return
                task = feed.next_task(idle.wait(settings.POLL_SECONDS))
                if task is None:
                    if idle.expired():
                        self._leave_reason = LEFT_IDLE
                        log.warning("slave %s of %r had no work for %g s (idle timeout): it leaves",
                                    self.process_id, self.label, self.idle_timeout)
                        return
                    continue
                if task is END:
                    log.info("the master of %r finished; slave %s exits", self.label, self.process_id)
                    return
                if task is LEAVE:
                    log.warning("slave %s of %r got SIGTERM: it gave its unstarted tasks back and leaves",
                                self.process_id, self.label)
                    return
                handler = handlers.get(task.tag) or handlers[ANY_TAG]
                feed.put_answer(self._run(handler, task))
                if self.idle_timeout is not None:
                    idle.busy()
        except ConnectionLostError as error:
            if session.master_gone is not None:
                raise ConnectionLostError(session.master_gone) from None
            raise ConnectionLostError(f"slave of {self.label!r} lost its master\n  {error}") from None
        finally:
            if feed.stop(timeout=0.5):
                connection.claim()
            elif feed.ended is None:   # it waits for work on the main connection: say goodbye on another
                session.busy_connection = connection
                try:
                    self._connection = connection.duplicate()
                except ScientificMSError:
                    self._connection = connection

    def _run(self, handler: Callable, task: TaskMessage) -> Answer:
        try:
            return run_task(handler, task, self._session, self._kept.link, self._load_parameters,
                            self._dump_result)
        except BaseException:   # KeyboardInterrupt, SystemExit: the handler ends this slave mid-task
            self._abandoned.append(task.assignment)
            raise

    def _load_parameters(self, payload: Payload) -> tuple:
        """Unpickle a task's parameters (a subclass may know a faster way for its tasks)."""
        return loads_parameters(payload, self._fetch_state)

    def _dump_result(self, result: object) -> Payload:
        """Pickle a handler's result for the master, large buffers out of band
        (a subclass may pickle more kinds of values)."""
        return dumps_result(result)

    def _rejoin(self, old_process_id: int, connection: MasterConnection) -> int:
        """Register again after the master declared us dead; returns the current id.

        Both threads may find out at once; the first one registers.
        """
        with self._rejoin_lock:
            if self.process_id == old_process_id and not self._session.leaving.is_set():
                log.warning("the master of %r declared slave %s dead (it had not heard from it in "
                            "time); joining again", self.label, old_process_id)
                status, new_id = connection.call("register", "slave", *self._registration)
                if status == OK:
                    self.process_id = new_id
                    self._kept.hello(connection)
            current = self.process_id
        return old_process_id if current is None else current   # (None only before the first register)

    def _fetch_state(self, label: str) -> object:
        """A global state value, fetched from the master at most once per slave."""
        return self._session.fetch_state(label, self._master_connection)

    # ------------------------------------------------------------------ SIGTERM thread

    def _on_sigterm(self) -> None:
        """On the signal thread: stop taking tasks; abandon the running one after the grace."""
        self._leave_reason = LEFT_SIGTERM
        session = self._session
        feed = session.feed
        dropped = feed.leave() if feed is not None else 0
        grace = settings.term_grace()
        task = session.current_task
        log.warning("slave %s of %r got SIGTERM: giving back %d unstarted task(s)%s", self.process_id,
                    self.label, dropped, f", letting task {task} run for up to {grace:g} s" if task else "")
        if session.main_done.wait(grace):
            return
        message = (f"slave {self.process_id} of {self.label!r} got SIGTERM; task {session.current_task} "
                   f"ran {grace:g} s longer: abandoning it (it runs again elsewhere) and exiting")
        if self.hard_exit:
            connection: Optional[MasterConnection]
            try:
                connection = self._master_connection.duplicate()
            except ScientificMSError:
                connection = None
            if connection is not None:   # the main thread still runs the handler: a connection of our own
                self._goodbye(connection)
            leaving.announce()
            self._kept.bye()
            self._output.uninstall()   # our last words where we run, and the lines not yet sent
            log.warning("%s", message)
            sys.stderr.write(f"scientific_ms: {message}\n")
            sys.stderr.flush()
            os._exit(0)
        log.warning("%s", message)
