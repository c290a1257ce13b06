"""The joblib backend ``"scientific_ms"``: joblib's batches (scikit-learn's ``n_jobs``) on the farm.

::

    with joblib.parallel_config(backend="scientific_ms", n_jobs=4):    # 4 local slaves
    with joblib.parallel_config(backend="scientific_ms", executor=ex): # an Executor's slaves
    with joblib.parallel_config(backend="scientific_ms", label="sweep", use_name_server=False):
        ...                                   # whoever runs task_manager slave sweep

joblib hands the backend batches of calls (``BatchedCalls``, sized by
their measured duration: ``AutoBatchingMixin``); each is one Executor call
of :func:`runner.joblib_batch`, so the Executor's guarantees hold (a batch
whose slave dies runs again elsewhere; a call's exception is raised in the
caller, the slave's traceback as its ``__cause__``). As dask's backend, this
one hands joblib concurrent futures, completed by the Executor's collector
thread.

The Executor the backend starts (local slaves, or the master of a label)
serves every Parallel call inside the ``parallel_config`` block: slaves
start once. It ends with the backend object, when the block is left and
the object is collected, or at exit. A given ``executor`` is never ended.

Imported only by :func:`scientific_ms.register_joblib`: joblib stays optional.
"""

from __future__ import annotations

import concurrent.futures
import copy
import logging
import os
import threading
import weakref
from typing import Any, Callable, Optional, Set

# The base classes from where ray's backend and joblib's own import them (no public path).
from joblib import register_parallel_backend
from joblib._parallel_backends import AutoBatchingMixin, ParallelBackendBase

from ..errors import ConfigurationError
from ..executor.executor import Executor
from .runner import joblib_batch

log = logging.getLogger(__name__)

#: The name joblib knows the backend by.
NAME = "scientific_ms"


def register(make_default: bool = False) -> None:
    """Register :class:`ScientificMSBackend` with joblib as ``"scientific_ms"``."""
    register_parallel_backend(NAME, ScientificMSBackend, make_default=make_default)


class ScientificMSBackend(AutoBatchingMixin, ParallelBackendBase):
    """joblib's batches as calls of an :class:`Executor` (see the module's docstring).

    ``executor``: run on this Executor (left running). ``label``: the
    label of a master this backend starts, that slaves started with
    ``task_manager slave LABEL`` serve. ``options``: those of
    :class:`Executor` for the one it starts (``slaves`` too, with a label).
    Without either, ``n_jobs`` local slaves (-1: one per CPU).
    """

    supports_retrieve_callback = True
    #: As dask's: every slave there is, unless n_jobs says otherwise.
    default_n_jobs = -1

    def __init__(self, nesting_level: Optional[int] = None, inner_max_num_threads: Optional[int] = None, *,
                 executor: Optional[Executor] = None, label: Optional[str] = None, **options: Any):
        super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads)
        if executor is not None and (label is not None or options):
            raise ConfigurationError("parallel_config(backend='scientific_ms', executor=...) runs on that "
                                     "Executor: give no label or Executor options with it")
        self._executor = executor
        self._label = label
        self._options = options
        self._lock = threading.Lock()
        self._futures: Set[concurrent.futures.Future] = set()   # this backend's calls not done yet

    # ------------------------------------------------------------------ how many

    def effective_n_jobs(self, n_jobs: Optional[int]) -> int:
        """``n_jobs`` (-1: every CPU here; with an executor or a label: every slave connected, at least 2)."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            n_jobs = self.default_n_jobs
        if n_jobs > 0:
            return n_jobs
        if self._executor is not None or self._label is not None:
            # joblib runs n_jobs == 1 in the caller's process, never on the backend; slaves may join
            # later: at least 2, so that the work goes to the farm.
            connected = self._executor.master.task_manager.slave_count if self._executor is not None else 0
            return max(connected, 2)
        return max((os.cpu_count() or 1) + 1 + n_jobs, 1)

    def configure(self, n_jobs: Optional[int] = 1, parallel: Any = None, **backend_args: Any) -> int:
        """Start the Executor at the first Parallel call (joblib's other arguments do not apply)."""
        self.parallel = parallel
        n_jobs = self.effective_n_jobs(n_jobs)
        with self._lock:
            if self._executor is None:
                self._executor = self._start(n_jobs)
        return n_jobs

    def _start(self, n_jobs: int) -> Executor:
        options = dict(self._options)
        if self._label is None:
            options.setdefault("slaves", n_jobs)
        executor = Executor(self._label, **options)
        # Ends with this backend: the finalizer holds the Executor, not the backend.
        weakref.finalize(self, _end, executor)
        log.info("joblib backend %r: Executor %r started", NAME, executor.label)
        return executor

    # ------------------------------------------------------------------ the calls

    def submit(self, func: Callable[[], Any], callback: Optional[Callable] = None) -> concurrent.futures.Future:
        """Run one batch on a slave; ``callback(future)`` once it is done.

        joblib gets a future of its own, completed from the Executor's: the
        Executor's collector may hold the last future it completed for a
        while, and through joblib's callback that would keep the Parallel
        object, and this backend with its slaves, alive.
        """
        if self._executor is None:
            raise RuntimeError("the scientific_ms joblib backend was not configured (joblib calls configure)")
        given: concurrent.futures.Future = concurrent.futures.Future()
        if callback is not None:
            given.add_done_callback(callback)
        future = self._executor.submit(joblib_batch, func)
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(_Relay(given, self._futures, self._lock))
        return given

    #: joblib before 1.5 calls this name.
    apply_async = submit

    def retrieve_result_callback(self, out: concurrent.futures.Future) -> Any:
        """The batch's results, or its exception (the slave's traceback as its ``__cause__``)."""
        return out.result()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """A call failed: withdraw the batches no slave has started (the Executor stays)."""
        with self._lock:
            futures = list(self._futures)
        for future in futures:
            future.cancel()

    def terminate(self) -> None:
        """The end of a Parallel call: the Executor stays for the next one."""
        self.reset_batch_stats()
        self.parallel = None   # no cycle with the Parallel object: this backend is freed with its block

    def __reduce__(self):
        raise TypeError("the scientific_ms joblib backend cannot be pickled: it runs on the master only")


class _Relay:
    """Completes joblib's future from the Executor's, then lets go of it (see ``submit``)."""

    def __init__(self, target: concurrent.futures.Future, pending: Set[concurrent.futures.Future],
                 lock: threading.Lock):
        self._target: Optional[concurrent.futures.Future] = target
        self._pending, self._lock = pending, lock

    def __call__(self, done: concurrent.futures.Future) -> None:
        target, self._target = self._target, None
        with self._lock:
            self._pending.discard(done)
        if target is None:
            return
        if done.cancelled():   # withdrawn by abort_everything
            target.cancel()
            return
        error = done.exception()
        if error is not None:
            target.set_exception(_copy(error))
        else:
            target.set_result(done.result())


def _copy(error: BaseException) -> BaseException:
    """A copy of ``error`` (the same cause) for joblib to raise: the frames its raising adds stay
    off the Executor's own exception, which its collector may hold for a while (see ``submit``)."""
    try:
        copied = copy.copy(error)
    except Exception:   # an exception that does not copy: the original, with the frames it gets
        return error
    if type(copied) is not type(error):
        return error
    copied.__cause__ = error.__cause__
    return copied


def _end(executor: Executor) -> None:
    executor.shutdown(wait=True, cancel_futures=True)
