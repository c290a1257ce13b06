"""SlurmSlaves on a real single-node SLURM (``scripts/slurm_cluster.py``; skipped without root).

A master outside any job holds node agents as SLURM jobs: it scales past one
job while work waits, gets every result once, releases idle jobs while it
lives, cancels pending and running jobs at its end, leaves nothing after
``kill -9``, reports a bad partition with sbatch's message and replaces a
job ahead of its walltime warning. Figures are printed (``pytest -s``).
"""

import re
import signal as signals
import textwrap
import time

import pytest

from conftest import EXAMPLES, wait_for
from scientific_ms import ProvisionError, SlurmSlaves
from test_slurm import DONE_STATES, figure, master_with_code, slurm, states  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def on_cluster(slurm, monkeypatch):  # noqa: F811
    """sbatch, squeue and scancel of the test cluster (SLURM_CONF) for the master in this process."""
    for name, value in slurm.environment().items():
        monkeypatch.setenv(name, value)
    return slurm


@pytest.fixture
def master(master_with_code, on_cluster):  # noqa: F811
    """test_slurm's masters storing SLAVE_CODE, with this cluster's sbatch for their jobs."""
    return master_with_code


def live(cluster, job_ids):
    """The jobs among ``job_ids`` that SLURM still lists as pending or running."""
    found = {}
    for job_id in job_ids:
        found.update(states(cluster, job_id))
    return {job_id: state for job_id, state in found.items() if state not in DONE_STATES}


def collect(master, ids, timeout=120.0):
    got = {}
    for _ in ids:
        task_id, _, result = master.retrieveResult("step", timeout=timeout)
        assert task_id not in got, f"{task_id} delivered twice"
        got[task_id] = result
    assert set(got) == set(ids)
    return got


def test_scales_past_one_job_and_releases_idle_jobs_while_the_master_lives(master, on_cluster, tmp_path):
    boss = master("scale")
    boss.launchSlaveJobs(SlurmSlaves(slaves_per_job=2, min_jobs=0, max_jobs=3, idle_timeout=3,
                                     output=str(tmp_path / "slave-%j.out")))
    requested = time.monotonic()
    ids = [boss.requestTask("step", i, 0.05) for i in range(300)]
    task_id, _, first = boss.retrieveResult("step", timeout=120)
    figure("first request to first result (min_jobs=0)", f"{time.monotonic() - requested:.2f} s")
    got = collect(boss, [i for i in ids if i != task_id])
    got[task_id] = first
    assert sorted(value for value, _ in got.values()) == list(range(300))
    assert len({job for _, job in got.values()}) > 1, "the work was served by one job only"
    jobs = [job["id"] for job in boss.slave_jobs]
    assert 1 < len(jobs) <= 3
    dry = time.monotonic()
    wait_for(lambda: not live(on_cluster, jobs), 60, "the idle jobs to be released")
    figure("queue dry to the last job released (idle timeout 3 s)", f"{time.monotonic() - dry:.2f} s")
    assert not boss.task_manager.terminated
    assert boss.task_manager.counters["rescheduled"] == 0


def test_the_masters_end_cancels_its_pending_and_running_jobs(master, on_cluster):
    boss = master("ending")
    # 5 CPUs each on an 8-CPU node: one job runs, the other stays pending
    boss.launchSlaveJobs(SlurmSlaves(slaves_per_job=1, cpus_per_slave=5, min_jobs=2, max_jobs=2))
    jobs = [job["id"] for job in boss.slave_jobs]
    assert len(jobs) == 2
    wait_for(lambda: sorted(live(on_cluster, jobs).values()) == ["PENDING", "RUNNING"], 60,
             "one job running, one pending")
    boss.shutdown()
    wait_for(lambda: not live(on_cluster, jobs), 30, "the jobs to be cancelled")


def test_a_bad_partition_is_refused_with_sbatchs_message(master):
    boss = master("badpartition")
    with pytest.raises(ProvisionError, match=r"(?i)invalid partition"):
        boss.launchSlaveJobs(SlurmSlaves(partition="nosuchpartition", min_jobs=1, max_jobs=1))
    assert boss.slave_jobs == []


@pytest.mark.parametrize("signal", ["KILL", "TERM", "INT"])
def test_no_job_stays_after_the_master_is_killed_terminated_or_interrupted(processes, on_cluster, tmp_path,
                                                                          signal):
    """SIGTERM and Ctrl-C: the master cancels its jobs; kill -9: the jobs end on their own."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent("""\
        import sys, time
        from scientific_ms import MasterProcess, SlaveProcess, SlurmSlaves, runJob

        class Master(MasterProcess):
            def run(self):
                for i in range(100):
                    self.requestTask("wait", i)
                self.wait_for_slaves(1)
                deadline = time.monotonic() + 60   # min_jobs=2: the second is submitted by the next round
                while len(self.slave_jobs) < 2 and time.monotonic() < deadline:
                    time.sleep(0.1)
                print("JOBS", *[job["id"] for job in self.slave_jobs], flush=True)
                time.sleep(600)

        class Slave(SlaveProcess):
            def do_wait(self, i):
                time.sleep(1)

        runJob(sys.argv[1], Master, Slave,
               launch_slaves=SlurmSlaves(1, min_jobs=2, max_jobs=2, cpus_per_slave=5))
        """))
    boss = processes.python(script, "killed", cwd=tmp_path)
    wait_for(lambda: "JOBS" in processes.output(boss), 90, "the master's first job to serve")
    jobs = re.search(r"^JOBS (.*)$", processes.output(boss), re.M).group(1).split()
    assert len(jobs) == 2
    boss.send_signal(getattr(signals, "SIG" + signal))
    code = boss.wait(60)
    killed = time.monotonic()
    # Python ends of an uncaught KeyboardInterrupt by SIGINT, after the cleanup
    assert code == {"KILL": -9, "TERM": 143, "INT": -2}[signal], processes.output(boss)
    # kill -9: the running job's agent loses its master and ends; the pending one starts, finds nobody, ends
    wait_for(lambda: not live(on_cluster, jobs), 90, "the jobs of the ended master to end")
    figure(f"SIG{signal} to the master to its last job gone", f"{time.monotonic() - killed:.2f} s")


def test_a_job_given_its_walltime_warning_is_replaced_ahead_of_time(master, on_cluster, tmp_path):
    boss = master("walltime")
    # a 2-minute walltime whose warning (SIGTERM) comes 100 s early: about 20 s after the start
    # (SLURM checks time limits twice a minute, so it may come sooner); the replacement goes in
    # 15 s before that
    spec = SlurmSlaves(slaves_per_job=2, min_jobs=0, max_jobs=1, walltime="2", warning=100,
                       replace_ahead=15, idle_timeout=5, output=str(tmp_path / "slave-%j.out"))
    ids = [boss.requestTask("step", i, 0.4) for i in range(200)]     # 40 s of work for 2 slaves
    boss.launchSlaveJobs(spec)
    got = collect(boss, ids, timeout=180)
    assert sorted(value for value, _ in got.values()) == list(range(200))
    served_by = {job for _, job in got.values()}
    jobs = boss.slave_jobs
    assert len(served_by) >= 2, f"one job did all the work: {jobs}"
    wait_for(lambda: boss.slave_jobs[0]["seconds_since_ended"] is not None, 60, "the first job to end")
    first, second = boss.slave_jobs[:2]
    # the replacement was submitted while the first job still ran
    assert second["seconds_since_submitted"] > first["seconds_since_ended"], boss.slave_jobs
    figure("replacement submitted before the first job ended",
           f"{second['seconds_since_submitted'] - first['seconds_since_ended']:.1f} s")
    counters = boss.task_manager.counters
    figure("tasks rescheduled at the walltime warning", counters["rescheduled"])
    assert counters["left_sigterm"] >= 2, counters
    assert counters["processes_lost"] == 0, counters


def test_no_task_is_lost_when_a_busy_job_is_cancelled(master, on_cluster, tmp_path):
    """scancel sends SIGTERM, KillWait (5 s here) before SIGKILL (even ``scancel -s KILL``
    does so for a whole job): the node agent drains and hands back what it did not start."""
    boss = master("scancel")
    boss.launchSlaveJobs(SlurmSlaves(slaves_per_job=2, min_jobs=0, max_jobs=2, idle_timeout=5,
                                     output=str(tmp_path / "slave-%j.out")))
    ids = [boss.requestTask("step", i, 0.3) for i in range(100)]
    wait_for(lambda: boss.task_manager.wait_for_running(4, timeout=0.5), 90, "both jobs to work")
    serving = [proc["slurm"]["job_id"] for proc in boss.task_manager.status()["processes"] if proc.get("slurm")]
    victim = serving[0]
    assert victim in [job["id"] for job in boss.slave_jobs]
    on_cluster.run("scancel", victim)
    got = collect(boss, ids, timeout=120)
    assert sorted(value for value, _ in got.values()) == list(range(100))
    figure("tasks rescheduled when a busy job is cancelled (scancel)", boss.task_manager.counters["rescheduled"])
    assert boss.task_manager.counters["rescheduled"] == 0
    assert boss.task_manager.counters["processes_lost"] == 0


def test_the_example_holds_slurm_jobs(processes, on_cluster, tmp_path):
    """examples/slurm_sweep.py picks SlurmSlaves when SLURM answers, and leaves no job behind."""
    example = EXAMPLES / "slurm_sweep.py"
    run = processes.python(example, cwd=tmp_path, env=on_cluster.environment())
    code, out = processes.finish(run, 180)
    assert code == 0, out
    assert "integral ~ 0.5000 from 60 points" in out, out
    assert re.search(r"^slave jobs held: [123] \(slurm\)$", out, re.M), out
    wait_for(lambda: not live(on_cluster, list(on_cluster.jobs())), 30, "no job left after the example")


def test_task_manager_provision_serves_a_running_master_and_cancels_its_jobs_on_sigterm(
        master, processes, on_cluster):
    boss = master("fromcli")
    command = processes.task_manager("provision", "fromcli", "--slurm", "-n", "2", "--min-jobs", "1",
                                     "--max-jobs", "2", "--idle-timeout", "3", env=on_cluster.environment())
    ids = [boss.requestTask("step", i, 0.05) for i in range(100)]
    got = collect(boss, ids)
    assert sorted(value for value, _ in got.values()) == list(range(100))
    jobs = list(on_cluster.jobs())
    assert jobs and live(on_cluster, jobs), "the job kept for --min-jobs 1 should still run"
    command.terminate()
    code, out = processes.finish(command, 60)
    assert code == 143, out
    assert "none left" in out, out
    wait_for(lambda: not live(on_cluster, jobs), 30, "the command's jobs to be cancelled")
    assert not boss.task_manager.terminated
