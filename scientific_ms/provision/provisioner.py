"""The master's provisioning loop: holds the slave jobs that ``scaling.decide`` asks for.

One thread per master. Every ``LOOP_SECONDS`` it reads the waiting work and
per-tag estimates from the task manager, refreshes the jobs' states from the
provider (at most every ``poll_seconds``), and submits or withdraws jobs.
Before the loop starts, :meth:`Provisioner.start` submits what is wanted at
once and lets the provider check a job (``sbatch --test-only``), so a bad
partition or a missing sbatch raises at ``launchSlaveJobs``. :meth:`stop`
(the master's shutdown) cancels every job still pending or running. The
job table is published in the master's shared data under :data:`JOBS_KEY`
for ``task_manager show``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from typing import Callable, Dict, List, Optional

from ..errors import ProvisionError
from .provider import DONE, PENDING, JobRequest, Provider, SlaveJobs
from .scaling import JobCounts, decide

log = logging.getLogger(__name__)

#: The shared-data key of the job table (JSON), read by ``task_manager show``.
JOBS_KEY = "scientific_ms.provision.jobs"

#: Seconds between two decisions.
LOOP_SECONDS = 0.5

#: Done jobs kept in the job table (``master.slave_jobs``).
KEEP_DONE = 100

#: Seconds to wait after a failed submission before trying again.
RETRY_SECONDS = 30.0


class Job:
    """One submitted job as the master sees it."""

    def __init__(self, job_id: str, keep: bool, now: float, warning_after: Optional[float] = None):
        self.job_id = job_id
        self.keep = keep                  # holds min_jobs: submitted with no idle timeout
        self.warning_after = warning_after   # seconds after its start at which it drains
        self.state = PENDING
        self.submitted = now
        self.started: Optional[float] = None
        self.ended: Optional[float] = None      # when it was first seen done
        self.cancelled = False

    def as_dict(self, now: float, provider: str, ending: bool) -> Dict:
        state = "leaving" if (self.cancelled or ending) and self.state != DONE else self.state
        until = now if self.ended is None else self.ended
        return {"id": self.job_id, "provider": provider, "state": state,
                "seconds_since_submitted": round(now - self.submitted, 1),
                "running_seconds": None if self.started is None else round(until - self.started, 1),
                "seconds_since_ended": None if self.ended is None else round(now - self.ended, 1)}


class Provisioner:
    """Holds ``spec``'s jobs for one master (``request(keep, number)`` builds each job)."""

    def __init__(self, spec: SlaveJobs, manager, request: Callable[[bool, int], JobRequest],
                 poll_seconds: Optional[float] = None):
        self.spec = spec
        self.provider: Provider = spec.provider()
        self._manager = manager
        self._request = request
        self.poll_seconds = poll_seconds if poll_seconds is not None else \
            (0.5 if self.provider.name == "local" else 5.0)   # squeue is a load on slurmctld
        self._lock = threading.Lock()
        self._jobs: Dict[str, Job] = {}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._last_poll = float("-inf")
        self._retry_at = float("-inf")
        self._published: Optional[bytes] = None
        self.submitted = 0
        self.errors: List[str] = []

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Check one job with the batch system, submit what is wanted now, start the loop.

        Raises ProvisionError (with the batch system's message) if the check
        or the first submissions fail.
        """
        try:
            self.provider.check(self._request(False, 0))
            self.step(raise_errors=True)
        except BaseException:
            self.stop()   # the jobs submitted before the one refused
            raise
        self._thread = threading.Thread(target=self._loop, name="scientific_ms-provisioner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop submitting; cancel every job not done yet; release the provider."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10.0)
        with self._lock:
            live = [job for job in self._jobs.values() if job.state != DONE]
            for job in live:
                job.cancelled = True
        if live:
            log.info("cancelling %d slave job(s): %s", len(live), " ".join(job.job_id for job in live))
            with contextlib.suppress(ProvisionError):
                self.provider.cancel([job.job_id for job in live])
        self.provider.close()

    def _loop(self) -> None:
        while not self._stop.wait(LOOP_SECONDS):
            try:
                self.step()
            except Exception:
                log.exception("the provisioning loop failed once; going on")

    # ------------------------------------------------------------------ one decision

    def step(self, raise_errors: bool = False) -> None:
        """Refresh the jobs' states if due, then submit or withdraw jobs as ``scaling.decide`` says."""
        now = time.monotonic()
        if now - self._last_poll >= self.poll_seconds:
            self._refresh(now)
        if self._manager.terminated:
            return
        counts = self._manager.counts()
        waiting = counts.get("waiting", {})
        running_tasks = sum(counts.get("running", {}).values())
        with self._lock:
            jobs = self._counts(now)
        decision = decide(waiting, self._manager.waiting_estimates(), running_tasks, jobs,
                          self.spec.slaves_per_job, self.spec.min_jobs, self.spec.max_jobs)
        if decision.submit and now >= self._retry_at:
            self._submit(decision.submit, now, raise_errors)
        if decision.cancel_pending:
            self._withdraw(decision.cancel_pending)
        self._publish(now)

    def _counts(self, now: float) -> JobCounts:
        pending = running = ending = 0
        for job in self._jobs.values():
            if job.state == DONE or job.cancelled:
                continue
            if job.state == PENDING:
                pending += 1
            elif self._ending(job, now):
                ending += 1
            else:
                running += 1
        return JobCounts(pending, running, ending)

    def _ending(self, job: Job, now: float) -> bool:
        """Whether a running job is close enough to its walltime warning to be replaced."""
        warning = job.warning_after
        if warning is None or job.started is None:
            return False
        return now - job.started >= warning - self.spec.replace_ahead

    def _refresh(self, now: float) -> None:
        self._last_poll = now
        with self._lock:
            ids = [job.job_id for job in self._jobs.values() if job.state != DONE]
        if not ids:
            return
        try:
            states = self.provider.states(ids)
        except ProvisionError as error:
            log.warning("%s", error)
            return
        with self._lock:
            for job_id, state in states.items():
                job = self._jobs.get(job_id)
                if job is None or job.state == DONE:
                    continue
                if state != PENDING and job.started is None:
                    job.started = now
                if state == DONE:
                    job.ended = now
                if state != job.state:
                    log.info("slave job %s: %s", job_id, state)
                job.state = state

    def _submit(self, count: int, now: float, raise_errors: bool) -> None:
        for _ in range(count):
            with self._lock:
                keep = sum(1 for job in self._jobs.values()
                           if job.keep and job.state != DONE and not job.cancelled) < self.spec.min_jobs
            request = self._request(keep, self.submitted)
            try:
                job_id = self.provider.submit(request)
            except ProvisionError as error:
                self.errors.append(str(error))
                if raise_errors:
                    raise
                log.error("%s; trying again in %.0f s", error, RETRY_SECONDS)
                self._retry_at = now + RETRY_SECONDS
                return
            with self._lock:
                self._jobs[job_id] = Job(job_id, keep, time.monotonic(), request.warning_after)
                self.submitted += 1
                self._forget_old_jobs()
            if self._stop.is_set():   # stop() ran while sbatch was answering: this one goes too
                self.provider.cancel([job_id])
                return

    def _forget_old_jobs(self) -> None:
        """Keep at most ``KEEP_DONE`` done jobs (the oldest go): a long run submits many."""
        done = [job_id for job_id, job in self._jobs.items() if job.state == DONE]
        for job_id in done[:max(0, len(done) - KEEP_DONE)]:
            del self._jobs[job_id]

    def _withdraw(self, count: int) -> None:
        with self._lock:
            pending = [job for job in self._jobs.values() if job.state == PENDING and not job.cancelled]
            chosen = sorted(pending, key=lambda job: job.submitted, reverse=True)[:count]
            for job in chosen:
                job.cancelled = True
        if chosen:
            log.info("withdrawing %d pending slave job(s): no work waits", len(chosen))
            self.provider.cancel([job.job_id for job in chosen])

    # ------------------------------------------------------------------ the job table

    def jobs(self) -> List[Dict]:
        """Every job submitted: id, provider, state, ages in seconds."""
        now = time.monotonic()
        with self._lock:
            return [job.as_dict(now, self.provider.name, self._ending(job, now))
                    for job in self._jobs.values()]

    def live_jobs(self) -> List[str]:
        """Ids of the jobs that may still be pending or running."""
        with self._lock:
            return [job.job_id for job in self._jobs.values() if job.state != DONE]

    def _publish(self, now: float) -> None:
        table = [job for job in self.jobs() if job["state"] != DONE]
        data = json.dumps({"jobs": table, "submitted": self.submitted}).encode()
        if data != self._published:
            self._published = data
            with contextlib.suppress(Exception):   # a terminated manager keeps no data
                self._manager.store_data(JOBS_KEY, data)


