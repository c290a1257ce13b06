"""Handlers that end their process, oversized values, silent waits, leftovers: each with real processes."""

import os
import signal
import sys
import textwrap

import psutil
import pytest

from conftest import descendants_gone, wait_for
from scientific_ms import MasterProcess, RemoteError, SerializationError, TaskRaisedException
from scientific_ms.wire import discovery

SLAVE_SCRIPT = os.path.join(os.path.dirname(__file__), "slave_script.py")


@pytest.fixture
def master():
    master = MasterProcess("robust", use_name_server=False, port=0)
    yield master
    master.shutdown()


def slave_pids(pid):
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


# ------------------------------------------------------------------ a handler that ends its slave

ENDING_HANDLER = textwrap.dedent("""
    import os, sys
    from scientific_ms import MasterProcess, SlaveProcess, TaskRaisedException, runJob

    class Master(MasterProcess):
        def run(self):
            self.requestTask("end")
            try:
                self.retrieveResult("end")
            except TaskRaisedException as error:
                print(f"POISON {type(error.exception).__name__} {error.exception}", flush=True)
            self.requestTask("square", 7)
            print(f"SQUARE {self.retrieveResult('square')[2]}", flush=True)

    class Worker(SlaveProcess):
        def do_end(self):
            {ending}

        def do_square(self, x):
            return x * x

    runJob("ending", Master, Worker, launch_slaves=2)
""")


@pytest.mark.parametrize("ending", ["sys.exit(0)", "os._exit(0)", "raise KeyboardInterrupt"])
def test_a_handler_that_ends_its_slave_counts_as_a_loss_and_the_job_goes_on(processes, tmp_path, ending):
    """Status 0 is no proof of a slave that left on purpose, and a goodbye said while
    running a task does not clear that task: after 3 losses it is a poison task."""
    script = tmp_path / "ending.py"
    script.write_text(ENDING_HANDLER.replace("{ending}", ending))
    master = processes.python(script, cwd=tmp_path, name="master")
    code, out = processes.finish(master, 90)
    assert code == 0, out
    assert "POISON SlaveLostError task end_1 lost its slave 3 times" in out, out
    assert "SQUARE 49" in out, out


# ------------------------------------------------------------------ values over the message limit

SMALL_LIMIT = 16 * 1024 * 1024   # stands in for Pyro5's 1 GiB, through its own PYRO_MAX_MESSAGE_SIZE

BIG_RESULT_SLAVE = textwrap.dedent("""
    import sys
    from scientific_ms import startSlaveProcess

    def do_big(size):
        return b"x" * size

    def do_small():
        return "small"

    startSlaveProcess(sys.argv[1], wait=True)
""")


@pytest.fixture
def small_message_limit(monkeypatch):
    from Pyro5 import config
    monkeypatch.setattr(config, "MAX_MESSAGE_SIZE", SMALL_LIMIT)
    monkeypatch.setenv("PYRO_MAX_MESSAGE_SIZE", str(SMALL_LIMIT))
    return SMALL_LIMIT


def test_a_parameter_over_the_message_limit_is_refused_at_request_task(small_message_limit, master):
    too_big = b"x" * (small_message_limit + 1024 * 1024)
    with pytest.raises(SerializationError, match=r"(?s)requestTask\('work', \.\.\.\).*limit.*setGlobalState"):
        master.requestTask("work", 0.0, too_big)
    with pytest.raises(SerializationError, match=r"(?s)setGlobalState: table.*limit"):
        master.setGlobalState(table=too_big)
    assert master.task_manager.counters["requested"] == 0


def test_a_result_over_the_message_limit_comes_back_as_an_error_and_the_slave_stays(
        small_message_limit, master, processes, tmp_path):
    script = tmp_path / "big_slave.py"
    script.write_text(BIG_RESULT_SLAVE)
    slave = processes.python(script, "robust", name="slave")
    master.requestTask("big", small_message_limit + 1024 * 1024)
    with pytest.raises(TaskRaisedException) as caught:
        master.retrieveResult(timeout=60)
    assert isinstance(caught.value.exception, SerializationError)
    assert "do_big" in str(caught.value.exception) and "limit" in str(caught.value.exception)
    master.requestTask("small")
    assert master.retrieveResult(timeout=60)[2] == "small"
    assert master.task_manager.counters["processes_lost"] == 0
    assert slave.poll() is None


# ------------------------------------------------------------------ runJob does not return in a slave

AFTER_RUNJOB = textwrap.dedent("""
    import os
    from scientific_ms import MasterProcess, SlaveProcess, runJob

    class Master(MasterProcess):
        def run(self):
            self.wait_for_slaves(2, timeout=60)
            for i in range(4):
                self.requestTask("double", i)
            print(sorted(self.retrieveResult()[2] for _ in range(4)), flush=True)

    class Worker(SlaveProcess):
        def do_double(self, x):
            return 2 * x

    if __name__ == "__main__":
        runJob("after", Master, Worker, launch_slaves=2)
        with open("saved.txt", "a") as saved:
            saved.write(f"saved by {os.getpid()}\\n")
""")


def test_code_after_run_job_runs_in_the_master_only(processes, tmp_path):
    script = tmp_path / "after.py"
    script.write_text(AFTER_RUNJOB)
    master = processes.python(script, cwd=tmp_path, name="master")
    wait_for(lambda: len(slave_pids(master.pid)) >= 2, 30, "the two slaves")
    slaves = slave_pids(master.pid)
    code, out = processes.finish(master, 60)
    assert code == 0 and "[0, 2, 4, 6]" in out, out
    assert descendants_gone(slaves, timeout=10.0) == []
    assert (tmp_path / "saved.txt").read_text() == f"saved by {master.pid}\n"


# ------------------------------------------------------------------ a master waiting for tags nobody serves

TYPO_MASTER = textwrap.dedent("""
    from scientific_ms import initializeMasterProcess
    tasks = initializeMasterProcess("typo", slave_script="typo_slave.py")
    tasks.requestTask("hits", 1)
    tasks.launchSlaveJobs(1)
    print("WAITING", flush=True)
    tasks.retrieveResult()
""")

TYPO_SLAVE = textwrap.dedent("""
    from scientific_ms import startSlaveProcess

    def do_hit(x):
        return x

    startSlaveProcess()
""")


def test_a_master_waiting_for_an_unserved_tag_says_so_in_its_log(processes, tmp_path):
    (tmp_path / "typo_master.py").write_text(TYPO_MASTER)
    (tmp_path / "typo_slave.py").write_text(TYPO_SLAVE)
    master = processes.python(tmp_path / "typo_master.py", cwd=tmp_path, name="master")
    out = wait_for(lambda: "task_manager slave typo" in processes.output(master) and processes.output(master),
                   30, "the master's warning")
    lines = out.splitlines()
    first = next(n for n, line in enumerate(lines) if "tasks wait that no connected slave can run" in line)
    warning = "\n".join(lines[first:first + 6])   # the news first, then the details, in short lines
    assert "'hits'" in warning and "'hit'" in warning and "task_manager slave typo" in warning, out
    show = processes.task_manager("show", "-v", "typo", name="show")
    code, shown = processes.finish(show, 30)
    assert code == 0, shown
    table = shown.split("processes:\n")[1].splitlines()
    header, slave_line = table[0], next(line for line in table if " slave " in line)
    assert header.split()[-1] == "TAGS" and slave_line.split()[-1] == "hit", shown


# ------------------------------------------------------------------ SIGTERM to an initializeMasterProcess master

SIGTERM_MASTER = textwrap.dedent("""
    from scientific_ms import initializeMasterProcess
    tasks = initializeMasterProcess("term")
    tasks.requestTask("never", 1)
    print("READY", flush=True)
    tasks.retrieveResult()
""")


def test_sigterm_to_an_initialize_master_process_master_removes_its_label_file(processes, tmp_path):
    (tmp_path / "term.py").write_text(SIGTERM_MASTER)
    master = processes.python(tmp_path / "term.py", cwd=tmp_path, name="master")
    wait_for(lambda: "READY" in processes.output(master), 30, "the master")
    assert discovery.read_label_file("term") is not None
    master.send_signal(signal.SIGTERM)
    code, out = processes.finish(master, 30)
    assert code != 0, out
    assert discovery.read_label_file("term") is None, out


# ------------------------------------------------------------------ the connections of a killed slave

def master_connections(master):
    process = psutil.Process()
    connections = getattr(process, "net_connections", process.connections)   # psutil < 6 has only the latter
    return [c for c in connections("tcp")
            if c.laddr and c.laddr.port == master.port and c.status != psutil.CONN_LISTEN]


def test_the_connections_of_a_killed_slave_are_closed_when_it_is_declared_dead(master, processes):
    # A watchdog period of 60 s: its heartbeat long-poll lasts 45-60 s.
    slave = processes.python(SLAVE_SCRIPT, "robust", 60, name="slave")
    master.wait_for_slaves(1, timeout=30)
    wait_for(lambda: len(master_connections(master)) >= 2, 30, "the slave's task and heartbeat connections")
    master.requestTask("pid")
    assert master.retrieveResult(timeout=30)[2] == slave.pid
    slave.send_signal(signal.SIGKILL)
    wait_for(lambda: master.task_manager.counters["processes_lost"] == 1, 30, "the slave to be declared dead")
    wait_for(lambda: not master_connections(master), 15, "the master to close the dead slave's connections")


# ------------------------------------------------------------------ classes only the slave's __main__ knows

MAIN_CLASSES_SLAVE = textwrap.dedent("""
    import sys
    from scientific_ms import startSlaveProcess

    class Oops(Exception):
        pass

    class Point:
        def __init__(self, x):
            self.x = x

    def do_oops(text):
        raise Oops(text)

    def do_point(x):
        return Point(x)

    startSlaveProcess(sys.argv[1], wait=True)
""")


def test_an_exception_or_result_of_a_class_only_the_slave_knows_keeps_the_remote_text(master, processes, tmp_path):
    script = tmp_path / "main_classes.py"
    script.write_text(MAIN_CLASSES_SLAVE)
    processes.python(script, "robust", name="slave")
    master.requestTask("oops", "the slave's own words")
    with pytest.raises(TaskRaisedException) as caught:
        master.retrieveResult(timeout=60)
    error = caught.value
    assert isinstance(error.exception, RemoteError)
    assert "Oops: the slave's own words" in str(error.exception)
    assert "in do_oops" in error.traceback and "Oops: the slave's own words" in error.traceback
    master.requestTask("point", 3)
    with pytest.raises(TaskRaisedException) as caught:
        master.retrieveResult(timeout=60)
    assert isinstance(caught.value.exception, SerializationError)
    assert "Point" in str(caught.value.exception) and "import" in str(caught.value.exception)


# ------------------------------------------------------------------ oddities

#: A job whose master says READY once its spawned slaves are there, then idles
#: until the test ends it (Ctrl-C, SIGKILL).
IDLE_JOB = textwrap.dedent("""
    import time
    from scientific_ms import MasterProcess, SlaveProcess, runJob

    class Master(MasterProcess):
        def run(self):
            self.wait_for_slaves({slaves}, timeout=60)
            print("READY", flush=True)
            time.sleep(60)                              # until the test ends this master

    class Worker(SlaveProcess):
        def do_nothing(self):
            pass

    runJob("{label}", Master, Worker, launch_slaves={slaves})
""")
CTRL_C_JOB = IDLE_JOB.format(label="ctrlc", slaves=2)


def test_ctrl_c_to_the_process_group_ends_the_job_without_replacing_slaves(processes, tmp_path):
    script = tmp_path / "ctrlc.py"
    script.write_text(CTRL_C_JOB)
    master = processes.python(script, cwd=tmp_path, name="master")   # leads its own process group
    wait_for(lambda: "READY" in processes.output(master), 30, "the master and its slaves")
    slaves = slave_pids(master.pid)
    os.killpg(master.pid, signal.SIGINT)                             # what Ctrl-C in its terminal does
    code, out = processes.finish(master, 30)
    assert "replacement" not in out, out
    assert descendants_gone(slaves, timeout=10.0) == [], out
    assert discovery.read_label_file("ctrlc") is None


def test_a_label_folder_that_cannot_be_made_is_named_with_the_variable_that_moves_it(tmp_path, monkeypatch):
    from scientific_ms import ConfigurationError
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("SCIENTIFIC_MS_REGISTRY", str(blocker / "registry"))
    with pytest.raises(ConfigurationError, match=rf"{blocker}/registry.*a file.*SCIENTIFIC_MS_REGISTRY"):
        MasterProcess("folder", use_name_server=False, port=0)
    monkeypatch.delenv("SCIENTIFIC_MS_REGISTRY")
    monkeypatch.setenv("HOME", str(tmp_path / "no" / "home"))
    with pytest.raises(ConfigurationError, match=r"home does not exist.*SCIENTIFIC_MS_REGISTRY"):
        MasterProcess("folder", use_name_server=False, port=0)
    assert not (tmp_path / "no").exists()


def test_an_address_where_nothing_listens_is_not_a_master_found_without_a_secret(processes):
    show = processes.task_manager("show", "-m", "127.0.0.1:1", "nothing", name="show")
    code, out = processes.finish(show, 30)
    assert code == 1 and "no secret" not in out and "nothing listens at 127.0.0.1:1" in out, out


def test_a_waiting_slave_says_why_it_waits(processes):
    waiting = processes.task_manager("slave", "-w", "later", name="waiting")
    wait_for(lambda: "waiting for a master of 'later' to start" in processes.output(waiting), 30,
             "the waiting slave's note")
    assert waiting.poll() is None


def test_prints_go_above_the_master_progress_bar(monkeypatch):
    from scientific_ms.progress import ERASE_LINE, ProgressBar
    screen = []

    class Terminal:
        def __init__(self, name):
            self.name = name

        def write(self, text):
            screen.append((self.name, text))
            return len(text)

        def flush(self):
            pass

        def isatty(self):
            return True

    out, err = Terminal("out"), Terminal("err")
    monkeypatch.setattr(sys, "stdout", out)
    bar = ProgressBar(err, "job", max_rate=0)
    bar.print_above()
    bar.update(1, 4)
    print("got sq_2", 1)
    bar.close()
    assert sys.stdout is out
    printed = screen.index(("out", "got sq_2"))
    assert screen[printed - 1] == ("err", "\r" + ERASE_LINE)            # the bar was erased first
    assert screen[printed + 3] == ("out", "\n")                         # "got sq_2", " ", "1", "\n"
    assert screen[printed + 4][0] == "err" and "1/4" in screen[printed + 4][1]   # then drawn below


def test_watch_ends_with_the_final_state_not_the_last_sample(processes):
    from test_cli import answer_all, end, fake_slave
    master = MasterProcess("final", use_name_server=False, port=0)
    try:
        worker = fake_slave(master)
        for i in range(4):
            master.requestTask("work", i)
        watcher = processes.task_manager("watch", "final", "-i", "2", name="watch")
        wait_for(lambda: "0/4" in processes.output(watcher), 30, "a first table")
        answer_all(master, worker, 4)            # and end at once, well within watch's poll period
        for _ in range(4):
            master.retrieveResult()
    finally:
        end(master)
    code, out = processes.finish(watcher, 30)
    assert code == 0 and out.rstrip().splitlines()[-1].endswith(
        "has finished; last status: 4 of 4 results retrieved, 0 failed, 0:00 elapsed"), out


def test_the_unserved_tags_warning_comes_after_a_delay_then_ever_less_often(caplog):
    from scientific_ms.core.unserved import FIRST_WARNING_SECONDS, REPEAT_SECONDS, UnservedTags
    now = [0.0]
    report = {"terminated": False, "unserved_tags": ["hits"], "tasks": {"waiting": {"hits": 2}},
              "processes": [{"role": "master", "tags": None}, {"role": "slave", "tags": ["hit"]}]}
    notice = UnservedTags("typo", clock=lambda: now[0])
    warnings, message = [], None
    for second in range(0, 400):
        now[0] = float(second)
        said = notice.check(lambda: report)
        if said:
            warnings.append(second)
            message = said
    first = int(FIRST_WARNING_SECONDS)
    assert warnings == [first, first + int(REPEAT_SECONDS), first + 3 * int(REPEAT_SECONDS)]
    assert "2 with tag 'hits'" in message and "handle 'hit'" in message and "task_manager slave typo" in message
    report = dict(report, unserved_tags=[])
    now[0] += 1
    with caplog.at_level("WARNING", logger="scientific_ms.core.unserved"):
        assert notice.check(lambda: report) is None
    assert "now has a slave" in caplog.text


LOST_MASTER_JOB = IDLE_JOB.format(label="orphan", slaves=1)


def test_a_spawned_slave_that_loses_its_master_does_not_speak_as_task_manager(processes, tmp_path):
    script = tmp_path / "orphan.py"
    script.write_text(LOST_MASTER_JOB)
    master = processes.python(script, cwd=tmp_path, name="master")   # the slave writes to the same file
    wait_for(lambda: "READY" in processes.output(master), 30, "the master and its slave")
    slaves = slave_pids(master.pid)
    master.send_signal(signal.SIGKILL)
    assert descendants_gone(slaves, timeout=20.0) == []
    out = processes.output(master)
    assert "scientific_ms: slave of 'orphan' lost its master" in out and "task_manager:" not in out, out


def test_initialize_master_process_takes_the_options_of_master_process(processes, tmp_path):
    script = tmp_path / "options.py"
    script.write_text(textwrap.dedent("""
        from scientific_ms import initializeMasterProcess
        tasks = initializeMasterProcess("options", port=0, task_time_limit=2.5, max_slave_losses=1)
        print(f"LIMIT {tasks.task_time_limit} LOSSES {tasks.task_manager.max_slave_losses}", flush=True)
    """))
    code, out = processes.finish(processes.python(script, cwd=tmp_path, name="master"), 30)
    assert code == 0 and "LIMIT 2.5 LOSSES 1" in out, out
