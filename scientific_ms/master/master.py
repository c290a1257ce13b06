"""The master process: owns the TaskManager, serves it, and starts slaves."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .. import settings
from ..core.affinity import check_affinity
from ..core.manager import TaskManager
from ..core.needs import Need, parse_need
from ..core.results import Outcome
from ..core.steering import Retry, check_steering
from ..core.tasks import check_request
from ..dashboard import start_in_master as start_dashboard
from ..errors import ConfigurationError, TaskManagerTermination
from ..logs import apply_debug_flag
from ..machine import output_streams, process_info, tune_allocator
from ..progress import master_progress
from ..wire import auth, discovery, tls
from ..wire.payload import Payload, answer_value
from . import launch
from .ending import terminate_on_sigterm
from .endpoint import MasterEndpoint
from .global_state import GlobalStates
from .journaled import JournaledTasks, PlainTasks
from .output import forward_slave_output
from .started_slaves import StartedSlaves

log = logging.getLogger(__name__)

#: How long shutdown() waits for slaves to leave before it closes their connections.
SHUTDOWN_GRACE_SECONDS = 3.0


class MasterProcess:
    """Master process in a master-slave setup.

    Subclass it and override :meth:`run`, which calls :meth:`requestTask` and
    :meth:`retrieveResult`; then call :meth:`start`. Creating the object
    starts the task manager and publishes ``label`` (label file, and the
    Pyro5 name server if ``use_name_server`` and one is reachable).

    Keyword options: ``host`` (interface to listen on, default all, or
    SCIENTIFIC_MS_HOST), ``port`` (default 7766 when free, else any, or
    SCIENTIFIC_MS_PORT), ``secret`` (default SCIENTIFIC_MS_SECRET, a key
    file, or a fresh random one), ``missed_heartbeats`` (4) and
    ``max_slave_losses`` (3), see :class:`TaskManager`; ``slave_restarts``
    (how often each slave started by :meth:`launchSlaveJobs` is replaced when
    it dies; default 5, or SCIENTIFIC_MS_SLAVE_RESTARTS) and
    ``task_time_limit`` (seconds a handler may run; default None: no limit;
    see :meth:`request_task`); ``tls_cert`` and ``tls_key`` (files; or
    SCIENTIFIC_MS_TLS_CERT/KEY) put every connection under TLS.
    ``progress=True``
    (or SCIENTIFIC_MS_PROGRESS=1) draws a bar of results retrieved against
    tasks requested on stderr, when stderr is a terminal.
    ``memory_budget`` (bytes, or text such as ``"8G"``; default
    SCIENTIFIC_MS_MEMORY_BUDGET, else a quarter of this machine's memory)
    bounds the parameters of waiting tasks (``requestTask`` then waits for
    slaves to take some) and the results not yet retrieved (slaves then get
    no new tasks until ``retrieveResult`` is called); nothing is lost.
    ``journal`` (a file name, or SCIENTIFIC_MS_JOURNAL) keeps every accepted
    answer, with its request, in an SQLite journal: a master killed and
    started again with the same journal resumes, answering the requests
    already answered from it (see docs/guide/journal.md). ``keep_journal`` (default True, or
    SCIENTIFIC_MS_KEEP_JOURNAL): False removes the journal when the job ends
    cleanly (run() returned and every result was retrieved).
    ``dashboard`` (True, a port, or SCIENTIFIC_MS_DASHBOARD) serves a live web
    page of the job on 127.0.0.1 and logs its URL (see docs/guide/dashboard.md).
    ``start_method``: how :meth:`launchSlaveJobs` starts slaves here,
    ``"forkserver"`` (forked from a warm template that imported scientific_ms
    and the ``preload`` modules once) or ``"spawn"`` (a fresh interpreter
    each); default SCIENTIFIC_MS_START_METHOD, else ``"forkserver"`` when
    ``preload`` is given or :func:`warm_start` was called, else ``"spawn"``. ``preload``: module names
    (default SCIENTIFIC_MS_PRELOAD, else the installed packages that the
    program's ``__main__`` uses); see docs/guide/warm-start.md.
    ``slave_output`` (True, False, a file name; or SCIENTIFIC_MS_SLAVE_OUTPUT):
    what the slaves' handlers print and log is shown on the master's stderr
    (True, the default) or appended to that file, each line headed
    ``[slave ID@HOST]``; False leaves it where each slave runs (see
    docs/guide/output.md).
    """

    #: One task's parameters above this size get a warning (once per tag).
    LARGE_PARAMETERS = 16 * 1024 * 1024

    def __init__(self, label: str, use_name_server: bool = True, *, host: Optional[str] = None,
                 port: Optional[int] = None, secret: Optional[bytes] = None,
                 missed_heartbeats: float = 4, max_slave_losses: int = 3,
                 progress: Optional[bool] = None, slave_restarts: Optional[int] = None,
                 task_time_limit: Optional[float] = None, tls_cert: Optional[str] = None,
                 tls_key: Optional[str] = None, memory_budget=None, journal: Optional[str] = None,
                 keep_journal: Optional[bool] = None, dashboard=None,
                 start_method: Optional[str] = None, preload: Optional[Sequence[str]] = None,
                 slave_output=None):
        self.label = discovery.check_label(label)
        # Bad options fail before anything starts.
        slave_output = settings.slave_output(slave_output)
        self._slaves = StartedSlaves(self, start_method, preload)   # what launchSlaveJobs starts
        self._progress = master_progress(label, progress)  # None unless wanted and stderr is a terminal
        apply_debug_flag()
        tune_allocator()
        self.task_manager = TaskManager(missed_heartbeats=missed_heartbeats,
                                        max_slave_losses=max_slave_losses,
                                        memory_budget=settings.memory_budget(memory_budget))
        self.process_id = self.task_manager.register_process("master", process_info())
        # Before any slave can register: each asks once whether to send its output.
        self._output_printer = forward_slave_output(self.task_manager, slave_output, output_streams())
        if isinstance(secret, str):
            secret = secret.encode()
        secret = secret or settings.secret_from_environment()
        journal = settings.journal(journal)
        # Opened before the master is published: a bad journal fails first. Tests read _journal.replayed.
        self._journal = None if journal is None else \
            JournaledTasks(self.task_manager, journal, self.label, secret or auth.new_secret())
        self._requests = self._journal or PlainTasks(self.task_manager)   # where every request goes
        self.keep_journal = settings.keep_journal(keep_journal)
        self._run_failed = False
        self.secret: bytes = secret or self._requests.secret or auth.new_secret()
        self.host = host or settings.bind_host()
        self.tls_cert, tls_key = tls.server_files(tls_cert, tls_key)
        tls_context = tls.server_context(self.tls_cert, tls_key)
        try:
            self._endpoint = MasterEndpoint(self.task_manager, label, self.secret, self.host, port, tls_context,
                                            use_name_server)
        except BaseException:
            self._requests.close(failed=True)
            raise
        self._states = GlobalStates(self.task_manager)
        self.global_states: Dict[int, List[str]] = self._states.names   # state id -> names
        self.slave_restarts = settings.slave_restarts(slave_restarts)
        self.task_time_limit = task_time_limit
        self._shutdown_lock = threading.Lock()
        self._shut_down = False
        log.info("master of %r listening on %s:%d", label, self.host, self.port)
        self._dashboard = None
        try:
            self._dashboard = start_dashboard(self, dashboard)   # None unless asked for
        except BaseException:   # a bad option, a port taken: no master is left behind
            self._run_failed = True   # keeps the journal, whatever keep_journal says
            self.shutdown()
            raise

    @property
    def port(self) -> int:
        """The TCP port the task manager listens on."""
        return self._endpoint.port

    # ------------------------------------------------------------------ tasks

    def requestTask(self, tag: str, *parameters: Any) -> str:
        """Queue a task for a slave's ``do_<tag>(*parameters)``; returns its id.

        Parameters are pickled here, so an unpicklable one raises
        SerializationError at this call. Task order is not defined.
        """
        return self.request_task(tag, *parameters)

    def request_task(self, tag: str, *parameters: Any, time_limit: Optional[float] = None,
                     priority: float = 0, retries: int = 0, retry_on: Any = None,
                     resources: Any = None, affinity: Any = None) -> str:
        """``requestTask`` with options (keyword-only: they never mix with the parameters).

        ``time_limit``: seconds the handler may run (default: the master's
        ``task_time_limit``). A handler that runs longer is interrupted on the
        slave, which goes on with other tasks; the task is *reported*, not
        rescheduled: ``retrieveResult`` raises TaskRaisedException whose
        exception is a TaskTimeLimitError. If the slave cannot interrupt the
        handler (it is stuck inside C code, or the slave hangs), the master
        reports the task anyway a few seconds later.

        ``priority``: waiting tasks with a higher one go first (default 0).
        ``retries``: a task whose handler raised (one of ``retry_on``, a class
        or tuple; default any) runs again, on another slave when there is one,
        up to this many more times; then its last exception is delivered,
        naming the attempts. See docs/guide/scheduling.md.

        ``resources``: what it holds while it runs, ``{"gpu": 1, "memory": "8G",
        "cores": 4}`` (default: its tag's, :meth:`set_resources`); it runs only
        on a host that has them free. See docs/guide/resources.md.

        ``affinity``: a key (a name, a path) for what the task loads; it goes
        preferably to the slave that last ran a task with that key, which
        others leave it to for about its estimated duration at most. See
        docs/guide/scheduling.md.
        """
        retry = None if priority == 0 and retries == 0 and retry_on is None else \
            check_steering(priority, retries, retry_on)   # (the defaults, at once)
        need = None if resources is None else parse_need(resources)
        limit = self.task_time_limit if time_limit is None else time_limit
        payload, uses_state = self._states.dumps_parameters(tag, parameters, self.LARGE_PARAMETERS)
        # the parameters themselves only when a journal must match placeholders by their values
        task_id = self._requests.add_task(tag, payload, limit, parameters if uses_state else None, priority, retry,
                                          need, None if affinity is None else check_affinity(affinity))
        if self._progress is not None:
            self._progress.update_counters(self.task_manager.counters)
        return task_id

    def add_pickled_tasks(self, tag: str, payloads: Sequence[Payload], time_limit: Optional[float],
                          priority: float = 0, retry: Optional[Retry] = None,
                          need: Optional[Need] = None, affinity: Any = None) -> List[str]:
        """Queue tasks whose parameters are pickled already (an Executor's calls); returns their ids.

        With a journal, each is matched by its tag and pickled parameters as
        ``requestTask`` matches its requests: one answered before is delivered
        from the journal and not run again. ``priority``, ``retry``: see
        :meth:`request_task` (``scheduling.check_steering`` makes a Retry); ``need``: the
        resources each holds while it runs (``needs.parse_need``); ``affinity``: their key
        (``affinity.check_affinity``).
        """
        return self._requests.add_tasks(tag, payloads, time_limit, priority=priority, retry=retry, need=need,
                                        affinity=affinity)

    def set_resources(self, tag: str, resources: Any) -> None:
        """What tasks of ``tag`` need unless their request says, ``{"gpu": 1, "memory": "8G"}``
        (None: nothing); for tasks requested from now on. See docs/guide/resources.md."""
        check_request(tag, None)
        self.task_manager.set_resources(tag, parse_need(resources, f"set_resources({tag!r}, ...)"))

    def limit_concurrency(self, tag: str, n: Optional[int]) -> None:
        """At most ``n`` tasks of ``tag`` run at once across the farm (None: no limit);
        tasks a slave holds queued count as running. See docs/guide/scheduling.md."""
        check_request(tag, None)
        self.task_manager.limit_concurrency(tag, n)

    def cancel_task(self, task_id: str) -> bool:
        """Withdraw a task that no slave has started; False if it runs, is answered or is unknown."""
        return self.task_manager.cancel_task(task_id)

    def take_answers(self, limit: int, tag: Optional[str] = None,
                     timeout: Optional[float] = None) -> List[Outcome]:
        """Up to ``limit`` answers at once (read each with :meth:`read_answer`), oldest first.

        Waits for the first as ``retrieveResult`` does, and raises as it
        does, except that TaskManagerTermination is raised, not turned into
        ``(None, None, None)``.
        """
        return self.task_manager.get_answers(limit, tag, timeout)

    def task_state(self, task_id: str) -> Optional[str]:
        """A task's state ("waiting", "running", "finished", "failed"); None if unknown or delivered."""
        return self.task_manager.task_state(task_id)

    def store_data(self, label: str, data: bytes) -> None:
        """Store pickled bytes under ``label`` for the slaves to fetch (an Executor's functions)."""
        self.task_manager.store_data(label, data)

    def retrieveResult(self, tag: Optional[str] = None, *,
                       timeout: Optional[float] = None) -> Tuple[Optional[str], Optional[str], Any]:
        """Wait for a result (of a task with ``tag``, if given): ``(task_id, tag, result)``.

        Raises TaskRaisedException if the handler raised (or the task kept
        losing its slaves), NoTasksPendingError if no matching task is
        outstanding, TimeoutError after ``timeout`` seconds. Returns
        ``(None, None, None)`` once the task manager is terminated.
        """
        try:
            outcome = self.task_manager.get_answer(tag, timeout)
        except TaskManagerTermination:
            return None, None, None
        self.count_delivered()
        return outcome.task_id, outcome.tag, self.read_answer(outcome)

    def read_answer(self, outcome: Outcome) -> Any:
        """The result of a task the task manager delivered; raises TaskRaisedException if it failed."""
        return answer_value(outcome.payload, outcome.ok, outcome.traceback, outcome.task_id, outcome.tag)

    def count_delivered(self) -> None:
        """Show results retrieved (by retrieveResult or an Executor) on the progress bar."""
        if self._progress is not None:
            self._progress.update_counters(self.task_manager.counters)

    # ------------------------------------------------------------------ shared state

    def setGlobalState(self, **values: Any) -> int:
        """Store values once; returns a state id for ``GlobalStateValue(state_id, name)``."""
        return self._states.store(values)

    def deleteGlobalState(self, state_id: int) -> None:
        """Drop the values stored under ``state_id``.

        Tasks requested afterwards may not refer to them (``requestTask``
        raises ConfigurationError); slaves drop nothing they already fetched.
        """
        self._states.delete(state_id)

    # ------------------------------------------------------------------ slaves

    def store_slave_code(self, source: str, script: Optional[str] = None,
                         argv: Optional[List[str]] = None) -> None:
        """Keep the slaves' code so that ``task_manager slave LABEL`` and spawned slaves can run it."""
        launch.store_slave_code(self.task_manager, source, script, argv)

    def launchSlaveJobs(self, n: Any = 1) -> None:
        """Start ``n`` slave processes on this machine, running the stored slave code.

        They are supervised: one that dies while the job runs is replaced (up
        to ``slave_restarts`` times each), and all are reaped at shutdown.
        ``n`` may instead be ``SlurmSlaves(...)`` or ``LocalSlaves(...)``: jobs
        of slaves held between a minimum and a maximum from the waiting work,
        all cancelled at shutdown (``provision/``); ProvisionError, with the
        batch system's message, if it refuses them.
        """
        self._slaves.launch(n)

    @property
    def slave_jobs(self) -> List[Dict]:
        """The jobs held for ``launchSlaveJobs(SlurmSlaves(...))``: id, provider, state, ages."""
        return self._slaves.jobs()

    @property
    def spawned_slaves(self) -> List[int]:
        """PIDs of the slave processes started by :meth:`launchSlaveJobs` that run now."""
        return self._slaves.pids

    @property
    def slave_replacements(self) -> int:
        """How many spawned slaves that died were replaced so far."""
        return self._slaves.restarts

    def wait_for_slaves(self, count: int = 1, timeout: Optional[float] = None) -> None:
        """Block until at least ``count`` slaves are connected.

        Raises TimeoutError after ``timeout`` seconds, TaskManagerTermination
        once the master is shut down.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ConfigurationError(f"wait_for_slaves(count): a whole number >= 0, got {count!r}")
        if not self.task_manager.wait_for_slaves(count, timeout):
            raise TimeoutError(f"fewer than {count} slaves connected within {timeout} s")

    # ------------------------------------------------------------------ life cycle

    def run(self) -> None:
        """The master's work; override it in a subclass."""
        raise NotImplementedError("subclass MasterProcess and override run()")

    def start(self) -> Any:
        """Run :meth:`run`, then :meth:`shutdown` (also when run() raises or is interrupted);
        returns what run() returned."""
        with terminate_on_sigterm():
            try:
                return self.run()
            except BaseException:
                self._run_failed = True   # the journal is kept, whatever keep_journal says
                raise
            finally:
                self.shutdown()

    def shutdown(self) -> None:
        """Terminate the task manager: slaves exit, the label is withdrawn. Idempotent."""
        with self._shutdown_lock:
            if self._shut_down:
                return
            self._shut_down = True
        deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
        self.task_manager.terminate()
        if self._progress is not None:
            self._progress.close()
        if not self.task_manager.wait_until_no_slaves(SHUTDOWN_GRACE_SECONDS):
            log.warning("some slaves did not leave within %.0f s; closing their connections",
                        SHUTDOWN_GRACE_SECONDS)
        self._slaves.stop(max(0.1, deadline - time.monotonic()))   # and the fork server, the slave jobs
        if self._dashboard is not None:
            self._dashboard.close()
        self._endpoint.close()
        if self._output_printer is not None:
            self._output_printer.close()   # after the server: the slaves' last lines are in
        self._requests.close(failed=self._run_failed, keep=self.keep_journal)
        self._endpoint.withdraw()
        log.info("master of %r shut down", self.label)

