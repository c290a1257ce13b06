"""The keeper's parts without processes: what a worker says, and how its keeper notes it.

``worker_link.py`` writes a worker's messages and reads them back as records;
``keeper_workers.Worker.receive`` notes them; ``keeper_lives.WorkerLives``
acts on the workers with only what the keeper handed it. The process-level
behaviour is tested in test_agent.py and test_timelimit.py.
"""

import os
import socket
from multiprocessing.connection import Connection

import pytest

from scientific_ms.slave.keeper_lives import WorkerLives
from scientific_ms.slave.keeper_workers import Running, Worker
from scientific_ms.slave.worker_link import Bye, End, Hello, Start, WorkerLink, decode, encode

ADDRESS = ("127.0.0.1", 7766, b"secret")


@pytest.mark.parametrize("message", [Hello(3, 0.5, ADDRESS, 60.0), Start("t1", 7, "square", 2.5), End(7), Bye()])
def test_each_message_reads_back_as_its_record(message):
    wire = encode(message)
    assert isinstance(wire[0], str) and wire[1:] == tuple(message)   # a plain tuple: its kind's name, its fields
    assert type(decode(wire)) is type(message) and decode(wire) == message


def test_a_message_of_an_unknown_kind_reads_as_none():
    assert decode(("poke",)) is None
    assert decode(()) is None


@pytest.fixture
def pair():
    """(the worker's link, the keeper's Worker for this process) over a socket pair."""
    ours, theirs = socket.socketpair()
    link = WorkerLink(Connection(theirs.detach()), keeper_pid=os.getpid())
    worker = Worker(os.getpid(), Connection(ours.detach()), child=False, restarts_left=0)
    yield link, worker
    link.close()
    worker.close()


def test_the_keeper_notes_what_its_worker_says(pair):
    link, worker = pair
    link.hello(3, 0.5, ADDRESS, 60.0)
    link.started("t1", 7, "square", 2.5)
    hellos = worker.receive()
    assert hellos == [Hello(3, 0.5, ADDRESS, 60.0)]
    assert (worker.process_id, worker.period, worker.address) == (3, 0.5, ADDRESS)
    running = worker.running
    assert isinstance(running, Running)
    assert (running.task_id, running.assignment, running.tag, running.limit) == ("t1", 7, "square", 2.5)
    assert worker.deadline(0.5) == running.started + 2.5 + 0.5
    link.ended(7)
    link.leaving()
    assert worker.receive() == []
    assert worker.running is None and worker.deadline(0.5) is None
    assert worker.leaving


def test_a_closed_link_closes_the_keepers_end(pair):
    link, worker = pair
    link.bye()   # says bye, then closes
    assert worker.receive() == []
    assert worker.leaving and worker.conn.closed


def test_worker_lives_hands_each_hello_to_the_keeper(pair):
    link, worker = pair
    heard, posted = [], []
    lives = WorkerLives("parts", lone=True, replace_killed=True, max_restarts=0, connection=lambda: None,
                        call=lambda *args: None, post=posted.append, on_hello=heard.append)
    lives.add(worker)
    link.hello(4, None, ADDRESS, 0.0)
    lives.on_ready(worker.conn)
    assert heard == [Hello(4, None, ADDRESS, 0.0)]
    assert lives.targets() == ([worker], False)
    lives.forget_registrations()
    assert worker.process_id is None and lives.targets() == ([], True)
    lives.stop("sigterm", 1.0, 0)
    lives.stop("lost", 1.0, 1)   # the first reason counts
    assert (lives.stopping, lives.exit_code) == ("sigterm", 0)
    assert lives.stop_deadline in lives.due(0.5)
    assert posted == []


def test_a_worker_declared_dead_after_it_died_is_a_death_not_a_stop():
    """Its master saw the connection drop before its keeper saw the death: the worker is a
    zombie, which is not runnable, yet it must not read as stopped (killed, and replaced even
    when it was the lone slave its user started)."""
    import subprocess
    import sys

    import psutil

    from conftest import wait_for

    died = subprocess.Popen([sys.executable, "-c", "import os; os._exit(3)"])
    try:
        wait_for(lambda: psutil.Process(died.pid).status() == psutil.STATUS_ZOMBIE, 30, "the process to end")
        ours, theirs = socket.socketpair()
        theirs.close()
        worker = Worker(died.pid, Connection(ours.detach()), child=False, restarts_left=0)
        worker.process_id = 5
        lives = WorkerLives("parts", lone=True, replace_killed=True, max_restarts=0, connection=lambda: None,
                            call=lambda *args: None, post=lambda event: None, on_hello=lambda hello: None)
        lives.add(worker)
        lives.end_declared_dead([5])
        assert worker.killed is None and worker.ended
        worker.close()
    finally:
        assert died.wait(timeout=30) == 3
