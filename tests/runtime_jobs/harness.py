"""The test side of tests/test_runtime.py: one job (a master and its slaves) in one launch mode.

The master runs in a process of its own and is driven over a socket
(``control.py``); the slaves leave a file per execution (``work.py``). The
*keeper* is the process a launcher started; the *worker* running handlers is its child.
"""

import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import psutil
import pytest

from conftest import ROOT, wait_for

JOBS = Path(__file__).resolve().parent


class Job:
    """One master and its slaves in one launch mode; everything it starts carries a tag in its environment."""

    def __init__(self, mode, directory, mpiexec=None):
        self.mode = mode
        self.mpiexec = mpiexec
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
            self.master = self.spawn(self.mpiexec, "-n", 3, python, JOBS / "runjob.py", self.label, 0, name="mpiexec")
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
            if self.mode in ("runjob", "executor"):   # spawned by the master, or forked by its fork server
                parent = proc.parent()
                return proc.ppid() == self.master_pid or parent is not None and parent.ppid() == self.master_pid
            if self.mode == "mpiexec":     # a child of a rank, a rank being a child of Hydra's proxy
                rank = proc.parent()
                return rank is not None and rank.parent() is not None and \
                    rank.parent().name().startswith("hydra_pmi_proxy")
            return proc.pid in {p.pid for p in self.popens}
        except psutil.Error:
            return False

    def keeper_of(self, worker):
        """The keeper of the process that runs a handler, as the master reports it (a process
        that runs no user code, the worker's parent or child); fails clearly when there is none."""
        record = next((p for p in self.slaves() if p["pid"] == worker), None)
        keeper = None if record is None else record.get("keeper")
        if keeper is None:
            pytest.fail(f"[{self.mode}] no keeper: process {worker} runs the handlers and nothing else "
                        f"beats its heart (expected a keeper that runs no user code)", pytrace=False)
        related = {p.pid for p in psutil.Process(worker).children()} | {psutil.Process(worker).ppid()}
        if keeper not in related:
            pytest.fail(f"[{self.mode}] the keeper {keeper} of worker {worker} is neither its parent nor "
                        f"its child", pytrace=False)
        return keeper

    def workers_of(self, keeper):
        """The processes running handlers for ``keeper`` now, as the master reports them."""
        return {p["pid"] for p in self.slaves() if p.get("keeper") == keeper}

    def keepers(self):
        """Every keeper the master knows of."""
        return {p["keeper"] for p in self.slaves() if p.get("keeper") is not None}
