"""The task_manager command, run as a subprocess against live masters.

Most tests build a known state by hand: a real master (in this process,
served over a real socket) plus "fake" slaves registered straight with its
TaskManager, so that the numbers of waiting, running and finished tasks are
exact. A few use real slave processes for what only they provide (CPU and
memory samples, a running handler, ``slave -n``).
"""

import fcntl
import io
import json
import os
import pickle
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import textwrap
import threading

import psutil
import pytest

from conftest import descendants_gone, wait_for
from scientific_ms import MasterProcess
from scientific_ms.cli import main
from scientific_ms.progress import LiveView, ProgressBar, format_bar, format_bytes, format_duration
from scientific_ms.wire import discovery
from scientific_ms.wire.payload import dumps_value

HERE = os.path.dirname(__file__)
SLAVE_SCRIPT = os.path.join(HERE, "slave_script.py")

pytestmark = pytest.mark.timeout(60)


def run_cli(*args, env=None, timeout=30):
    """Run ``python -m scientific_ms ARGS``; returns the CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", "scientific_ms", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})), stdin=subprocess.DEVNULL)


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def master():
    master = MasterProcess("cli", use_name_server=False, port=0)
    yield master
    end(master)


def fake_slave(master, host="node", pid=1, tags=("work",), slurm=None):
    """A slave registered straight with the TaskManager; the test plays its part."""
    info = {"host": host, "pid": pid, **({"slurm": slurm} if slurm else {})}
    process_id = master.task_manager.register_process("slave", info, tags=tags, watchdog_period=None)
    master.__dict__.setdefault("fake_slaves", []).append(process_id)
    return process_id


def end(master):
    """Shut the master down; fake slaves leave first, so that shutdown need not wait for them."""
    for process_id in master.__dict__.get("fake_slaves", []):
        master.task_manager.unregister_process(process_id)
    master.shutdown()


#: The busy slave of craft() runs as task 7 of SLURM array job 1200 (job id 1207).
BUSY_SLURM = {"job_id": "1207", "array_job_id": "1200", "array_task_id": "7"}


def craft(master):
    """A known state: 8 requested, 5 waiting (2 of an unserved tag), 1 running,
    1 finished and retrieved, 1 failed and waiting, 1 rescheduled after a lost slave."""
    manager = master.task_manager
    for i in range(6):
        master.requestTask("work", 1.0, i)
    for i in range(2):
        master.requestTask("other", i)
    busy = fake_slave(master, "node1", 4242, slurm=BUSY_SLURM)
    doomed = fake_slave(master, "node2", 4343)
    manager.heartbeat(busy, {"cpu_percent": 97.5, "rss_bytes": 50 * 1024 * 1024})
    manager.expect_duration("work", 0.0)     # short: a slave may take a batch
    first, second, third = manager.take_tasks(busy, 3)
    manager.take_tasks(doomed, 1)
    manager.store_answers(busy, [
        (first.task_id, first.assignment, True, dumps_value("ok"), ""),
        (second.task_id, second.assignment, False, pickle.dumps(ValueError("bad")), "ValueError: bad\n"),
    ])
    assert master.retrieveResult("work")[0] == first.task_id
    manager.process_lost(doomed, "lost in a test")
    return {"busy": busy, "running": third.task_id}


# ------------------------------------------------------------------ show

def test_show_prints_the_original_lines_and_the_history(master):
    craft(master)
    result = run_cli("show", "cli")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"task manager 'cli' at 127\.0\.0\.1:\d+: running for \d+:\d\d \(started .+\)", lines[0])
    assert lines[1:7] == [
        "2 active processes",
        "5 waiting tasks",
        "1 running tasks",
        "1 results waiting to be retrieved",
        "8 tasks requested, 1 finished, 1 failed, 1 results retrieved",
        "1 task rescheduled, 1 slave lost",
    ]
    assert re.fullmatch(r"throughput: \d+\.\d\d tasks/s over the last minute", lines[7])
    assert lines[8] == "note: no connected slave handles tag 'other'; its tasks wait for one"
    alias = run_cli("status", "cli")
    assert alias.returncode == 0 and alias.stdout.splitlines()[1:7] == lines[1:7]


def test_show_verbose_adds_tags_and_one_line_per_process(master):
    ids = craft(master)
    result = run_cli("show", "-v", "cli")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "5 waiting tasks\n  other: 2\n  work: 3\n1 running tasks\n  work: 1\n" \
           "1 results waiting to be retrieved\n  work: 1\n" in out
    table = out.split("processes:\n", 1)[1].splitlines()
    assert table[0].split() == ["ID", "ROLE", "HOST", "PID", "SLURM", "JOB", "DONE", "CURRENT", "TASK", "FOR",
                                "HEARTBEAT", "CORE%", "RSS", "TAGS"]
    master_row, slave_row = table[1].split(), table[2].split()
    assert master_row[:5] == ["1", "master", socket.gethostname(), str(os.getpid()), "-"]
    assert slave_row[:7] == [str(ids["busy"]), "slave", "node1", "4242", "1200_7", "2", ids["running"]]
    assert re.fullmatch(r"\d+\.\ds", slave_row[7]) and re.fullmatch(r"\d+\.\ds", slave_row[8])
    assert slave_row[9:12] == ["97.5", "50.0", "MiB"] and master_row[-1] == "-"
    # Options may also come before the command, as in the original.
    def steady(text):  # throughput and ages move between two runs
        return [line for line in text.splitlines()[1:] if not line.startswith(("throughput", "   "))]
    assert steady(run_cli("-v", "show", "cli").stdout) == steady(out)


#: The documented keys (docs/guide/task_manager.md); adding one is fine, changing these is not.
REPORT_KEYS = {"schema", "label", "address", "terminated", "started_at", "elapsed_seconds",
               "active_processes", "slaves", "agents", "tasks", "tasks_by_tag", "processes_lost",
               "throughput_per_second", "progress", "unserved_tags", "processes", "slaves_left",
               "slave_output"}
TASK_KEYS = {"requested", "waiting", "running", "results_waiting", "finished", "failed",
             "retrieved", "rescheduled", "duplicates_dropped"}
PROCESS_KEYS = {"id", "role", "host", "pid", "agent", "tags", "tasks_done", "running", "connected_seconds",
                "seconds_since_heartbeat", "watchdog_period", "cpu_percent", "rss_bytes",
                "slurm_job", "slurm"}


def test_show_json_has_the_documented_keys_and_the_same_facts(master):
    ids = craft(master)
    result = run_cli("show", "cli", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == REPORT_KEYS and set(report["tasks"]) == TASK_KEYS
    assert report["schema"] == 1 and report["label"] == "cli"
    assert report["address"] == f"127.0.0.1:{master.port}"
    assert report["terminated"] is False and report["elapsed_seconds"] >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", report["started_at"])
    assert report["active_processes"] == 2 and report["slaves"] == 1
    assert report["tasks"] == {"requested": 8, "waiting": 5, "running": 1, "results_waiting": 1,
                               "finished": 1, "failed": 1, "retrieved": 1, "rescheduled": 1,
                               "duplicates_dropped": 0}
    assert report["tasks_by_tag"] == {"waiting": {"other": 2, "work": 3}, "running": {"work": 1},
                                      "results_waiting": {"work": 1}, "finished": {"work": 1},
                                      "failed": {"work": 1}}
    assert report["processes_lost"] == 1 and report["progress"] == 0.125
    assert report["slaves_left"] == {"idle": 0, "sigterm": 0}
    assert report["throughput_per_second"] > 0 and report["unserved_tags"] == ["other"]
    by_role = {proc["role"]: proc for proc in report["processes"]}
    assert all(set(proc) == PROCESS_KEYS for proc in report["processes"])
    assert by_role["master"]["pid"] == os.getpid() and by_role["master"]["seconds_since_heartbeat"] is None
    slave = by_role["slave"]
    assert (slave["id"], slave["host"], slave["pid"], slave["tags"], slave["tasks_done"]) == \
        (ids["busy"], "node1", 4242, ["work"], 2)
    assert [task["task_id"] for task in slave["running"]] == [ids["running"]]
    assert slave["cpu_percent"] == 97.5 and slave["rss_bytes"] == 50 * 1024 * 1024
    assert slave["slurm_job"] == "1200_7" and slave["slurm"] == BUSY_SLURM
    assert by_role["master"]["slurm_job"] is None and by_role["master"]["slurm"] is None


def test_show_with_real_slaves_reports_their_health(master, processes):
    slave = processes.python(SLAVE_SCRIPT, "cli", "0.2", name="slave")
    for i in range(4):
        master.requestTask("work", 0.0, i)
    wait_for(lambda: master.task_manager.counters["finished"] == 4, 30, "four results")
    master.retrieveResult()
    master.retrieveResult()
    long_task = master.requestTask("work", 30.0, "long")

    def slave_record():
        for proc in master.task_manager.status()["processes"]:
            if proc["pid"] == slave.pid and proc["running"] and proc["cpu_percent"] is not None:
                return proc
    wait_for(slave_record, 30, "the slave to run the long task and send a sample")
    report = json.loads(run_cli("show", "cli", "--json").stdout)
    assert report["tasks"] == {"requested": 5, "waiting": 0, "running": 1, "results_waiting": 2,
                               "finished": 4, "failed": 0, "retrieved": 2, "rescheduled": 0,
                               "duplicates_dropped": 0}
    proc = next(p for p in report["processes"] if p["pid"] == slave.pid)
    assert proc["tasks_done"] == 4 and proc["running"][0]["task_id"] == long_task
    assert proc["cpu_percent"] is not None and proc["rss_bytes"] > 1024 * 1024
    assert proc["seconds_since_heartbeat"] < 10 and proc["watchdog_period"] == 0.2
    human = run_cli("show", "cli", "-v").stdout
    row = next(line.split() for line in human.splitlines() if f" {slave.pid} " in line)
    assert row[1:7] == ["slave", socket.gethostname(), str(slave.pid), "-", "4", long_task] and row[-2] == "MiB"
    assert row[-1] == "die,fail,logged_work,marked_work,pid,spin,work"
    master.shutdown()
    assert processes.finish(slave, 10)[0] == 0


def test_wait_option_waits_for_a_master_that_starts_later(processes):
    waiting = processes.task_manager("show", "-w", "late", name="waiting")
    # Once psutil's extension is loaded the imports are done and the first lookup fails at once.
    wait_for(lambda: any("_psutil_linux" in m.path for m in psutil.Process(waiting.pid).memory_maps()),
             20, "the command to start looking")
    assert waiting.poll() is None
    late = MasterProcess("late", use_name_server=False, port=0)
    try:
        code, out = processes.finish(waiting, 20)
    finally:
        late.shutdown()
    assert code == 0 and "1 active process\n0 waiting tasks" in out, out


# ------------------------------------------------------------------ errors

def test_unknown_label_names_every_place_it_looked():
    result = run_cli("show", "nobody")
    assert result.returncode == 1 and result.stdout == ""
    assert "no master found for label 'nobody'" in result.stderr
    assert "SCIENTIFIC_MS_MASTER is not set" in result.stderr
    assert "no label file" in result.stderr and "nobody.json" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_master_is_named():
    port = closed_port()
    result = run_cli("show", "cli", "-m", f"127.0.0.1:{port}", env={"SCIENTIFIC_MS_SECRET": "s"})
    assert result.returncode == 1 and f"127.0.0.1:{port}" in result.stderr, result.stderr
    assert "Connection refused" in result.stderr and "Traceback" not in result.stderr


def test_label_file_of_a_dead_master_names_its_address():
    registry = discovery.settings.registry_dir()
    registry.mkdir(mode=0o700, parents=True)
    port = closed_port()
    (registry / "gone.json").write_text(json.dumps({
        "label": "gone", "hostname": "elsewhere.invalid", "addresses": ["127.0.0.1"], "port": port,
        "pid": 1, "started": "2020-01-01T00:00:00+0000", "secret": "x"}))
    result = run_cli("show", "gone")
    assert result.returncode == 1 and f"cannot connect to 127.0.0.1:{port}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_wrong_secret_is_named(master, tmp_path):
    key = tmp_path / "key"
    key.write_text("not-the-secret\n")
    for extra, env in ((["-k", key], None), ([], {"SCIENTIFIC_MS_SECRET": "wrong"})):
        result = run_cli("show", "cli", "-m", f"127.0.0.1:{master.port}", *extra, env=env)
        assert result.returncode == 1, result
        assert result.stderr.startswith("task_manager: wrong secret: the master at 127.0.0.1:")
        assert "rejected our secret" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("argv", [
    [], ["frobnicate"], ["show"], ["show", "a b"], ["show", "x", "-m", "host:port"],
    ["watch", "x", "--interval", "0"], ["slave", "x", "-n", "0"], ["list", "-m", "host"],
    ["show", "x", "--frobnicate"],
])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: task_manager") and "Traceback" not in err


def test_usage_error_from_the_command_line():
    result = run_cli("watch", "x", "--interval", "soon")
    assert result.returncode == 2 and "expected a number" in result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------ watch

def answer_all(master, slave_id, count):
    manager = master.task_manager
    manager.expect_duration("work", 0.0)     # short: a slave may take a batch
    tasks = manager.take_tasks(slave_id, count)
    manager.store_answers(slave_id, [(t.task_id, t.assignment, True, dumps_value(t.task_id), "")
                                     for t in tasks])


def test_watch_without_a_terminal_prints_plain_tables_until_the_master_ends(master, processes):
    worker = fake_slave(master)
    for i in range(4):
        master.requestTask("work", i)
    watcher = processes.task_manager("watch", "cli", "--interval", "0.1", name="watch")
    wait_for(lambda: "[" + "-" * 30 + "] 0/4" in processes.output(watcher), 20, "a first table")
    answer_all(master, worker, 4)
    for _ in range(4):
        master.retrieveResult()
    wait_for(lambda: "] 4/4 100%" in processes.output(watcher), 20, "a table with every result")
    end(master)
    code, out = processes.finish(watcher, 20)
    assert code == 0, out
    assert "\x1b" not in out and "\r" not in out
    blocks = out.split("--- ")
    assert len(blocks) >= 3 and all("active process" in block for block in blocks[1:])
    assert out.splitlines()[-1].startswith(f"task manager 'cli' at 127.0.0.1:{master.port} has finished; "
                                           f"last status: 4 of 4 results retrieved, 0 failed")


class PtyProcess:
    """A subprocess whose stdin, stdout and stderr are a pseudo-terminal (120 x 40)."""

    def __init__(self, args, env=None):
        main_fd, child_fd = pty.openpty()
        fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        env = {k: v for k, v in dict(os.environ, **(env or {})).items() if k not in ("COLUMNS", "LINES")}
        self.process = subprocess.Popen(args, stdin=child_fd, stdout=child_fd, stderr=child_fd,
                                        env=env, start_new_session=True)
        os.close(child_fd)
        self._fd = main_fd
        self._chunks = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        while True:
            try:
                ready, _, _ = select.select([self._fd], [], [], 1.0)
                if not ready:
                    if self.process.poll() is not None:
                        break
                    continue
                data = os.read(self._fd, 65536)
            except OSError:  # EIO: the child side is closed
                break
            if not data:
                break
            self._chunks.append(data)

    @property
    def output(self):
        return b"".join(self._chunks).decode(errors="replace")

    def finish(self, timeout):
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code, self.output

    def close(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._reader.join(5)
        os.close(self._fd)


@pytest.fixture
def in_pty():
    started = []

    def start(args, env=None):
        started.append(PtyProcess([sys.executable, *map(str, args)], env))
        return started[-1]
    yield start
    for proc in started:
        proc.close()


def test_watch_in_a_terminal_redraws_in_place(master, in_pty):
    worker = fake_slave(master)
    for i in range(10):
        master.requestTask("work", i)
    watcher = in_pty(["-m", "scientific_ms", "watch", "cli", "-i", "0.1", "-v"])
    wait_for(lambda: watcher.output.count("0/10") >= 2, 20, "two refreshes")
    answer_all(master, worker, 10)
    for _ in range(5):
        master.retrieveResult()
    wait_for(lambda: "5/10  50%" in watcher.output, 20, "half the results")
    end(master)
    code, out = watcher.finish(20)
    assert code == 0, out
    assert out.startswith("\x1b[?25l\r\x1b[J")             # hide the cursor, draw from here
    assert re.search(r"\x1b\[\d+A\r\x1b\[J", out)           # then back up over the last block
    assert "[" + "#" * 15 + "-" * 15 + "] 5/10  50%" in out
    assert "Ctrl-C to stop" in out and "CURRENT TASK" in out
    final = out.rstrip().splitlines()[-1]
    assert re.fullmatch(r"\x1b\[\?25htask manager 'cli' at 127\.0\.0\.1:\d+ has finished; last status: "
                        r"5 of 10 results retrieved, 0 failed, \d+:\d\d elapsed", final), repr(final)


def test_watch_exits_1_when_the_master_dies(processes, tmp_path):
    script = tmp_path / "doomed.py"
    script.write_text(textwrap.dedent("""
        import time
        from scientific_ms import MasterProcess
        master = MasterProcess("doomed", use_name_server=False, port=0)
        master.requestTask("work", 1)
        print("READY", flush=True)
        time.sleep(600)
    """))
    doomed = processes.python(script, name="master")
    wait_for(lambda: "READY" in processes.output(doomed), 30, "the master")
    watcher = processes.task_manager("watch", "doomed", "-i", "0.1", name="watch")
    wait_for(lambda: "0/1" in processes.output(watcher), 20, "a first table")
    doomed.kill()
    code, out = processes.finish(watcher, 20)
    assert code == 1, out
    assert "task manager 'doomed' at 127.0.0.1:" in out and "died (PID" in out and "is gone" in out
    assert "last status: 0 of 1 results retrieved" in out and "Traceback" not in out


# ------------------------------------------------------------------ list

def test_list_shows_live_masters_and_prunes_stale_label_files(master):
    craft(master)
    stale = discovery.settings.registry_dir() / "ghost.json"
    stale.write_text(json.dumps({"label": "ghost", "hostname": socket.gethostname(), "addresses": [],
                                 "port": closed_port(), "pid": os.getpid(), "create_time": 1.0,
                                 "started": "2020-01-01T00:00:00+0000", "secret": "x"}))
    result = run_cli("list")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["LABEL", "HOST", "PID", "ADDRESS", "STARTED", "SLAVES", "PROGRESS"]
    assert len(rows) == 1
    row = rows[0].split()
    assert row[:4] == ["cli", socket.gethostname(), str(os.getpid()), f"127.0.0.1:{master.port}"]
    assert row[6:] == ["1", "1/8", "(12%)"]
    assert f"removed the stale label file {stale}" in result.stderr
    assert not stale.exists()
    document = json.loads(run_cli("list", "--json").stdout)
    assert document["schema"] == 1 and document["pruned"] == []
    assert document["task_managers"] == [{
        "label": "cli", "host": socket.gethostname(), "pid": os.getpid(),
        "address": f"127.0.0.1:{master.port}",
        "started_at": discovery.read_label_file("cli")["started"][:-2] + ":" +
                      discovery.read_label_file("cli")["started"][-2:],
        "source": "label file", "slaves": 1, "requested": 8, "retrieved": 1, "progress": 0.125,
        "terminated": False, "error": None}]
    end(master)
    assert run_cli("list").stdout == "no live task managers\n"


def test_list_merges_the_name_server_and_prunes_its_dead_entries(name_server, tmp_path):
    on_ns = MasterProcess("on_ns", port=0, secret=b"ns-secret")
    try:
        with discovery.locate_name_server() as ns:
            ns.register("TaskManager.ghost", f"PYRO:TaskManager.ghost@127.0.0.1:{closed_port()}")
        on_ns.requestTask("work", 1)
        # Seen through its label file once, not a second time through the name server.
        rows = run_cli("list", "-v").stdout.splitlines()[1:]
        assert [row.split()[0] for row in rows] == ["on_ns"] and rows[0].split()[-2:] == ["label", "file"]
        # Without the label file, the name server finds it (the secret comes from the environment).
        result = run_cli("list", "--json", env={"SCIENTIFIC_MS_REGISTRY": str(tmp_path / "elsewhere"),
                                                "SCIENTIFIC_MS_SECRET": "ns-secret"})
        document = json.loads(result.stdout)
        [entry] = document["task_managers"]
        assert (entry["label"], entry["source"], entry["pid"], entry["requested"], entry["error"]) == \
            ("on_ns", "name server", os.getpid(), 1, None)
        assert entry["address"].endswith(f":{on_ns.port}")
        assert document["pruned"] == [] or all("ghost" in note for note in document["pruned"])
        with discovery.locate_name_server() as ns:
            assert "TaskManager.ghost" not in ns.list(prefix="TaskManager.")
    finally:
        on_ns.shutdown()


# ------------------------------------------------------------------ slave -n

def master_with_slave_code(label):
    master = MasterProcess(label, use_name_server=False, port=0)
    with open(SLAVE_SCRIPT) as source:
        master.store_slave_code(source.read(), SLAVE_SCRIPT, [SLAVE_SCRIPT, label, "1.0"])
    return master


def slaves_of(master):
    return [p for p in master.task_manager.status()["processes"] if p["role"] == "slave"]


def run_pid_tasks(master, count):
    """Run ``count`` tasks that return their slave's PID; each result comes back once."""
    ids = {master.requestTask("pid") for _ in range(count)}
    assert {master.retrieveResult(timeout=30)[0] for _ in range(count)} == ids


def test_slave_n_starts_n_slaves_and_waits_for_all(processes):
    master = master_with_slave_code("many")
    try:
        command = processes.task_manager("slave", "many", "-n", "3", name="slaves")
        wait_for(lambda: len(slaves_of(master)) == 3, 30, "three slaves")
        children = {p.pid for p in psutil.Process(command.pid).children()}
        assert {p["pid"] for p in slaves_of(master)} == children
        run_pid_tasks(master, 30)
    finally:
        master.shutdown()
    code, out = processes.finish(command, 20)
    assert code == 0, out
    assert descendants_gone(children, 5) == []


@pytest.mark.parametrize("count", ["1", "2"])
def test_a_waiting_slave_that_finds_its_master_before_its_code_waits_for_the_code(processes, count):
    # initializeMasterProcess and runJob store the code just after the master starts to listen.
    master = MasterProcess(f"early{count}", use_name_server=False, port=0)
    try:
        command = processes.task_manager("slave", f"early{count}", "-w", "-n", count, name="slave")
        wait_for(lambda: "stored no slave code yet" in processes.output(command), 30,
                 "the slave to say it waits for the code")
        assert command.poll() is None, processes.output(command)
        with open(SLAVE_SCRIPT) as source:
            master.store_slave_code(source.read(), SLAVE_SCRIPT, [SLAVE_SCRIPT, f"early{count}", "1.0"])
        wait_for(lambda: len(slaves_of(master)) == int(count), 30, "the slaves to register")
        run_pid_tasks(master, 4)
    finally:
        master.shutdown()
    code, out = processes.finish(command, 20)
    assert code == 0, out


def test_a_lone_slave_and_its_keeper_hold_two_connections_to_the_master(processes):
    # The command line hands the connection it fetched the code on to the slave, and the
    # keeper opens only its watch connection: start-up costs the master two handshakes.
    master = master_with_slave_code("frugal")
    try:
        command = processes.task_manager("slave", "frugal", name="slave")
        wait_for(lambda: len(slaves_of(master)) == 1, 30, "the slave to register")
        [record] = slaves_of(master)
        assert record["pid"] == command.pid and record["keeper"] != command.pid
        run_pid_tasks(master, 3)   # the keeper has beaten for it by then

        def to_master(pid):
            return [c for c in psutil.Process(pid).net_connections(kind="tcp")
                    if c.raddr and c.status == psutil.CONN_ESTABLISHED and c.raddr.port == master.port]
        wait_for(lambda: to_master(record["keeper"]), 30, "the keeper's watch connection")
        assert (len(to_master(command.pid)), len(to_master(record["keeper"]))) == (1, 1)
    finally:
        master.shutdown()
    code, out = processes.finish(command, 20)
    assert code == 0, out


def test_slave_n_interrupted_stops_every_slave(processes):
    master = master_with_slave_code("stopped")
    try:
        command = processes.task_manager("slave", "stopped", "-n", "2", name="slaves")
        wait_for(lambda: len(slaves_of(master)) == 2, 30, "two slaves")
        children = [p.pid for p in psutil.Process(command.pid).children()]
        command.send_signal(signal.SIGINT)        # the command only, not its process group
        code, out = processes.finish(command, 20)
        assert code == 130, out
        assert descendants_gone(children, 5) == []
        wait_for(lambda: not slaves_of(master), 10, "the slaves to leave")
        assert master.task_manager.counters["processes_lost"] == 0   # they said goodbye
    finally:
        master.shutdown()


# ------------------------------------------------------------------ the master's progress bar

PROGRESS_MASTER = textwrap.dedent("""
    import sys
    from scientific_ms import MasterProcess, initializeMasterProcess
    from scientific_ms.wire.payload import dumps_value
    if sys.argv[1] == "keyword":
        master = MasterProcess("bar", use_name_server=False, port=0, progress=True)
    else:
        master = initializeMasterProcess("bar", use_name_server=False)
    manager = master.task_manager
    worker = manager.register_process("slave", {}, tags=["work"], watchdog_period=None)
    for i in range(5):
        master.requestTask("work", i)
    manager.expect_duration("work", 0.0)     # short: a slave may take a batch
    tasks = manager.take_tasks(worker, 5)
    manager.store_answers(worker, [(t.task_id, t.assignment, True, dumps_value(1), "") for t in tasks])
    for _ in range(5):
        master.retrieveResult()
    manager.unregister_process(worker)
    master.shutdown()
    print("DONE")
""")


@pytest.mark.parametrize("how", ["keyword", "environment"])
def test_master_progress_bar_on_a_terminal(how, in_pty, tmp_path):
    script = tmp_path / "bar.py"
    script.write_text(PROGRESS_MASTER)
    env = {"SCIENTIFIC_MS_PROGRESS": "1"} if how == "environment" else None
    code, out = in_pty([script, how], env).finish(30)
    assert code == 0, out
    assert "\rbar  [" in out and "] 5/5 100%" in out and "] 0/1   0%" in out
    assert out.rstrip().endswith("DONE")


def test_master_progress_bar_stays_off_the_terminal_when_stderr_is_not_one(processes, tmp_path):
    script = tmp_path / "bar.py"
    script.write_text(PROGRESS_MASTER)
    code, out = processes.finish(processes.python(script, "environment", env={"SCIENTIFIC_MS_PROGRESS": "1"}), 30)
    assert code == 0 and out == "DONE\n", out


# ------------------------------------------------------------------ rendering

def test_format_helpers():
    assert format_bar(0, 0, 10) == "[----------] 0/0   -%"
    assert format_bar(3, 10, 10) == "[###-------] 3/10  30%"
    assert format_bar(12, 10, 10) == "[##########] 12/10 100%"
    assert [format_duration(s) for s in (None, 0, 75.9, 3725)] == ["-", "0:00", "1:15", "1:02:05"]
    assert [format_bytes(b) for b in (None, 512, 52428800, 3 * 1024 ** 3)] == \
        ["-", "512 B", "50.0 MiB", "3.0 GiB"]


def test_progress_bar_throttles_and_ends_its_line():
    now = [0.0]
    stream = io.StringIO()
    bar = ProgressBar(stream, "job", max_rate=10, enabled=True, clock=lambda: now[0])
    for done in range(5):
        bar.update(done, 10)              # same instant: only the first is drawn
    assert stream.getvalue().count("\r") == 1
    now[0] = 0.2
    bar.update(5, 10)
    bar.update(10, 10)                    # the last state is always drawn
    bar.close()
    bar.update(10, 11)                    # nothing after close
    text = stream.getvalue()
    assert text.count("\r") == 4 and text.endswith("\n") and "] 10/10 100%" in text
    quiet = io.StringIO()
    ProgressBar(quiet, enabled=False).update(1, 2)
    assert quiet.getvalue() == ""


def test_live_view_redraws_on_a_terminal_and_appends_elsewhere():
    screen = io.StringIO()
    view = LiveView(screen, terminal=True)
    view.show(["a", "b"])
    view.show(["c"])
    view.close("end")
    assert screen.getvalue() == ("\x1b[?25l\r\x1b[Ja\x1b[K\nb\x1b[K\n"
                                 "\x1b[2A\r\x1b[Jc\x1b[K\n\x1b[?25hend\n")
    log = io.StringIO()
    view = LiveView(log, terminal=False)
    view.show(["a"])
    view.show(["b"])
    view.close("end")
    assert re.fullmatch(r"--- \d\d:\d\d:\d\d ---\na\n\n--- \d\d:\d\d:\d\d ---\nb\nend\n", log.getvalue())
