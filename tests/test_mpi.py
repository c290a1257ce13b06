"""Jobs launched by mpiexec: rank 0 is the master, the other ranks serve; and jobs without MPI.

The MPI tests need an ``mpiexec`` (next to this Python, on PATH, or the
``mpich`` wheel's: ``mpi_program.find_mpiexec``) and mpi4py; they are skipped with the reason otherwise.
The rank-kill test needs MPICH's Hydra (``mpiexec -disable-auto-cleanup``).
"""

import importlib.metadata
import importlib.util
import os
import re
import signal
import subprocess
import sys
import textwrap
import uuid
from collections import Counter
from pathlib import Path

import psutil
import pytest

from conftest import EXAMPLES, wait_for
from scientific_ms import mpi
from scientific_ms.mpi_program import find_mpiexec
from scientific_ms.wire import discovery

pytestmark = pytest.mark.timeout(90)


MPIEXEC = find_mpiexec()
HAVE_MPI4PY = importlib.util.find_spec("mpi4py") is not None


def _is_hydra(mpiexec):
    try:
        text = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "HYDRA" in text.upper()


needs_mpi = pytest.mark.skipif(
    MPIEXEC is None or not HAVE_MPI4PY,
    reason="needs mpiexec (PATH, next to python, or `pip install mpich`) and mpi4py "
           f"(mpiexec: {MPIEXEC or 'not found'}; mpi4py: {'yes' if HAVE_MPI4PY else 'not installed'})")
IS_HYDRA = MPIEXEC is not None and _is_hydra(MPIEXEC)
needs_hydra = pytest.mark.skipif(not IS_HYDRA, reason="the rank-kill test drives MPICH's Hydra mpiexec")


@pytest.fixture
def tagged(tmp_path):
    """A tag put in the environment of everything a test launches; leftovers are reported and killed."""
    tag = uuid.uuid4().hex

    def find():
        found = []
        for proc in psutil.process_iter():
            try:
                if proc.environ().get("SCIENTIFIC_MS_TEST_RUN") == tag:
                    found.append(proc)
            except (psutil.Error, OSError):
                pass
        return found
    find.tag = tag
    yield find
    for proc in find():
        try:
            proc.kill()
        except psutil.Error:
            pass


def mpi_command(*ranks, flags=()):
    """``mpiexec [flags] -n N cmd... : -n M cmd...``; each rank block is (n, [args])."""
    command = [MPIEXEC, *flags]
    for index, (n, args) in enumerate(ranks):
        if index:
            command.append(":")
        command += ["-n", str(n), *map(str, args)]
    return command


def rank0_reporting(script):
    """Rank 0 in a shell that prints its exit code (and ignores Hydra's SIGUSR1 notices)."""
    return ["sh", "-c", 'trap "" USR1; "$0" "$@"; echo "RANK0 EXIT $?"', sys.executable, script]


def live_output(process):
    """What a running process has written so far.

    Read through a file object of our own: ``processes.output`` seeks the
    file object whose descriptor the child writes through, which moves the
    child's write offset too, so it must wait until the child has exited.
    """
    return Path(process.output_file.name).read_text()


def no_leftovers(tagged, timeout=15.0):
    wait_for(lambda: not tagged(), timeout, "every process of the MPI job to exit")


# ------------------------------------------------------------------ the job scripts

KILL_JOB = textwrap.dedent("""
    import os, sys, time
    from scientific_ms import MasterProcess, SlaveProcess, runJob

    N = int(os.environ["JOB_TASKS"])
    SECONDS = float(os.environ["JOB_SECONDS"])
    LOG = os.environ["JOB_LOG"]

    def say(line):
        sys.stdout.write(line + "\\n")     # one write per line: every rank's output is merged
        sys.stdout.flush()

    class Master(MasterProcess):
        def run(self):
            for i in range(N):
                self.requestTask("work", i)
            seen = {}
            for _ in range(N):
                task_id, tag, (i, pid) = self.retrieveResult("work")
                if i in seen:
                    say(f"DUPLICATE {i}")
                seen[i] = pid
                say(f"RESULT {i} {pid}")
            say(f"DONE {len(seen)}")

    class Worker(SlaveProcess):
        def do_work(self, i):
            with open(LOG, "a") as log:
                log.write(f"start {i} {os.getpid()}\\n")
            time.sleep(SECONDS)
            return i, os.getpid()

    runJob("mpijob", Master, Worker)
    say(f"AFTER RUNJOB {os.environ.get('PMI_RANK')}")
""")

JOIN_JOB = textwrap.dedent("""
    import os, sys, threading, time
    from scientific_ms import MasterProcess, SlaveProcess, runJob

    class Master(MasterProcess):
        def run(self):
            pause = threading.Event()
            while sum(p["role"] == "slave" for p in self.task_manager.status()["processes"]) < 3:
                pause.wait(0.02)      # the slave rank and both outside slaves have joined
            print("JOINED", flush=True)
            for i in range(150):
                self.requestTask("work", i)
            results = {}
            for n in range(150):
                task_id, tag, (i, pid) = self.retrieveResult("work")
                results[i] = pid
                if n == 30:
                    print("LEAVE NOW", flush=True)
            print(f"DONE {len(results)} {len(set(results.values()))}", flush=True)

    class Worker(SlaveProcess):
        def do_work(self, i):
            time.sleep(0.02)
            return i, os.getpid()

    runJob("mpijoin", Master, Worker)
""")

OUTSIDE_SLAVE = textwrap.dedent("""
    import os, time
    from scientific_ms import startSlaveProcess

    def do_work(i):
        time.sleep(0.02)
        return i, os.getpid()

    startSlaveProcess("mpijoin", wait=True)
""")

TWO_SCRIPT_MASTER = textwrap.dedent("""
    import os
    from pathlib import Path
    from scientific_ms import initializeMasterProcess

    rank = os.environ.get("PMI_RANK", "none")
    Path(f"before-{rank}").touch()          # every rank runs the script up to here
    tasks = initializeMasterProcess("mpitwo", slave_script="two_slave.py")
    Path(f"after-{rank}").touch()           # only the master gets here
    for i in range(40):
        tasks.requestTask("square", i)
    results = {}
    for _ in range(40):
        task_id, tag, (i, square, pid) = tasks.retrieveResult("square")
        results[i] = (square, pid)
    assert sorted(results) == list(range(40)) and all(s == i * i for i, (s, _) in results.items())
    print("DONE", len(results), len({pid for _, pid in results.values()}), flush=True)
""")

TWO_SCRIPT_SLAVE = textwrap.dedent("""
    import os, time
    from scientific_ms import startSlaveProcess

    def do_square(i):
        time.sleep(0.01)
        return i, i * i, os.getpid()

    startSlaveProcess("mpitwo", wait=True)
""")

NO_MPI_JOB = textwrap.dedent("""
    import os, sys
    if os.environ.get("BLOCK_MPI4PY"):
        sys.modules["mpi4py"] = None          # 'import mpi4py' now raises ImportError
    from scientific_ms import MasterProcess, SlaveProcess, runJob

    class Master(MasterProcess):
        def run(self):
            for i in range(10):
                self.requestTask("probe", i)
            answers = [self.retrieveResult("probe")[2] for _ in range(10)]
            print("RESULTS", sorted(i for i, _ in answers))
            print("SLAVE MPI4PY", any(loaded for _, loaded in answers))
            print("MASTER MPI4PY", sys.modules.get("mpi4py") is not None)

    class Worker(SlaveProcess):
        def do_probe(self, i):
            return i, sys.modules.get("mpi4py") is not None

    runJob("nompi", Master, Worker, launch_slaves=2)
""")


def result_lines(text):
    return [tuple(map(int, m.groups())) for m in re.finditer(r"RESULT (\d+) (\d+)(?!\d)", text)]


def job_environment(tagged, tmp_path, **extra):
    return dict({"SCIENTIFIC_MS_TEST_RUN": tagged.tag, "JOB_LOG": str(tmp_path / "starts.log")},
                **{k: str(v) for k, v in extra.items()})


# ------------------------------------------------------------------ the runJob path

@needs_mpi
def test_runjob_under_mpiexec_rank0_is_master_other_ranks_serve(processes, tmp_path, tagged):
    script = tmp_path / "job.py"
    script.write_text(KILL_JOB)
    env = job_environment(tagged, tmp_path, JOB_TASKS=120, JOB_SECONDS=0.005)
    job = processes.start(mpi_command((4, [sys.executable, script])), env=env, cwd=tmp_path)
    code, out = processes.finish(job, 60)
    assert code == 0, out                  # every rank exited 0
    results = result_lines(out)
    assert sorted(i for i, _ in results) == list(range(120)), out
    assert "DUPLICATE" not in out and "DONE 120" in out
    # Only rank 0 returns from runJob; the slave ranks end inside it.
    assert re.findall(r"^AFTER RUNJOB (\S+)$", out, re.M) == ["0"], out
    # The slaves were the other ranks: each started task ran in a process below a rank.
    pids = {int(line.split()[2]) for line in (tmp_path / "starts.log").read_text().splitlines()}
    assert 1 <= len(pids) <= 3
    assert discovery.read_label_file("mpijob") is None
    no_leftovers(tagged)


@needs_mpi
def test_the_demo_under_mpiexec(processes, tagged):
    job = processes.start(mpi_command((3, [sys.executable, EXAMPLES / "mpi_demo.py", 30])),
                          env={"SCIENTIFIC_MS_TEST_RUN": tagged.tag}, cwd=EXAMPLES)
    code, out = processes.finish(job, 60)
    assert code == 0, out
    assert "sqrt(29) = 5.385165" in out
    done = sum(int(n) for n in re.findall(r"^\s*(\d+) tasks done by", out, re.M))
    assert done == 30, out
    no_leftovers(tagged)


# ------------------------------------------------------------------ the two-script path

@needs_mpi
def test_two_scripts_under_mpiexec_slave_ranks_run_the_stored_slave_code(processes, tmp_path, tagged):
    (tmp_path / "two_master.py").write_text(TWO_SCRIPT_MASTER)
    (tmp_path / "two_slave.py").write_text(TWO_SCRIPT_SLAVE)
    job = processes.start(mpi_command((3, [sys.executable, "two_master.py"])),
                          env={"SCIENTIFIC_MS_TEST_RUN": tagged.tag}, cwd=tmp_path)
    code, out = processes.finish(job, 60)
    assert code == 0, out
    assert re.search(r"^DONE 40 [12]$", out, re.M), out
    assert sorted(p.name for p in tmp_path.glob("before-*")) == ["before-0", "before-1", "before-2"]
    assert [p.name for p in tmp_path.glob("after-*")] == ["after-0"]   # ranks >= 1 never ran the rest
    no_leftovers(tagged)


# ------------------------------------------------------------------ slaves from outside

@needs_mpi
def test_slaves_join_a_running_mpi_job_by_label_and_leave(processes, tmp_path, tagged):
    script = tmp_path / "join_job.py"
    script.write_text(JOIN_JOB)
    (tmp_path / "outside_slave.py").write_text(OUTSIDE_SLAVE)
    env = {"SCIENTIFIC_MS_TEST_RUN": tagged.tag}
    job = processes.start(mpi_command((2, [sys.executable, script])), env=env, cwd=tmp_path, name="job")
    wait_for(lambda: discovery.read_label_file("mpijoin"), 30, "the MPI job's label file")
    by_command = processes.task_manager("slave", "mpijoin", env=env, cwd="/", name="by_command")
    by_script = processes.python(tmp_path / "outside_slave.py", env=env, cwd=tmp_path, name="by_script")
    wait_for(lambda: "LEAVE NOW" in live_output(job), 60, "the job to be under way")
    by_command.send_signal(signal.SIGINT)        # one outside slave leaves in the middle of the job
    assert processes.finish(by_command, 15)[0] in (0, 130)
    code, out = processes.finish(job, 60)
    assert code == 0, out
    assert re.search(r"^DONE 150 \d+$", out, re.M), out
    code, out = processes.finish(by_script, 15)
    assert code == 0, out
    no_leftovers(tagged)


# ------------------------------------------------------------------ a slave rank is killed

@needs_mpi
@needs_hydra
@pytest.mark.parametrize("flags", [["-disable-auto-cleanup"], []], ids=["disable-auto-cleanup", "default"])
def test_a_killed_slave_rank_does_not_take_the_job_down(processes, tmp_path, tagged, flags):
    script = tmp_path / "job.py"
    script.write_text(KILL_JOB)
    starts = tmp_path / "starts.log"
    tasks = 300
    env = job_environment(tagged, tmp_path, JOB_TASKS=tasks, JOB_SECONDS=0.03)
    command = mpi_command((1, rank0_reporting(script)), (3, [sys.executable, script]), flags=flags)
    job = processes.start(command, env=env, cwd=tmp_path)
    wait_for(lambda: len(result_lines(live_output(job))) >= 40, 60, "40 results")

    def running_now():
        """(task, pid) of a task that a slave has started and not answered."""
        answered = {i for i, _ in result_lines(live_output(job))}
        for line in reversed(starts.read_text().splitlines()):
            _, i, pid = line.split()
            if int(i) not in answered:
                return int(i), int(pid)
        return None
    task, victim = wait_for(running_now, 10, "a running task")
    os.kill(victim, signal.SIGKILL)

    code, out = processes.finish(job, 60)
    results = result_lines(out)
    assert "RANK0 EXIT 0" in out, out                   # the master finished normally
    assert "DUPLICATE" not in out and f"DONE {tasks}" in out, out
    odd_lines = [line for line in out.splitlines() if not re.match(r"RESULT \d+ \d+$", line)]
    assert sorted(i for i, _ in results) == list(range(tasks)), odd_lines   # every result, exactly once
    assert f"slave process {victim} was killed by SIGKILL" in out, out
    assert code == 0, out       # the rank whose slave died exits 0: the farm absorbed the loss
    # What the victim had started and not answered ran again on the other ranks.
    answered_by = dict(results)
    started_by_victim = {int(i) for _, i, pid in (line.split() for line in starts.read_text().splitlines())
                         if int(pid) == victim}
    rerun = {i for i in started_by_victim if answered_by[i] != victim}
    assert rerun, (task, victim, out)
    assert victim not in set(answered_by[i] for i in rerun)
    starts_per_task = Counter(int(line.split()[1]) for line in starts.read_text().splitlines())
    assert all(starts_per_task[i] >= 2 for i in rerun)
    no_leftovers(tagged)


# ------------------------------------------------------------------ no MPI at all

def test_plain_python_neither_imports_nor_needs_mpi4py(processes, tmp_path):
    script = tmp_path / "nompi.py"
    script.write_text(NO_MPI_JOB)
    clean = {name: "" for name in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "MPI_LOCALRANKID")}
    env = {k: v for k, v in os.environ.items() if k not in clean}
    for block in ("", "1"):
        process = subprocess.run([sys.executable, str(script)], env=dict(env, BLOCK_MPI4PY=block),
                                 cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert process.returncode == 0, process.stdout + process.stderr
        assert "RESULTS [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]" in process.stdout
        assert "MASTER MPI4PY False" in process.stdout
        assert "SLAVE MPI4PY False" in process.stdout


def test_runs_under_mpi_reads_only_the_environment(monkeypatch):
    for name in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "MPI_LOCALRANKID"):
        monkeypatch.delenv(name, raising=False)
    assert not mpi.runs_under_mpi()
    assert mpi.rank() == 0
    for name in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"):
        monkeypatch.setenv(name, "3")
        assert mpi.runs_under_mpi()
        monkeypatch.delenv(name)


def test_under_a_launcher_without_mpi4py_the_error_says_so(tmp_path):
    script = tmp_path / "launched.py"
    script.write_text(textwrap.dedent("""
        import sys
        sys.modules["mpi4py"] = None
        from scientific_ms import MasterProcess, SlaveProcess, runJob
        class Master(MasterProcess):
            def run(self):
                pass
        class Worker(SlaveProcess):
            def do_x(self):
                pass
        runJob("nompi4py", Master, Worker)
    """))
    process = subprocess.run([sys.executable, str(script)], env=dict(os.environ, PMI_RANK="1", PMI_SIZE="2"),
                             cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert process.returncode == 1
    assert "ConfigurationError" in process.stderr
    assert "started by an MPI launcher (PMI_RANK=1) but mpi4py is not installed" in process.stderr


# ------------------------------------------------------------------ SIGTERM to a slave rank (walltime, scancel)

@needs_mpi
@needs_hydra
def test_sigterm_to_a_slave_rank_is_passed_to_its_slave_which_leaves_cleanly(processes, tmp_path, tagged):
    """The rank's own process passes SIGTERM on; the slave gives its task back, says goodbye, exits 0."""
    script = tmp_path / "job.py"
    script.write_text(KILL_JOB)
    starts = tmp_path / "starts.log"
    tasks = 200
    env = job_environment(tagged, tmp_path, JOB_TASKS=tasks, JOB_SECONDS=0.03, SCIENTIFIC_MS_TERM_GRACE=0)
    command = mpi_command((1, rank0_reporting(script)), (2, [sys.executable, script]),
                          flags=["-disable-auto-cleanup"])
    job = processes.start(command, env=env, cwd=tmp_path)
    wait_for(lambda: len(result_lines(live_output(job))) >= 30, 60, "30 results")
    slave = int(starts.read_text().splitlines()[-1].split()[2])
    rank_process = psutil.Process(slave).ppid()
    os.kill(rank_process, signal.SIGTERM)
    code, out = processes.finish(job, 60)
    assert "RANK0 EXIT 0" in out and code == 0, out
    assert "DUPLICATE" not in out and f"DONE {tasks}" in out, out
    assert sorted(i for i, _ in result_lines(out)) == list(range(tasks))
    assert "got SIGTERM" in out and "was killed by" not in out, out
    no_leftovers(tagged)
