"""Every slave's output at the master: what handlers print and log, named by slave and host.

Real masters and real slave processes (spawned, started by hand, and a
keeper's workers); the pure parts (the token bucket, the line cutting, the
master's store, the report) with plain objects and a fake clock.
"""

import io
import json
import re
import socket

import psutil
import pytest

from conftest import wait_for
from scientific_ms import MasterProcess, settings
from scientific_ms.cli.report import build_report, format_status
from scientific_ms.core.output import LINES, SlaveOutput, slave_name
from scientific_ms.errors import ConfigurationError
from scientific_ms.slave.output import BURST, LineWriter, OutputBuffer

HOST = slave_name(0, socket.gethostname()).split("@", 1)[1]

# A slave script started by hand: its handlers print, log and print in a tight loop.
SLAVE = """
import logging, os, sys, threading, time
from scientific_ms import settings, startSlaveProcess

# an idle slave waits that long at the master for work, in one call
settings.POLL_SECONDS = float(os.environ.get("TEST_POLL_SECONDS", settings.POLL_SECONDS))

def do_say(text):
    print("printed", text)
    print("to stderr", text, file=sys.stderr)
    logging.warning("logged %s", text)
    return text

def do_flood(count):
    for i in range(count):
        print("flood", i)
    return count

def do_hold(flag):
    print("holding until", os.path.basename(flag))
    deadline = time.monotonic() + 60
    while not os.path.exists(flag) and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.path.exists(flag)

def do_later(flag):
    def later():
        deadline = time.monotonic() + 60
        while not os.path.exists(flag) and time.monotonic() < deadline:
            time.sleep(0.01)
        print("printed later by a thread")
    threading.Thread(target=later, daemon=True).start()
    return True

startSlaveProcess(sys.argv[1])
"""


@pytest.fixture
def master_with_file(tmp_path):
    """``start(label, **options)``: a master in this process writing its slaves' output to a file."""
    masters = []

    def start(label, **options):
        options.setdefault("slave_output", str(tmp_path / f"{label}.log"))
        master = MasterProcess(label, use_name_server=False, port=0, **options)
        masters.append(master)
        return master

    yield start
    for master in masters:
        master.shutdown()


def start_slave(processes, tmp_path, label, **env):
    script = tmp_path / "slave.py"
    script.write_text(SLAVE)
    return processes.python(script, label, name=f"slave-{label}", env=env)


def read(path):
    return path.read_text() if path.exists() else ""


def slave_ids(master):
    return [p["id"] for p in master.task_manager.status()["processes"] if p["role"] == "slave"]


def test_a_slave_started_by_hand_prints_and_logs_at_the_master(master_with_file, processes, tmp_path):
    master = master_with_file("by_hand")
    slave = start_slave(processes, tmp_path, "by_hand")
    master.requestTask("say", "hello")
    assert master.retrieveResult(timeout=60)[2] == "hello"
    [slave_id] = slave_ids(master)
    log = tmp_path / "by_hand.log"
    prefix = f"[slave {slave_id}@{HOST}] "
    expected = [prefix + "printed hello", prefix + "to stderr hello", prefix + "WARNING:root:logged hello"]
    wait_for(lambda: all(line in read(log).splitlines() for line in expected), 30, "the slave's lines at the master")
    # Started by hand, in a shell of its own: the slave shows them there too, as they were.
    wait_for(lambda: "printed hello" in processes.output(slave), 30, "the slave's own copy")
    assert prefix not in processes.output(slave)

    # task_manager show -v and --json hold the last lines
    shown = processes.task_manager("show", "by_hand", "-v", name="show")
    code, text = processes.finish(shown)
    assert code == 0, text
    assert f"  {prefix}printed hello" in text.splitlines()
    as_json = processes.task_manager("show", "by_hand", "--json", name="show_json")
    code, text = processes.finish(as_json)
    assert code == 0, text
    [entry] = json.loads(text)["slave_output"]
    assert entry["id"] == slave_id and entry["slave"] == prefix[1:-2]
    assert entry["lines"][:2] == ["printed hello", "to stderr hello"] and entry["dropped"] == 0
    master.shutdown()
    assert processes.finish(slave)[0] == 0


def test_lines_arrive_while_the_handler_still_runs(master_with_file, processes, tmp_path):
    master = master_with_file("holding")
    start_slave(processes, tmp_path, "holding")
    flag = tmp_path / "go"
    master.requestTask("hold", str(flag))
    log = tmp_path / "holding.log"
    wait_for(lambda: "holding until go" in read(log), 30, "the line of a handler that still runs")
    assert master.task_manager.counts()["running"] == {"hold": 1}
    flag.touch()
    assert master.retrieveResult(timeout=60)[2] is True


def test_lines_a_thread_prints_while_the_slave_waits_for_work_arrive(master_with_file, processes, tmp_path):
    master = master_with_file("waiting")
    # The slave's feed waits for work at the master for up to 10 minutes in one call.
    slave = start_slave(processes, tmp_path, "waiting", TEST_POLL_SECONDS="600")
    flag = tmp_path / "go"
    master.requestTask("later", str(flag))
    assert master.retrieveResult(timeout=60)[2] is True
    wait_for(lambda: master.task_manager.slaves_waiting_for_work() == 1, 30, "the slave waiting for work")
    flag.touch()   # its thread prints now, while the feed's call waits at the master
    wait_for(lambda: "printed later by a thread" in read(tmp_path / "waiting.log"), 30,
             "the line of a thread, sent while the slave waits for work")
    assert master.task_manager.slaves_waiting_for_work() == 1   # that call still waits
    status = master.task_manager.status()
    assert status["counters"]["processes_lost"] == 0
    master.shutdown()
    code, output = processes.finish(slave)
    assert code == 0, output
    assert master.task_manager.status()["counters"]["processes_lost"] == 0   # the extra connection closed last


def test_a_tight_print_loop_is_rate_limited_and_its_task_finishes(master_with_file, processes, tmp_path):
    master = master_with_file("flood")
    slave = start_slave(processes, tmp_path, "flood")
    count = 100_000
    master.requestTask("flood", count)
    assert master.retrieveResult(timeout=60)[2] == count
    log = tmp_path / "flood.log"

    def tally():
        text = read(log)
        forwarded = len(re.findall(r"\] flood \d+\n", text))
        dropped = sum(map(int, re.findall(r"\((\d+) lines dropped", text)))
        return forwarded, dropped

    wait_for(lambda: sum(tally()) == count, 30, "every line forwarded or counted as dropped")
    forwarded, dropped = tally()
    assert BURST <= forwarded < count // 10 and dropped > count // 2
    # the first lines went through (the burst); the status keeps the last few and the count
    assert "] flood 0\n" in read(log)
    [entry] = master.task_manager.status()["slave_output"]
    assert len(entry["lines"]) == LINES and entry["dropped"] == dropped
    master.shutdown()
    assert processes.finish(slave)[0] == 0


def test_output_off_leaves_it_with_the_slave(master_with_file, processes, tmp_path):
    master = master_with_file("quiet", slave_output=False)
    slave = start_slave(processes, tmp_path, "quiet")
    master.requestTask("say", "unheard")
    assert master.retrieveResult(timeout=60)[2] == "unheard"
    wait_for(lambda: "printed unheard" in processes.output(slave), 30, "the line in the slave's own output")
    master.shutdown()
    assert processes.finish(slave)[0] == 0
    assert master.task_manager.status()["slave_output"] == []
    assert not (tmp_path / "quiet.log").exists()
    assert "[slave" not in processes.output(slave)


JOB = """
import sys
from scientific_ms import MasterProcess, SlaveProcess, runJob

class Master(MasterProcess):
    def run(self):
        for i in range(3):
            self.requestTask("say", i)
        results = sorted(self.retrieveResult("say")[2] for _ in range(3))
        sys.stdout.write(f"results {results}\\n")   # one write: the slaves' lines come between writes

class Say(SlaveProcess):
    def do_say(self, i):
        print("marker", i)
        return i

runJob(sys.argv[1], Master, Say, launch_slaves=1)
"""


def test_a_spawned_slave_prints_once_on_the_masters_terminal(processes, tmp_path):
    script = tmp_path / "job.py"
    script.write_text(JOB)
    job = processes.python(script, "spawned", cwd=tmp_path)
    code, output = processes.finish(job, 60)
    assert code == 0, output
    assert "results [0, 1, 2]" in output
    lines = output.splitlines()
    for i in range(3):
        # the spawned slave shares the master's stdout: once, named, never bare
        named = [line for line in lines if re.fullmatch(rf"\[slave \d+@{re.escape(HOST)}\] marker {i}", line)]
        assert len(named) == 1, output
        assert f"marker {i}" not in lines, output


def test_the_workers_of_a_keeper_are_named_each(master_with_file, processes, tmp_path):
    master = master_with_file("keeper")
    with open(tmp_path / "slave.py", "w") as source:
        source.write(SLAVE)
    master.store_slave_code(SLAVE, str(tmp_path / "slave.py"), [str(tmp_path / "slave.py"), "keeper"])
    agent = processes.task_manager("slave", "keeper", "-n", "2", name="agent")
    wait_for(lambda: len(slave_ids(master)) == 2, 30, "two workers")
    for i in range(20):
        master.requestTask("say", f"w{i}")
    for _ in range(20):
        master.retrieveResult(timeout=60)
    log = tmp_path / "keeper.log"
    wait_for(lambda: all(f"printed w{i}\n" in read(log) for i in range(20)), 30, "every worker's lines")
    names = set(re.findall(r"^\[(slave \d+@[^\]]+)\] printed", read(log), re.M))
    assert names <= {f"slave {i}@{HOST}" for i in slave_ids(master)} and names
    master.shutdown()
    assert processes.finish(agent)[0] == 0


# ---------------------------------------------------------------- the parts, with plain objects

def test_the_bucket_lets_a_burst_through_then_its_rate(clock):
    buffer = OutputBuffer(rate=10, burst=5, clock=clock)
    for i in range(8):
        buffer.add(f"line {i}")
    assert buffer.take() == ([f"line {i}" for i in range(5)], 3)
    assert buffer.take() is None
    clock.advance(0.25)   # 2.5 lines' worth of tokens
    for i in range(4):
        buffer.add(f"later {i}")
    assert buffer.take() == (["later 0", "later 1"], 2)


def test_lines_wait_no_longer_than_the_delay(clock):
    buffer = OutputBuffer(clock=clock)
    woken = []
    buffer.on_first = lambda: woken.append(True)
    assert buffer.due_in() is None
    buffer.add("a")
    buffer.add("b")
    assert woken == [True]   # once, for the first line waiting
    assert buffer.due_in() == pytest.approx(0.25)
    clock.advance(1)
    assert buffer.due_in() == 0.0


def test_a_writer_cuts_lines_as_a_terminal_shows_them(clock):
    buffer = OutputBuffer(clock=clock)
    original = io.StringIO()
    writer = LineWriter(original, buffer, echo=True)
    writer.write("one\ntw")
    writer.write("o\n")
    writer.write("10%\r50%\r100%\n")
    writer.write("windows\r\n")
    writer.write("unfinished")
    assert buffer.take() == (["one", "two", "100%", "windows"], 0)
    writer.finish()
    assert buffer.take() == (["unfinished"], 0)
    assert original.getvalue() == "one\ntwo\n10%\r50%\r100%\nwindows\r\nunfinished"
    quiet = LineWriter(io.StringIO(), buffer, echo=False)
    quiet.write("x\n")
    assert quiet.original.getvalue() == ""
    with pytest.raises(TypeError):
        writer.write(b"bytes")


def test_the_master_keeps_the_last_lines_of_each_slave():
    output = SlaveOutput()
    seen = []
    output.sink = lambda name, lines, dropped: seen.append((name, lines, dropped))
    output.add(3, "node12.cluster.example", [f"l{i}" for i in range(LINES + 5)], 7)
    output.add(4, "10.0.0.4", ["x"], 0)
    output.add(5, None, "not a list", 0)   # a confused peer: ignored
    output.add(5, None, ["y"], True)
    [three, four] = output.last_lines()
    assert three == {"id": 3, "slave": "slave 3@node12", "lines": [f"l{i}" for i in range(5, LINES + 5)],
                     "dropped": 7}
    assert four["slave"] == "slave 4@10.0.0.4"
    assert [name for name, _, _ in seen] == ["slave 3@node12", "slave 4@10.0.0.4"]


def test_show_prints_the_last_lines_only_when_verbose():
    status = {"tasks": {}, "processes": [], "counters": {},
              "slave_output": [{"id": 3, "slave": "slave 3@node12", "lines": ["a", "b"], "dropped": 2}]}
    report = build_report("job", "host:1", status)
    assert report["slave_output"][0]["lines"] == ["a", "b"]
    text = format_status(report, verbose=True)
    assert "  [slave 3@node12] b\n  [slave 3@node12] (2 lines dropped in all)" in text
    assert "[slave 3@node12]" not in format_status(report)


def test_the_option_and_its_variable(monkeypatch, tmp_path):
    assert settings.slave_output() is True
    assert settings.slave_output(False) is False
    monkeypatch.setenv("SCIENTIFIC_MS_SLAVE_OUTPUT", "off")
    assert settings.slave_output() is False
    monkeypatch.setenv("SCIENTIFIC_MS_SLAVE_OUTPUT", str(tmp_path / "out.log"))
    assert settings.slave_output() == str(tmp_path / "out.log")
    assert settings.slave_output(True) is True
    with pytest.raises(ConfigurationError, match="slave_output=3"):
        settings.slave_output(3)
    with pytest.raises(ConfigurationError, match="cannot open"):
        MasterProcess("badfile", use_name_server=False, port=0, slave_output=str(tmp_path / "no" / "such.log"))




def test_the_status_keeps_long_lines_short():
    from scientific_ms.core.output import KEPT_CHARS, SLAVES
    output = SlaveOutput()
    printed = []
    output.sink = lambda name, lines, dropped: printed.extend(lines)
    for process_id in range(SLAVES + 10):
        output.add(process_id, "h", ["x" * (KEPT_CHARS * 3)])
    kept = output.last_lines()
    assert len(kept) == SLAVES and kept[0]["id"] == 10   # the oldest writers went first
    assert kept[0]["lines"] == ["x" * KEPT_CHARS + "..."]
    assert printed[0] == "x" * (KEPT_CHARS * 3)   # shown whole at the master


def test_closing_the_connection_that_carried_only_output_costs_the_slave_nothing():
    """An idle slave's lines go on a connection of their own (output_flush.py); the slave
    goes on working after that connection closes: it is neither lost nor blamed."""
    from scientific_ms.wire.client import MasterConnection

    master = MasterProcess("output-only", use_name_server=False, port=0, host="127.0.0.1", slave_output=False)
    main = MasterConnection("127.0.0.1", master.port, master.secret, master.label)
    try:
        status, process_id = main.call("register", "slave", {"pid": 0}, ["x"], 60.0)
        assert status == "ok"
        side = main.duplicate()
        side.exchange(process_id, [], 0, 0.0, None, output=(["a line"], 0))
        assert served_connections(master.port) == 2
        side.close()
        # The master closes its end once it has dealt with the close.
        wait_for(lambda: served_connections(master.port) == 1, 10, "the master to close its end")
        master.requestTask("x", 1)
        # Served on its main connection as before; the side one's close was no loss.
        assert wait_for(lambda: main.exchange(process_id, [], 1, 0.5)[1], 10, "the task")
        assert master.task_manager.counters["processes_lost"] == 0
    finally:
        main.close()
        master.shutdown()


def served_connections(port):
    """The master's ends of the connections it serves on ``port`` (it runs in this process)."""
    process = psutil.Process()
    connections = getattr(process, "net_connections", None) or process.connections   # psutil < 6
    return sum(1 for c in connections("tcp")
               if c.laddr and c.laddr.port == port and c.raddr and c.status == psutil.CONN_ESTABLISHED)
