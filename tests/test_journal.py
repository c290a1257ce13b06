"""The journal on its own: opening checks, matching, group commit, reading; no master, no network.

A journal locked by a live master is tested with a real second process.
"""

import logging
import os
import pickle
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from conftest import wait_for
from scientific_ms import GlobalStateValue, JournalError, TaskManager, read_journal
from scientific_ms.master.journal import Journal
from scientific_ms.master.journal_keys import request_key, value_digest
from scientific_ms.master.journal_report import journal_progress
from scientific_ms.wire.payload import dumps_exception, dumps_parameters, dumps_value


def request(journal, manager, tag, *parameters):
    payload = dumps_parameters(tag, parameters)
    return journal.request(tag, request_key(tag, payload), payload, manager)


def answer_all(manager, slave, results):
    """Run every queued task through ``results(parameters)`` as a slave would; returns the count."""
    count = 0
    while True:
        tasks = manager.take_tasks(slave, 100)
        if not tasks:
            return count
        answers = []
        for task in tasks:
            value = results(pickle.loads(task.payload))
            answers.append((task.task_id, task.assignment, True, dumps_value(value), ""))
        count += manager.store_answers(slave, answers)


def journaled_manager(journal):
    manager = TaskManager()
    manager.on_answers = journal.answers
    slave = manager.register_process("slave", {}, ["square", "fail"], None)
    return manager, slave


def collect(manager, n):
    return sorted((o.task_id, pickle.loads(o.payload)) for o in (manager.get_answer(timeout=5) for _ in range(n)))


def test_a_second_run_gets_journaled_answers_without_running_them(tmp_path):
    path = tmp_path / "job.db"
    journal = Journal(path, "job")
    manager, slave = journaled_manager(journal)
    ids = [request(journal, manager, "square", i) for i in range(10)]
    assert answer_all(manager, slave, lambda p: p[0] ** 2) == 10
    first = collect(manager, 10)
    journal.close()

    journal = Journal(path, "job")
    assert journal.journaled == 10
    manager, slave = journaled_manager(journal)
    again = [request(journal, manager, "square", i) for i in range(10)]
    assert again == ids                       # the same requests get the same task ids
    assert manager.take_tasks(slave, 100) == []  # nothing to run
    assert collect(manager, 10) == first
    assert journal.replayed == 10
    journal.close()


def test_the_nth_identical_request_matches_the_nth_journaled_one_and_new_ones_run(tmp_path, caplog):
    path = tmp_path / "job.db"
    journal = Journal(path, "job")
    manager, slave = journaled_manager(journal)
    for value in (7, 7, 7):
        request(journal, manager, "square", value)
    answer_all(manager, slave, lambda p: p[0] ** 2)
    collect(manager, 3)
    request(journal, manager, "square", 8)     # requested, never answered
    journal.close()
    assert journal_progress(path)["tasks"] == {"requested": 4, "finished": 3, "failed": 0, "not_answered": 1}

    journal = Journal(path, "job")
    manager, slave = journaled_manager(journal)
    for value in (7, 7, 8, 9):
        request(journal, manager, "square", value)
    # two 7s answered from the journal; 8 (requested, never answered: not journaled) and 9 (new) run
    assert journal.replayed == 2
    ran = answer_all(manager, slave, lambda p: p[0] ** 2)
    assert ran == 2
    assert journal.unrequested() == 1          # the third 7
    with caplog.at_level(logging.WARNING, logger="scientific_ms.master.journal"):
        journal.close()
    assert "1 journaled tasks were not requested by this run" in caplog.text
    records = list(read_journal(path))
    assert [r.parameters for r in records] == [(7,), (7,), (7,), (8,), (9,)]
    assert [r.result for r in records] == [49, 49, 49, 64, 81]


def test_exceptions_are_journaled_and_read_back(tmp_path):
    path = tmp_path / "job.db"
    journal = Journal(path, "job")
    manager, slave = journaled_manager(journal)
    request(journal, manager, "fail", "boom")
    task = manager.take_tasks(slave, 1)[0]
    manager.store_answers(slave, [(task.task_id, task.assignment, False,
                                   dumps_exception(ValueError("boom")), "Traceback: ValueError: boom\n")])
    journal.close()
    (record,) = read_journal(path)
    assert (record.task_id, record.tag, record.parameters, record.ok) == (task.task_id, "fail", ("boom",), False)
    assert isinstance(record.result, ValueError) and "ValueError: boom" in record.traceback
    progress = journal_progress(path)
    assert progress["tasks"] == {"requested": 1, "finished": 0, "failed": 1, "not_answered": 0}
    assert progress["label"] == "job" and not progress["master_running"]


def test_a_global_state_placeholder_matches_by_its_value_not_its_id():
    table = dumps_value(list(range(100)))
    digests = {"state_1_table": value_digest(table), "state_2_table": value_digest(table),
               "state_3_table": value_digest(dumps_value([0]))}

    def key(state_id):
        parameters = (GlobalStateValue(state_id, "table"), 5)
        return request_key("f", dumps_parameters("f", parameters), parameters, digests.__getitem__)
    assert key(1) == key(2)           # another id, the same value: the same request
    assert key(1) != key(3)           # a changed table is a new request
    assert request_key("f", dumps_parameters("f", (5,))) != request_key("g", dumps_parameters("g", (5,)))


def test_group_commit_answers_reach_the_disk_while_the_journal_is_open(tmp_path):
    path = tmp_path / "job.db"
    journal = Journal(path, "job")
    manager, slave = journaled_manager(journal)
    for i in range(500):
        request(journal, manager, "square", i)
    answer_all(manager, slave, lambda p: p[0] ** 2)
    # A reader sees them committed, without any close or flush.
    wait_for(lambda: len(list(read_journal(path))) == 500, 10, "the answers to be committed")
    assert journal_progress(path)["master_running"]
    journal.close()


def test_remove_at_a_clean_end_deletes_the_journal_and_its_side_files(tmp_path):
    path = tmp_path / "job.db"
    journal = Journal(path, "job")
    journal.close(remove=True)
    assert sorted(os.listdir(tmp_path)) == []


def test_the_secret_is_kept_so_a_restarted_master_uses_the_same(tmp_path):
    path = tmp_path / "job.db"
    Journal(path, "job", b"s3cret").close()
    journal = Journal(path, "job", b"another")
    assert journal.secret == b"s3cret"
    journal.close()
    assert oct(path.stat().st_mode & 0o777) == "0o600"   # it holds the secret


# ------------------------------------------------------------------ bad input


def test_a_file_that_is_not_a_journal_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "results.txt"
    path.write_text("precious data\n")
    with pytest.raises(JournalError, match="is not a scientific_ms journal.*left untouched"):
        Journal(path, "job")
    assert path.read_text() == "precious data\n"


def test_an_sqlite_database_of_something_else_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE mine (x)")
        db.execute("INSERT INTO mine VALUES (42)")
    with pytest.raises(JournalError, match="SQLite database but not a scientific_ms journal"):
        Journal(path, "job")
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT x FROM mine").fetchall() == [(42,)]


def test_a_journal_of_another_label_is_refused(tmp_path):
    path = tmp_path / "job.db"
    Journal(path, "first").close()
    with pytest.raises(JournalError, match=r"belongs to the job labelled 'first', not 'second'"):
        Journal(path, "second")
    assert [r for r in read_journal(path)] == []


def test_a_folder_or_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(JournalError, match="is a folder"):
        Journal(tmp_path, "job")
    with pytest.raises(JournalError, match="folder .* does not exist"):
        Journal(tmp_path / "nowhere" / "job.db", "job")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only files; the check cannot be seen")
def test_a_read_only_journal_is_refused(tmp_path):
    path = tmp_path / "job.db"
    Journal(path, "job").close()
    path.chmod(0o400)
    with pytest.raises(JournalError, match="read-only.*make it writable"):
        Journal(path, "job")


def test_a_journal_in_use_by_a_live_master_is_refused_until_that_process_dies(tmp_path, processes):
    path = tmp_path / "job.db"
    holder = processes.python("-c", textwrap.dedent(f"""
        import time
        from scientific_ms.master.journal import Journal
        journal = Journal({str(path)!r}, "job")
        print("HOLDING", flush=True)
        time.sleep(3600)
    """), name="holder")
    wait_for(lambda: "HOLDING" in processes.output(holder) if holder.poll() is None else
             pytest.fail(processes.output(holder)), 30, "the other process to open the journal")
    with pytest.raises(JournalError, match=rf"in use by a live master \(PID {holder.pid} on .*stop that master"):
        Journal(path, "job")
    holder.kill()
    holder.wait()
    Journal(path, "job").close()    # the lock died with its process


def test_a_full_disk_while_writing_is_reported_naming_the_file_and_the_fix(tmp_path, caplog):
    path = tmp_path / "job.db"
    journal = Journal(path, "job")
    manager, slave = journaled_manager(journal)
    # Simulate a full disk: SQLite refuses to grow the file past its current size.
    pages = journal._db.execute("PRAGMA page_count").fetchone()[0]
    journal._db.execute(f"PRAGMA max_page_count = {pages}")
    with caplog.at_level(logging.ERROR, logger="scientific_ms.master.journal"):
        for i in range(200):
            request(journal, manager, "square", "x" * 10_000, i)
        assert answer_all(manager, slave, lambda p: 0) == 200    # the job itself goes on
        wait_for(lambda: "disk is full" in caplog.text, 10, "the writer to report the full disk")
        assert len(collect(manager, 200)) == 200
        journal.close()
    assert f"journal {path}" in caplog.text and "free some disk space" in caplog.text


def test_show_and_read_journal_refuse_what_is_not_a_journal(tmp_path):
    text = tmp_path / "notes.db"
    text.write_text("hello")
    with pytest.raises(JournalError, match="not a scientific_ms journal"):
        list(read_journal(text))
    with pytest.raises(JournalError, match="no journal at"):
        journal_progress(tmp_path / "missing.db")
    result = subprocess.run([sys.executable, "-m", "scientific_ms", "show", str(text)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "not a scientific_ms journal" in result.stderr
