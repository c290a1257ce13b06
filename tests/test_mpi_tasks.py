"""Tasks that are MPI programs, on a real master and slaves: each task runs a 4-process
mpi4py allreduce (tests/mpi_allreduce.py) through run_mpi_program on the 4 cores it holds;
one rank of one task is SIGKILLed in the middle of its program.

Needs an ``mpiexec`` (beside this Python, e.g. the ``mpich`` wheel's, or on PATH) and
mpi4py; skipped with the reason otherwise. 8 ranks on this machine's cores: MPICH
oversubscribes without being asked.
"""

import importlib.util
import os
import re
import signal
import sys
from collections import Counter
from pathlib import Path

import pytest

from conftest import descendants_gone, wait_for
from scientific_ms import MasterProcess, MPIProgramError, TaskRaisedException, run_mpi_program
from scientific_ms.mpi_program import find_mpiexec

HERE = Path(__file__).resolve().parent
SLAVE_SCRIPT = HERE / "mpi_tasks_slave.py"
TIMEOUT = 90
HAVE_MPI4PY = importlib.util.find_spec("mpi4py") is not None

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(find_mpiexec() is None or not HAVE_MPI4PY,
                       reason="needs an mpiexec (beside python, on PATH, or `pip install mpich`) and mpi4py "
                              f"(mpiexec: {find_mpiexec() or 'not found'}; "
                              f"mpi4py: {'yes' if HAVE_MPI4PY else 'not installed'})"),
]


@pytest.fixture
def farm(processes):
    """A master whose stored slave code is mpi_tasks_slave.py, and a node agent of 2 workers
    declaring 8 cores: two 4-core tasks run at once."""
    masters = []

    def start(label):
        master = MasterProcess(label, use_name_server=False, port=0)
        masters.append(master)
        master.store_slave_code(SLAVE_SCRIPT.read_text(), str(SLAVE_SCRIPT), [str(SLAVE_SCRIPT), label])
        processes.task_manager("slave", label, "-n", 2, "--resources", "cores=8", name="agent")
        master.wait_for_slaves(2, timeout=TIMEOUT)
        return master

    yield start
    for master in masters:
        master.shutdown()


def rank_pids(directory, name):
    return {int(path.read_text()) for path in Path(directory).glob(f"{name}.rank*.pid")}


def kill_a_rank(directory, name):
    """SIGKILL rank 2 of the program of task ``name`` once its 4 ranks have started (they wait
    for the test, holding); returns the PIDs of those ranks."""
    wait_for(lambda: len(list(Path(directory).glob(f"{name}.rank*.pid"))) == 4, TIMEOUT,
             f"the 4 ranks of {name}'s program")
    pids = rank_pids(directory, name)
    os.kill(int(Path(directory, f"{name}.rank2.pid").read_text()), signal.SIGKILL)
    return pids


def workers(master):
    return sorted(p["pid"] for p in master.task_manager.status()["processes"] if p["role"] == "slave")


def collect(master, count):
    """``count`` answers by task id: (name, sum, pid) or the exception raised."""
    answers = {}
    for _ in range(count):
        try:
            task_id, _, value = master.retrieveResult(timeout=TIMEOUT)
        except TaskRaisedException as raised:
            task_id, value = raised.task_id, raised
        assert task_id not in answers, f"{task_id} answered twice"
        answers[task_id] = value
    return answers


def test_a_rank_killed_mid_task_reruns_that_task_only(farm, tmp_path):
    master = farm("mpi_retry")
    before = workers(master)
    (tmp_path / "t2.hold").touch()
    names = {master.request_task("allreduce", str(tmp_path), f"t{i}", i + 1, resources={"cores": 4},
                                 retries=1): f"t{i}" for i in range(6)}
    killed = kill_a_rank(tmp_path, "t2")
    answers = collect(master, 6)
    assert {names[task_id]: value[:2] for task_id, value in answers.items()} == \
        {f"t{i}": (f"t{i}", (i + 1) * 10) for i in range(6)}   # sum of value * (rank + 1), ranks 0-3
    runs = (tmp_path / "runs").read_text().splitlines()
    assert Counter(line.split()[0] for line in runs) == {"t0": 1, "t1": 1, "t2": 2, "t3": 1, "t4": 1, "t5": 1}
    assert all(line.endswith(" -n 4") for line in runs), runs   # the launcher line for 4 cores
    # that task only: no worker was lost, the same two served throughout
    assert master.task_manager.status()["counters"]["processes_lost"] == 0
    assert workers(master) == before
    assert descendants_gone(killed | rank_pids(tmp_path, "*"), 20) == []


def test_a_rank_killed_without_retries_fails_that_task_and_the_farm_goes_on(farm, tmp_path):
    master = farm("mpi_fail")
    before = workers(master)
    (tmp_path / "t1.hold").touch()
    names = {master.request_task("allreduce", str(tmp_path), f"t{i}", i + 1, resources={"cores": 4}): f"t{i}"
             for i in range(4)}
    killed = kill_a_rank(tmp_path, "t1")
    answers = {names[task_id]: value for task_id, value in collect(master, 4).items()}
    raised = answers.pop("t1")
    assert isinstance(raised, TaskRaisedException) and isinstance(raised.exception, MPIProgramError), raised
    error = raised.exception
    assert re.search(r"the MPI program .*mpiexec -n 4 \S*python\S* \S*mpi_allreduce\.py .* t1 2 --hold "
                     r"failed \((exit status|killed by signal) \d+\)", str(error)), str(error)
    assert error.returncode != 0 and error.command[-4:] == [str(tmp_path), "t1", "2", "--hold"]
    assert {name: value[:2] for name, value in answers.items()} == {"t0": ("t0", 10), "t2": ("t2", 30),
                                                                   "t3": ("t3", 40)}
    # the farm goes on: the same workers, a plain task (no launcher line) and another MPI task
    assert master.task_manager.status()["counters"]["processes_lost"] == 0
    assert workers(master) == before
    master.requestTask("plain", 7)
    assert master.retrieveResult(timeout=TIMEOUT)[2] == (7, None, None)
    master.request_task("allreduce", str(tmp_path), "again", 5, resources={"cores": 4})
    assert master.retrieveResult(timeout=TIMEOUT)[2][:2] == ("again", 50)
    assert descendants_gone(killed | rank_pids(tmp_path, "*"), 20) == []


def test_a_task_past_its_time_limit_takes_every_rank_of_its_program_with_it(farm, tmp_path):
    master = farm("mpi_limit")
    before = workers(master)
    (tmp_path / "held.hold").touch()   # never given its go: the program waits until the limit
    master.request_task("allreduce", str(tmp_path), "held", 1, resources={"cores": 4}, time_limit=3)
    with pytest.raises(TaskRaisedException, match="time limit"):
        master.retrieveResult(timeout=TIMEOUT)
    assert descendants_gone(rank_pids(tmp_path, "held"), 20) == []
    # the handler ended at its limit with its program: its keeper had no worker to kill
    assert workers(master) == before
    assert master.task_manager.status()["counters"]["processes_lost"] == 0
    master.request_task("allreduce", str(tmp_path), "next", 2, resources={"cores": 4})
    assert master.retrieveResult(timeout=TIMEOUT)[2][:2] == ("next", 20)


def test_run_mpi_program_kills_every_rank_of_a_program_past_its_timeout(tmp_path):
    wait = [sys.executable, str(HERE / "mpi_allreduce.py"), str(tmp_path), "slow", "1", "--hold"]
    with pytest.raises(MPIProgramError, match=r"ran longer than 2 s and was killed"):
        run_mpi_program(wait, processes=3, timeout=2)
    assert descendants_gone(rank_pids(tmp_path, "slow"), 20) == []


def test_a_slave_killed_while_its_program_runs_takes_the_program_with_it(farm, tmp_path):
    master = farm("mpi_worker")
    (tmp_path / "t0.hold").touch()
    master.request_task("allreduce", str(tmp_path), "t0", 3, resources={"cores": 4})
    wait_for(lambda: len(list(tmp_path.glob("t0.rank*.pid"))) == 4, TIMEOUT, "the 4 ranks of t0's program")
    ranks = rank_pids(tmp_path, "t0")
    handler = int((tmp_path / "runs").read_text().split()[1])
    os.kill(handler, signal.SIGKILL)   # the slave process, not a rank
    assert descendants_gone(ranks, 20) == []
    assert master.retrieveResult(timeout=TIMEOUT)[2][:2] == ("t0", 30)   # run again, straight through
    assert master.task_manager.status()["counters"]["processes_lost"] == 1
