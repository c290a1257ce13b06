"""The launcher line of a task that holds cores, each rule on its own: which launcher, the
prefix for N processes, the variables around a handler, run_mpi_program's errors."""

import os
import pickle
import shlex
import sys

import pytest

from scientific_ms import ConfigurationError, MPIProgramError, mpi_program as mp, run_mpi_program
from scientific_ms.slave.devices import task_environment


def test_the_launcher_is_the_sites_when_given_else_this_environments_mpiexec():
    assert mp.launcher({mp.LAUNCHER_VARIABLE: "srun --mpi=pmi2 --exact"}) == ["srun", "--mpi=pmi2", "--exact"]
    assert mp.launcher({}) == [mp.find_mpiexec() or "mpiexec"]
    assert mp.launcher({mp.LAUNCHER_VARIABLE: "  "}) == mp.launcher({})


def test_the_prefix_starts_exactly_n_processes():
    assert mp.prefix(4, ["mpiexec"]) == ["mpiexec", "-n", "4"]
    assert mp.prefix(1, ["srun", "--mpi=pmi2"]) == ["srun", "--mpi=pmi2", "-n", "1"]
    for bad in (0, -2, 2.0, True, "4"):
        with pytest.raises(ConfigurationError, match="whole number >= 1 of processes"):
            mp.prefix(bad, ["mpiexec"])


def test_a_task_holding_cores_sees_its_prefix_and_count_which_are_put_back(monkeypatch):
    monkeypatch.setenv(mp.LAUNCHER_VARIABLE, "my mpirun")
    monkeypatch.setenv(mp.CORES_VARIABLE, "before")
    restore = task_environment((1, 3), 4)
    assert os.environ[mp.PREFIX_VARIABLE] == "my mpirun -n 4"
    assert os.environ[mp.CORES_VARIABLE] == "4"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == os.environ["SCIENTIFIC_MS_GPUS"] == "1,3"
    assert mp.task_prefix() == ["my", "mpirun", "-n", "4"]
    restore.restore()
    assert os.environ[mp.CORES_VARIABLE] == "before"
    assert mp.PREFIX_VARIABLE not in os.environ and "CUDA_VISIBLE_DEVICES" not in os.environ
    assert mp.task_prefix() is None
    restore = task_environment(None, 2)   # cores only: no GPU variables
    assert "CUDA_VISIBLE_DEVICES" not in os.environ and os.environ[mp.CORES_VARIABLE] == "2"
    restore.restore()


def test_a_launcher_path_with_spaces_survives_the_variable(monkeypatch):
    monkeypatch.setenv(mp.LAUNCHER_VARIABLE, shlex.join(["/opt/my mpi/bin/mpiexec", "-bind-to", "core"]))
    restore = task_environment(None, 3)
    try:
        assert mp.task_prefix() == ["/opt/my mpi/bin/mpiexec", "-bind-to", "core", "-n", "3"]
    finally:
        restore.restore()


def test_run_mpi_program_says_what_it_needs():
    with pytest.raises(ConfigurationError, match=r"no task given cores .*resources=\{'cores': N\}, or pass "
                                                 r"processes=N"):
        run_mpi_program([sys.executable, "-c", "pass"])
    with pytest.raises(ConfigurationError, match="as a list"):
        run_mpi_program("python program.py", processes=2)


def test_a_failed_program_says_its_command_status_and_stderr_and_pickles(monkeypatch):
    # any launcher will do for the error's text: a python that ignores "-n N" is one
    monkeypatch.setenv(mp.LAUNCHER_VARIABLE, shlex.join([sys.executable, "-c",
                                                         "import sys; print('rank 1 blew up', file=sys.stderr); "
                                                         "sys.exit(3)"]))
    with pytest.raises(MPIProgramError) as raised:
        run_mpi_program(["program.py", "x"], processes=2)
    error = pickle.loads(pickle.dumps(raised.value))
    assert error.returncode == 3 and error.command[-4:] == ["-n", "2", "program.py", "x"]
    assert "failed (exit status 3)" in str(error) and str(error).endswith("rank 1 blew up")
    assert error.stderr == "rank 1 blew up\n"
