"""The Executor under mpiexec: rank 0 runs the script, the other ranks serve its calls."""

import re
import sys
import textwrap

import pytest

from conftest import EXAMPLES
from test_mpi import mpi_command, needs_mpi, no_leftovers, tagged  # noqa: F401  (tagged is a fixture)

pytestmark = pytest.mark.timeout(90)

SCRIPT = textwrap.dedent("""
    import os, sys, time
    from scientific_ms import Executor

    def square(x):
        time.sleep(0.01)
        return x * x, os.getpid()

    if __name__ == "__main__":
        with Executor() as ex:
            results = list(ex.map(square, range(60)))
        pids = {pid for _, pid in results}
        print("SQUARES", [value for value, _ in results] == [x * x for x in range(60)], flush=True)
        print("SERVED BY OTHER RANKS", os.getpid() not in pids and 1 <= len(pids) <= 2, flush=True)
        print("ARGV", sys.argv, flush=True)
""")


@needs_mpi
@pytest.mark.parametrize("launch", ["module", "direct"])
def test_executor_under_mpiexec_is_served_by_the_other_ranks(processes, tmp_path, tagged, launch):
    (tmp_path / "job.py").write_text(SCRIPT)
    runner = [sys.executable, "-m", "scientific_ms"] if launch == "module" else [sys.executable]
    job = processes.start(mpi_command((3, [*runner, "job.py", "alpha", "beta"])),
                          env={"SCIENTIFIC_MS_TEST_RUN": tagged.tag}, cwd=tmp_path)
    code, out = processes.finish(job, 60)
    assert code == 0, out
    assert "SQUARES True" in out and "SERVED BY OTHER RANKS True" in out, out
    assert re.findall(r"^ARGV (.*)$", out, re.M) == ["['job.py', 'alpha', 'beta']"], out   # rank 0 only
    no_leftovers(tagged)


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, time
    from scientific_ms import Executor

    def square(x):
        time.sleep(0.01)
        return x * x, os.getpid()

    if __name__ == "__main__":
        with Executor() as ex:
            values = []
            for value, pid in ex.map(square, range(200)):
                values.append(value)
                if len(values) == 20:
                    os.kill(pid, signal.SIGKILL)      # the slave process under one of the ranks
        print("SQUARES", values == [x * x for x in range(200)], flush=True)
        print("LOST", ex.master.task_manager.counters["processes_lost"], flush=True)
""")


@needs_mpi
def test_a_killed_slave_rank_changes_no_result_of_a_map(processes, tmp_path, tagged):
    (tmp_path / "job.py").write_text(KILL_SCRIPT)
    job = processes.start(mpi_command((3, [sys.executable, "-m", "scientific_ms", "job.py"])),
                          env={"SCIENTIFIC_MS_TEST_RUN": tagged.tag}, cwd=tmp_path)
    code, out = processes.finish(job, 60)
    assert code == 0, out
    assert "SQUARES True" in out and "LOST 1" in out, out
    assert "was killed by SIGKILL; its tasks run again on other slaves" in out, out
    no_leftovers(tagged)


@needs_mpi
def test_the_executor_demo_under_mpiexec(processes, tagged):
    job = processes.start(mpi_command((3, [sys.executable, "-m", "scientific_ms", "executor_demo.py"])),
                          env={"SCIENTIFIC_MS_TEST_RUN": tagged.tag}, cwd=EXAMPLES)
    code, out = processes.finish(job, 60)
    assert code == 0, out
    assert "map: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in out
    no_leftovers(tagged)


@needs_mpi
def test_a_script_without_an_executor_lets_the_ranks_go(processes, tmp_path, tagged):
    (tmp_path / "plain.py").write_text("print('NO EXECUTOR HERE', flush=True)\n")
    job = processes.start(mpi_command((2, [sys.executable, "-m", "scientific_ms", "plain.py"])),
                          env={"SCIENTIFIC_MS_TEST_RUN": tagged.tag}, cwd=tmp_path)
    code, out = processes.finish(job, 60)
    assert "NO EXECUTOR HERE" in out
    assert "ended without starting an Executor" in out, out
    no_leftovers(tagged)


def test_python_m_scientific_ms_still_runs_task_manager_commands(processes):
    code, out = processes.finish(processes.task_manager("list"), 30)
    assert code == 0 and "no live task managers" in out, out
    code, out = processes.finish(processes.task_manager("nowhere.py"), 30)
    assert code == 2 and "no script 'nowhere.py'" in out, out
    code, out = processes.finish(processes.task_manager("executor_demo.py", cwd=EXAMPLES), 60)   # no MPI: it just runs
    assert code == 0 and "map: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in out, out
