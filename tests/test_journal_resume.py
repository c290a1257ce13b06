"""A master that can die: kill -9 it, run the same command again, and the job resumes from its journal.

Real processes on real sockets. The job (``journal_job.py``) counts every
execution of a task in a side file, so the tests see which tasks ran twice.
"""

import collections
import os
import re
import signal
import sys
from pathlib import Path

import psutil
import pytest

from conftest import descendants_gone, wait_for
from scientific_ms import GlobalStateValue, MasterProcess, initializeMasterProcess, read_journal
from scientific_ms.master.journal import Journal

HERE = Path(__file__).resolve().parent
JOB = HERE / "journal_job.py"
SLAVE_SCRIPT = HERE / "slave_script.py"

pytestmark = pytest.mark.timeout(180)


def lines(path):
    try:
        return Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []


def results_of(output):
    """{i: [value, ...]} from the RESULT lines of a run."""
    found = collections.defaultdict(list)
    for _task_id, i, value in re.findall(r"^RESULT (\S+) (\d+) (\d+)$", output, re.M):
        found[int(i)].append(int(value))
    return found


def kill_master_halfway(processes, side, tasks, threshold):
    """Wait for ``threshold`` executions, SIGKILL the master; return what it left running."""
    pid_file = Path(str(side) + ".master")
    wait_for(lambda: pid_file.exists() and len(lines(side)) >= threshold, 120, f"{threshold} executions")
    master_pid = int(pid_file.read_text())
    master = psutil.Process(master_pid)
    children = [child.pid for child in master.children(recursive=True)]
    os.kill(master_pid, signal.SIGKILL)
    return children


def check_second_run(output, tasks, side, journal_answers_at_kill, executed_in_first_run):
    results = results_of(output)
    assert sorted(results) == list(range(tasks)), output[-2000:]
    assert all(values == [i * i] for i, values in results.items()), "a result delivered twice or wrong"
    replayed = int(re.search(r"^DONE \d+ REPLAYED (\d+)$", output, re.M).group(1))
    assert replayed == len(journal_answers_at_kill)
    executions = collections.Counter(int(line) for line in lines(side))
    assert set(executions) == set(range(tasks))
    twice = {i for i, n in executions.items() if n > 1}
    # A journaled answer was never run again; what ran twice is exactly what the first run
    # executed without its answer reaching the journal: in flight at the kill, or in the
    # commit group being written.
    assert not twice & journal_answers_at_kill
    assert twice == executed_in_first_run - journal_answers_at_kill
    assert all(n <= 2 for n in executions.values())
    return twice


def test_kill_9_of_the_master_halfway_then_the_same_command_resumes(processes, tmp_path):
    tasks = 2000
    journal, side = tmp_path / "job.db", tmp_path / "executions"
    command = [JOB, "resume", journal, tasks, 0.001, side, 2]
    first = processes.python(*command, name="first", cwd=tmp_path)
    slaves = kill_master_halfway(processes, side, tasks, tasks // 2)
    first.wait(30)
    assert descendants_gone(slaves, 30) == [], "the master's own slaves outlived it"
    executed = set(int(line) for line in lines(side))
    answered = {r.parameters[0] for r in read_journal(journal)}   # the journal opens
    assert tasks // 4 < len(answered) < tasks

    # task_manager show on the journal of the dead master
    show = processes.task_manager("show", journal, "-v", name="show")
    code, out = processes.finish(show, 60)
    assert code == 0, out
    assert "master not running (run the same command again" in out
    assert f"{tasks} tasks requested, {len(answered)} finished, 0 failed, " \
           f"{tasks - len(answered)} not yet answered" in out
    assert f"square: {tasks} requested" in out and "run 1: PID" in out

    second = processes.python(*command, name="second", cwd=tmp_path)
    code, out = processes.finish(second, 120)
    assert code == 0, out
    twice = check_second_run(out, tasks, side, answered, executed)
    print(f"\n{len(answered)} answers journaled at the kill, {len(executed)} tasks executed by then; "
          f"{len(twice)} tasks ran twice")


def test_an_executor_killed_halfway_resumes_its_map_from_the_journal(processes, tmp_path):
    tasks = 1000
    journal, side = tmp_path / "map.db", tmp_path / "executions"
    command = [HERE / "journal_executor_job.py", journal, tasks, 0.001, side]
    first = processes.python(*command, name="first", cwd=tmp_path)
    slaves = kill_master_halfway(processes, side, tasks, tasks // 2)
    first.wait(30)
    assert descendants_gone(slaves, 30) == [], "the Executor's slaves outlived it"
    executed = set(int(line) for line in lines(side))
    answered = {r.parameters[2][0] for r in read_journal(journal)}   # (function, CALL, args, kwargs)
    assert tasks // 4 < len(answered) < tasks

    second = processes.python(*command, name="second", cwd=tmp_path)
    code, out = processes.finish(second, 120)
    assert code == 0, out
    twice = check_second_run(out, tasks, side, answered, executed)
    print(f"\nExecutor: {len(answered)} answers journaled at the kill, {len(twice)} calls ran twice")


def test_kills_while_commits_are_in_progress_leave_a_journal_that_opens(processes, tmp_path):
    tasks = 3000
    journal, side = tmp_path / "job.db", tmp_path / "executions"
    command = [JOB, "commits", journal, tasks, 0.001, side, 2]
    for run, threshold in enumerate((200, 700, 1500)):
        Path(str(side) + ".master").unlink(missing_ok=True)   # each run's master writes its own
        victim = processes.python(*command, name=f"run{run}", cwd=tmp_path)
        slaves = kill_master_halfway(processes, side, tasks, threshold)
        victim.wait(30)
        descendants_gone(slaves, 30)
        Journal(journal, "commits").close()         # opens for writing: not damaged, not locked
        answered = len(list(read_journal(journal)))
        assert answered > 0
    last = processes.python(*command, name="last", cwd=tmp_path)
    code, out = processes.finish(last, 120)
    assert code == 0, out
    results = results_of(out)
    assert sorted(results) == list(range(tasks)) and all(v == [i * i] for i, v in results.items())


@pytest.mark.parametrize("workers", ["lone", "-n 2"])
def test_slaves_started_by_hand_wait_for_the_restarted_master_and_rejoin_it(processes, tmp_path, workers):
    """Lone slaves (each its own keeper's worker), or a keeper of two workers (``-n 2``)."""
    tasks = 600
    journal, side = tmp_path / "job.db", tmp_path / "executions"
    command = [JOB, "rejoin", journal, tasks, 0.005, side]     # no slaves of its own
    env = {"SCIENTIFIC_MS_REJOIN_GRACE": "60"}
    first = processes.python(*command, name="first", cwd=tmp_path)
    if workers == "lone":
        slaves = [processes.task_manager("slave", "rejoin", "-w", "-v", name=f"slave{n}", env=env) for n in range(2)]
    else:
        slaves = [processes.task_manager("slave", "rejoin", "-w", "-v", "-n", "2", name="keeper", env=env)]
    kill_master_halfway(processes, side, tasks, tasks // 2)
    first.wait(30)
    waiting = 1 if workers == "lone" else 2   # each worker says it, once it stopped serving
    for slave in slaves:
        wait_for(lambda slave=slave: Path(slave.output_file.name).read_text().count(
            "waits up to 60 s for it to be started again") >= waiting, 30, "the slave to say why it waits")
        assert slave.poll() is None
    executed = set(int(line) for line in lines(side))
    wait_for(lambda: set(int(line) for line in lines(side)) == executed, 10, "no execution without a master")
    executed = set(int(line) for line in lines(side))
    answered = {r.parameters[0] for r in read_journal(journal)}

    second = processes.python(*command, name="second", cwd=tmp_path)
    code, out = processes.finish(second, 120)
    assert code == 0, out
    check_second_run(out, tasks, side, answered, executed)
    for slave in slaves:       # the second master had no other slaves: these two did its work
        code, slave_out = processes.finish(slave, 30)
        assert code == 0, slave_out
        assert "found its master again" in slave_out, slave_out


def test_slaves_give_up_after_the_grace(processes, tmp_path):
    journal, side = tmp_path / "job.db", tmp_path / "executions"
    first = processes.python(JOB, "grace", journal, 400, 0.01, side, name="first", cwd=tmp_path)
    slave = processes.task_manager("slave", "grace", "-w", name="slave", env={"SCIENTIFIC_MS_REJOIN_GRACE": "1"})
    kill_master_halfway(processes, side, 400, 20)
    first.wait(30)
    code, out = processes.finish(slave, 30)
    assert code == 1, out
    assert "waits up to 1 s" in out and "no master came back within 1 s; exiting" in out


def test_without_a_journal_slaves_exit_at_once_as_before(processes, tmp_path):
    master = MasterProcess("unjournaled", use_name_server=False, port=0)
    try:
        slave = processes.python(SLAVE_SCRIPT, "unjournaled", name="slave")
        master.wait_for_slaves(1, timeout=30)
        master.requestTask("work", 30, "long")
        wait_for(lambda: master.task_manager.status()["processes"][-1]["running"], 30, "the task to start")
    finally:
        master._endpoint.close()      # the master vanishes without saying goodbye
    code, out = processes.finish(slave, 30)
    assert code == 1 and "lost its master" in out and "waits up to" not in out, out
    master.shutdown()


def test_a_changed_script_resumes_what_matches_and_runs_what_is_new(processes, tmp_path, caplog):
    journal, side = tmp_path / "job.db", tmp_path / "executions"

    def run(values, keep_journal=None):
        master = MasterProcess("changed", use_name_server=False, port=0, journal=journal,
                               keep_journal=keep_journal)
        try:
            processes.python(SLAVE_SCRIPT, "changed")   # leaves when this master shuts down
            master.wait_for_slaves(1, timeout=30)
            ids = {master.requestTask("logged_work", 0, value, str(side)): value for value in values}
            got = {ids[task_id]: value for task_id, _, value in (master.retrieveResult(timeout=60) for _ in ids)}
            assert got == {value: value for value in values}
            return master._journal.replayed
        finally:
            master.shutdown()

    assert run(range(10)) == 0
    with caplog.at_level("INFO"):
        assert run(range(5, 15)) == 5
    assert "5 journaled tasks were not requested by this run" in caplog.text
    assert sorted(int(line) for line in lines(side)) == list(range(15))    # 5..9 did not run again
    assert journal.exists()
    assert run(range(15), keep_journal=False) == 15                        # a cache; then removed
    assert not journal.exists() and not Path(str(journal) + "-wal").exists()


def test_a_global_state_value_matches_by_the_value_it_stands_for(processes, tmp_path, monkeypatch):
    monkeypatch.setenv("SCIENTIFIC_MS_JOURNAL", str(tmp_path / "state.db"))   # the environment fallback

    def run(*tables):
        master = initializeMasterProcess("state", use_name_server=False)
        try:
            processes.python(SLAVE_SCRIPT, "state")
            states = [master.setGlobalState(table=table) for table in tables]
            master.requestTask("work", 0, GlobalStateValue(states[-1], "table"))
            _, _, (value, _) = master.retrieveResult(timeout=60)
            assert value == tables[-1]
            return master._journal.replayed
        finally:
            master.shutdown()

    assert run([1, 2, 3]) == 0
    assert run("unused", [1, 2, 3]) == 1      # another state id, the same value: answered from the journal
    assert run([1, 2, 4]) == 0                # a changed table is a new request
    assert (tmp_path / "state.db").exists()


def test_a_second_master_on_a_journal_in_use_fails_at_start_naming_it(processes, tmp_path):
    journal, side = tmp_path / "job.db", tmp_path / "executions"
    first = processes.python(JOB, "busy", journal, 400, 0.05, side, 1, name="first", cwd=tmp_path)
    wait_for(lambda: Path(str(side) + ".master").exists(), 60, "the first master")
    second = processes.python(JOB, "busy", journal, 400, 0.05, side, 1, name="second", cwd=tmp_path)
    code, out = processes.finish(second, 60)
    assert code == 1, out
    assert f"the journal {journal} is in use by a live master (PID {first.pid}" in out, out
    assert first.poll() is None
    first.kill()
    first.wait(30)
    other = processes.python(JOB, "another-label", journal, 4, 0.0, side, 1, name="other", cwd=tmp_path)
    code, out = processes.finish(other, 60)
    assert code == 1 and "belongs to the job labelled 'busy', not 'another-label'" in out, out


# ------------------------------------------------------------------ under mpiexec

from test_mpi import mpi_command, needs_hydra, needs_mpi, no_leftovers, tagged  # noqa: E402,F401


@needs_mpi
@needs_hydra
def test_under_mpiexec_rank_0_killed_then_the_job_run_again_resumes(processes, tmp_path, tagged):  # noqa: F811
    tasks = 2000
    journal, side = tmp_path / "job.db", tmp_path / "executions"
    command = mpi_command((3, [sys.executable, JOB, "mpiresume", journal, tasks, 0.001, side]))
    # Slaves forked by the killed job's ranks may rejoin the second job within this grace.
    env = {"SCIENTIFIC_MS_TEST_RUN": tagged.tag, "SCIENTIFIC_MS_REJOIN_GRACE": "20"}
    first = processes.start(command, env=env, cwd=tmp_path, name="first")
    kill_master_halfway(processes, side, tasks, tasks // 2)
    code, out = processes.finish(first, 60)     # Hydra ends the job when rank 0 dies
    assert code != 0, out
    executed = set(int(line) for line in lines(side))
    answered = {r.parameters[0] for r in read_journal(journal)}
    second = processes.start(command, env=env, cwd=tmp_path, name="second")
    code, out = processes.finish(second, 120)
    assert code == 0, out
    # Slaves of the first job that were still running a task at the kill may add an execution
    # after ``executed`` was read: count them with the first run.
    executions = collections.Counter(int(line) for line in lines(side))
    results = results_of(out)
    assert sorted(results) == list(range(tasks)) and all(v == [i * i] for i, v in results.items())
    replayed = int(re.search(r"^DONE \d+ REPLAYED (\d+)$", out, re.M).group(1))
    assert replayed == len(answered)
    twice = {i for i, n in executions.items() if n > 1}
    assert not twice & answered
    assert len(twice) <= len(executed - answered) + 10, (len(twice), len(executed - answered))
    print(f"\nmpiexec: {len(answered)} answers journaled at the kill, {len(twice)} tasks ran twice")
    no_leftovers(tagged, 30)
