"""The slave runtime's guarantees in every launch mode (docs: the keeper design).

Each mode starts a real master and two slaves, in processes of their own, the
way a user would (``runJob(launch_slaves=2)``, ``Executor(slaves=2)``, a master
script with slave scripts or ``SlaveProcess`` subclasses started by hand,
``task_manager slave LABEL`` twice or once with ``-n 2``, ``mpiexec -n 3``).
The test drives the master over a socket of its own (``runtime_jobs/control.py``)
and watches the slaves through files that every execution of a task leaves
(``runtime_jobs/work.py``) and through the process tree: the *keeper* is the
process the launcher started, the *worker* that runs the handlers is its child.
A slave that runs handlers in the process the launcher started has no keeper,
and the faults that need one fail saying so.

The faults share one job per mode, in the order of this file; a fault that left
the job short of idle slaves makes the next one start it afresh.
"""

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest

from conftest import ROOT, descendants_gone, wait_for
from test_mpi import HAVE_MPI4PY, MPIEXEC

JOBS = Path(__file__).resolve().parent / "runtime_jobs"
PERIOD = 0.5                        # every slave's watchdog period (runtime_jobs/*)
WATCHDOG_LIMIT = 4 * PERIOD         # the master's default missed_heartbeats is 4
GIL_SECONDS = 20 * PERIOD           # one C call holding the GIL this long
TIME_LIMIT = 1.0
MARGIN = 3.0                        # the guarantees say 1 s; a loaded 2-core machine gets this
STUCK = 10 ** 11                    # sum(range(STUCK)): half an hour of C code
ENDING = 4.0                        # seconds for every keeper and worker to end after the master
MODES = ["runjob", "executor", "script", "subclass", "task_manager", "task_manager_n2", "mpiexec"]

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="session")
def gil_n():
    """N such that sum(range(N)) is one C call of about GIL_SECONDS here (measured once, in a child)."""
    probe = ("import time\nbest = 1e9\nfor _ in range(3):\n    t = time.perf_counter(); sum(range(2 * 10 ** 7))\n"
             "    best = min(best, time.perf_counter() - t)\nprint(2 * 10 ** 7 / best)")
    rate = float(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                                check=True).stdout)
    n = int(rate * GIL_SECONDS)
    print(f"\nsum(range(N)): {rate / 1e6:.0f} M/s here, N = {n:.3g} for {GIL_SECONDS:g} s")
    return n


class Job:
    """One master and its slaves in one launch mode; everything it starts carries a tag in its environment."""

    def __init__(self, mode, directory):
        self.mode = mode
        self.dir = directory
        self.dir.mkdir(parents=True)
        self.log_dir = directory / "runs"
        self.log_dir.mkdir()
        self.label = f"rt_{mode}_{uuid.uuid4().hex[:6]}"
        self.tag = uuid.uuid4().hex
        self.expected = 2              # slaves the job should have when idle
        self.popens = []
        self.events = []
        self.changed = threading.Condition()
        self.keys = itertools.count()
        self.ended = False
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SCIENTIFIC_MS_")}
        self.env.update(SCIENTIFIC_MS_REGISTRY=str(directory / "registry"), SCIENTIFIC_MS_NAME_SERVER="0",
                        PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join([str(ROOT), str(JOBS)]),
                        RUNTIME_CONTROL=f"127.0.0.1:{self.listener.getsockname()[1]}",
                        RUNTIME_LABEL=self.label, RUNTIME_TEST_TAG=self.tag)

    # ------------------------------------------------------------------ processes

    def spawn(self, *args, name):
        out = open(self.dir / f"{name}.out", "ab")
        popen = subprocess.Popen([str(a) for a in args], stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=self.env, cwd=self.dir, start_new_session=True)
        out.close()
        self.popens.append(popen)
        return popen

    def output(self, lines=15):
        """The last lines each process wrote, for failure messages."""
        parts = []
        for path in sorted(self.dir.glob("*.out")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    def add_slave(self):
        """One more slave the way this mode's user starts one by hand (a replacement keeper)."""
        n = len(self.popens)
        if self.mode == "script":
            return self.spawn(sys.executable, JOBS / "slave_script.py", name=f"slave{n}")
        if self.mode == "subclass":
            return self.spawn(sys.executable, JOBS / "slave_class.py", self.label, name=f"slave{n}")
        if self.mode == "task_manager":
            return self.spawn(sys.executable, "-m", "scientific_ms", "slave", self.label, name=f"slave{n}")
        if self.mode == "task_manager_n2":
            return self.spawn(sys.executable, "-m", "scientific_ms", "slave", self.label, "-n", 2, name=f"agent{n}")
        return None   # the master replaces its spawned slaves; MPI ranks are not replaced

    def start(self):
        python, m = sys.executable, self.mode
        if m == "runjob":
            self.master = self.spawn(python, JOBS / "runjob.py", self.label, 2, name="master")
        elif m == "executor":
            self.master = self.spawn(python, JOBS / "executor_job.py", self.label, name="master")
        elif m == "mpiexec":
            self.master = self.spawn(MPIEXEC, "-n", 3, python, JOBS / "runjob.py", self.label, 0, name="mpiexec")
        else:
            stored = [JOBS / "slave_script.py"] if m.startswith("task_manager") else []
            self.master = self.spawn(python, JOBS / "master_script.py", self.label, *stored, name="master")
        self.listener.settimeout(60)
        try:
            self.control, _ = self.listener.accept()
        except socket.timeout:
            raise AssertionError(f"[{m}] the master never connected to the test:\n{self.output()}") from None
        self.control.settimeout(None)
        threading.Thread(target=self._read_events, daemon=True).start()
        self.master_pid = self.wait_event(lambda e: e["op"] == "hello", 10)["pid"]
        for _ in range({"script": 2, "subclass": 2, "task_manager": 2, "task_manager_n2": 1}.get(m, 0)):
            self.add_slave()
        self.wait_ready(60)

    def tagged(self):
        """Every running process this job started, at any depth (its environment carries the tag)."""
        found = []
        for proc in psutil.process_iter():
            try:
                if proc.status() != psutil.STATUS_ZOMBIE and proc.environ().get("RUNTIME_TEST_TAG") == self.tag:
                    found.append(proc)
            except (psutil.Error, OSError):
                pass
        return found

    def stop(self):
        """Kill whatever is left (stopped ones included) and reap what we started."""
        for proc in self.tagged():
            try:
                proc.kill()
            except psutil.Error:
                pass
        for popen in self.popens:
            try:
                popen.wait(10)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
        self.listener.close()
        if hasattr(self, "control"):
            self.control.close()

    # ------------------------------------------------------------------ the master, through its control socket

    def _read_events(self):
        with self.control.makefile("rb") as lines:
            for line in lines:
                with self.changed:
                    self.events.append(json.loads(line))
                    self.changed.notify_all()
        with self.changed:
            self.events.append({"op": "closed"})
            self.changed.notify_all()

    def send(self, **command):
        self.control.sendall((json.dumps(command) + "\n").encode())

    def wait_event(self, match, timeout, what="an event"):
        with self.changed:
            if not self.changed.wait_for(lambda: any(match(e) for e in self.events), timeout):
                raise AssertionError(f"[{self.mode}] no {what} from the master within {timeout} s:\n{self.output()}")
            return next(e for e in self.events if match(e))

    def status(self):
        ident = uuid.uuid4().hex
        self.send(op="status", id=ident)
        return self.wait_event(lambda e: e["op"] == "status" and e["id"] == ident, 20, "status")["status"]

    def slaves(self, status=None):
        return [p for p in (status or self.status())["processes"] if p["role"] == "slave"]

    def key(self, name):
        return f"{name}{next(self.keys)}"

    def submit(self, kind, key, arg=None, time_limit=None):
        self.send(op="submit", kind=kind, key=key, arg=arg, log_dir=str(self.log_dir), time_limit=time_limit)

    def results(self, key):
        """Every result the master got for ``key``."""
        with self.changed:
            ids = {e["task_id"] for e in self.events if e["op"] == "submitted" and e["key"] == key} - {None}
            return [e for e in self.events if e["op"] == "result" and (e.get("key") == key or e.get("task_id") in ids)]

    def result(self, key, timeout, why=""):
        with self.changed:
            if not self.changed.wait_for(lambda: self.results(key), timeout):
                raise AssertionError(f"[{self.mode}] no result for task {key} within {timeout:g} s "
                                     f"(ran {len(self.executions(key))} time(s)){why}")
        return self.results(key)[0]

    def executions(self, key):
        """(pid, start) of each execution of ``key``, oldest first."""
        runs = []
        for path in self.log_dir.glob(f"{key}@*"):
            _, pid, started = path.name.split("@")
            runs.append((int(pid), float(started)))
        return sorted(runs, key=lambda run: run[1])

    def started(self, key, count=1, timeout=30.0):
        return wait_for(lambda: self.executions(key) if len(self.executions(key)) >= count else None,
                        timeout, f"[{self.mode}] {count} execution(s) of task {key}")

    def wait_ready(self, timeout):
        """Until the job has its slaves, every one idle."""
        def ready():
            slaves = self.slaves()
            return len(slaves) == self.expected and not any(p["running"] for p in slaves)
        try:
            wait_for(ready, timeout, "idle slaves")
        except AssertionError:
            raise AssertionError(f"[{self.mode}] not {self.expected} idle slaves within {timeout} s: "
                                 f"{[(p['pid'], p['running']) for p in self.slaves()]}\n{self.output()}") from None

    def end(self):
        self.ended = True
        self.send(op="end")

    # ------------------------------------------------------------------ keepers and workers

    def is_launched(self, proc):
        """Whether ``proc`` is a process this mode's launcher started (a keeper, in the design)."""
        try:
            if self.mode in ("runjob", "executor"):
                return proc.ppid() == self.master_pid
            if self.mode == "mpiexec":     # a child of a rank, a rank being a child of Hydra's proxy
                rank = proc.parent()
                return rank is not None and rank.parent() is not None and \
                    rank.parent().name().startswith("hydra_pmi_proxy")
            return proc.pid in {p.pid for p in self.popens}
        except psutil.Error:
            return False

    def keeper_of(self, worker):
        """The keeper of the process that runs a handler; fails clearly when there is none."""
        proc = psutil.Process(worker)
        if self.is_launched(proc):
            pytest.fail(f"[{self.mode}] no keeper: process {worker}, started by the launcher, runs the "
                        f"handlers itself (expected a keeper that runs no user code, the worker its child)",
                        pytrace=False)
        parent = proc.parent()
        if parent is None or not self.is_launched(parent):
            pytest.fail(f"[{self.mode}] the parent of worker {worker} ({parent}) is not a process the "
                        f"launcher started", pytrace=False)
        return parent.pid


@pytest.fixture(scope="module", params=MODES)
def shared(request, tmp_path_factory):
    if request.param == "mpiexec" and (MPIEXEC is None or not HAVE_MPI4PY):
        pytest.skip("needs mpiexec and mpi4py (see tests/test_mpi.py)")
    holder = {"job": None, "n": 0}

    def fresh():
        if holder["job"] is not None:
            holder["job"].stop()
        holder["n"] += 1
        holder["job"] = Job(request.param, tmp_path_factory.mktemp(request.param) / f"job{holder['n']}")
        holder["job"].start()
        return holder["job"]

    holder["fresh"] = fresh
    yield holder
    if holder["job"] is not None:
        holder["job"].stop()


@pytest.fixture
def job(shared):
    """The mode's job, ready: its slaves idle; started afresh if an earlier fault broke it."""
    current = shared["job"]
    if current is not None and not current.ended:
        try:
            current.wait_ready(5)
            return current
        except AssertionError as broken:
            print(f"\nstarting the job afresh: {str(broken).splitlines()[0]}")
    return shared["fresh"]()


def counters(job):
    return job.status()["counters"]


# ---------------------------------------------------------------------- (a) the GIL held


def test_a_handler_holding_the_gil_for_20_watchdog_periods_loses_no_slave_and_runs_once(job, gil_n):
    before = counters(job)
    pids = {p["pid"] for p in job.slaves()}
    key = job.key("gil")
    job.submit("spin", key, gil_n)
    event = job.result(key, GIL_SECONDS * 4 + 30)
    runs = job.executions(key)
    held = event["t"] - runs[0][1]
    print(f"\n[{job.mode}] GIL held {held:.1f} s = {held / PERIOD:.0f} watchdog periods")
    assert event["ok"] and event["value"][1] == gil_n * (gil_n - 1) // 2, event
    assert len(runs) == 1, f"[{job.mode}] the task ran {len(runs)} times: {runs}"
    after = counters(job)
    moved = {name: after[name] - before[name] for name in ("processes_lost", "rescheduled", "duplicates_dropped")}
    assert moved == dict.fromkeys(moved, 0), f"[{job.mode}] {moved}"
    assert {p["pid"] for p in job.slaves()} == pids
    assert held > 2 * WATCHDOG_LIMIT, f"held only {held:.1f} s: the test proves nothing"


# ---------------------------------------------------------------------- (b) stuck in C past a time limit


def test_a_handler_stuck_in_c_past_its_time_limit_is_reported_in_time_and_the_next_task_runs(job):
    """One stuck task per slave, then a quick one that can only run on a replaced worker."""
    stuck = [job.key("stuck") for _ in range(job.expected)]
    for key in stuck:
        job.submit("spin", key, STUCK, time_limit=TIME_LIMIT)
    quick = job.key("next")
    job.submit("quick", quick)
    workers, reported = [], []
    for key in stuck:
        event = job.result(key, TIME_LIMIT + MARGIN + 1, f": the guarantee is its limit of {TIME_LIMIT:g} s + 1 s")
        (pid, started), *again = job.executions(key)
        workers.append(pid)
        late = event["t"] - started - TIME_LIMIT
        print(f"\n[{job.mode}] stuck task reported {late:.2f} s after its limit of {TIME_LIMIT:g} s")
        assert not event["ok"] and event["error"] == "TaskTimeLimitError", event
        assert late < MARGIN, f"[{job.mode}] reported {late:.2f} s after its limit (guarantee: 1 s)"
        assert not again, f"[{job.mode}] a reported task ran again: {again}"
        reported.append(event["t"])
    event = job.result(quick, 15, ": queued behind the stuck tasks, it waits for a replaced worker")
    [(_, quick_start)] = job.executions(quick)
    delay = quick_start - min(reported)
    print(f"[{job.mode}] the next task started {delay:.2f} s after the first report")
    assert event["ok"] and delay < MARGIN, f"[{job.mode}] the next task started {delay:.2f} s after (guarantee: 1 s)"
    left = descendants_gone(workers, 5)
    assert not left, f"[{job.mode}] the stuck worker(s) {left} still run: nobody killed them"
    job.wait_ready(15)
    assert not {p["pid"] for p in job.slaves()} & set(workers)


# ---------------------------------------------------------------------- (c) SIGSTOP of a worker


def test_a_stopped_worker_is_declared_dead_at_the_watchdog_limit_killed_and_replaced(job):
    release = job.dir / f"release-{uuid.uuid4().hex}"
    key = job.key("stopped")
    job.submit("hold", key, str(release))
    [(worker, _)] = job.started(key)
    stopped = False
    try:
        job.keeper_of(worker)
        lost = counters(job)["processes_lost"]
        os.kill(worker, signal.SIGSTOP)
        stopped = True
        stopped_at = time.monotonic()
        wait_for(lambda: counters(job)["processes_lost"] > lost, WATCHDOG_LIMIT + 15,
                 f"[{job.mode}] the master to declare the stopped worker dead")
        noticed = time.monotonic() - stopped_at
        runs = job.started(key, 2, 30)
        print(f"\n[{job.mode}] stopped worker declared dead {noticed:.2f} s after SIGSTOP (watchdog limit "
              f"{WATCHDOG_LIMIT:g} s); its task ran again {runs[1][1] - stopped_at:.2f} s after it")
        assert WATCHDOG_LIMIT / 2 < noticed < WATCHDOG_LIMIT + MARGIN, \
            f"[{job.mode}] declared dead {noticed:.2f} s after SIGSTOP (watchdog limit {WATCHDOG_LIMIT:g} s)"
        release.touch()
        event = job.result(key, 15)
        assert event["ok"] and event["value"][0] != worker, event
        left = descendants_gone([worker], 5)
        assert not left, f"[{job.mode}] the stopped worker {worker} was declared dead but still exists: not killed"
        job.wait_ready(15)
        assert worker not in {p["pid"] for p in job.slaves()}
    finally:
        release.touch()
        if stopped and psutil.pid_exists(worker):   # not killed by its keeper: the test does it
            os.kill(worker, signal.SIGKILL)


# ---------------------------------------------------------------------- (d) kill -9 of a worker


def six_tasks(job):
    """Queue six 0.3 s tasks; returns their keys and the worker running one of them."""
    keys = [job.key("w") for _ in range(6)]
    for key in keys:
        job.submit("work", key, 0.3)
    [(worker, _)] = wait_for(lambda: next((job.executions(k) for k in keys if job.executions(k)), None), 30,
                             f"[{job.mode}] a task to start")
    return keys, worker


def each_result_once(job, keys, killed):
    """Every result arrives once; only tasks that had started in the ``killed`` processes ran twice."""
    for key in keys:
        job.result(key, 30)
        events = job.results(key)
        assert len(events) == 1 and events[0]["ok"], f"[{job.mode}] {key}: {events}"
    twice = {key: job.executions(key) for key in keys if len(job.executions(key)) > 1}
    assert all(len(runs) == 2 and runs[0][0] in killed for runs in twice.values()), \
        f"[{job.mode}] ran more than once: {twice}"
    return twice


def test_kill_9_of_a_worker_costs_only_its_running_task_and_the_worker_is_replaced(job):
    keys, worker = six_tasks(job)
    keeper = psutil.Process(job.keeper_of(worker))
    os.kill(worker, signal.SIGKILL)
    twice = each_result_once(job, keys, {worker})
    assert len(twice) <= 1, twice
    assert keeper.is_running() and keeper.status() != psutil.STATUS_ZOMBIE, f"[{job.mode}] the keeper died too"
    job.wait_ready(15)
    assert worker not in {p["pid"] for p in job.slaves()}


# ---------------------------------------------------------------------- (e) kill -9 of a keeper


def test_kill_9_of_a_keeper_takes_its_workers_along_and_their_tasks_run_elsewhere(job):
    keys, worker = six_tasks(job)
    keeper = job.keeper_of(worker)
    workers = [child.pid for child in psutil.Process(keeper).children(recursive=True)]
    os.kill(keeper, signal.SIGKILL)
    job.add_slave()          # a replacement, where the launcher does not replace keepers itself
    if job.mode == "mpiexec":
        job.expected = 1     # that rank ends; the other one serves
    left = descendants_gone(workers, 5)
    assert not left, f"[{job.mode}] workers {left} outlived their killed keeper {keeper}"
    each_result_once(job, keys, set(workers))
    job.wait_ready(20)


# ---------------------------------------------------------------------- (f) the master ends


def test_when_the_master_ends_every_keeper_and_worker_ends_a_stuck_one_included(job):
    key = job.key("stuck")
    job.submit("spin", key, STUCK)
    [(worker, _)] = job.started(key)
    job.keeper_of(worker)
    keepers = [p for p in job.tagged() if p.pid != job.master_pid and job.is_launched(p)]
    pids = {p.pid for p in keepers} | {c.pid for p in keepers for c in p.children(recursive=True)}
    job.end()
    ended = time.monotonic()
    left = descendants_gone(pids, ENDING)
    took = time.monotonic() - ended
    print(f"\n[{job.mode}] {len(pids) - len(left)} keeper and worker processes ended {took:.2f} s after the master")
    assert not left, f"[{job.mode}] still running {took:.1f} s after the master ended: " + \
        ", ".join(f"{pid}{' (the stuck worker)' if pid == worker else ''}" for pid in left)
    wait_for(lambda: not job.tagged(), 30, f"[{job.mode}] the master and the launcher to end")
