"""Provisioned slave jobs without a batch system: the scaling policy, the provisioning loop
with a fake provider, SlurmSlaves' batch script, and LocalSlaves with real node agents."""

import json
import os
import re
import subprocess
import sys
import textwrap

import psutil
import pytest

from conftest import descendants_gone, wait_for
from scientific_ms import ConfigurationError, LocalSlaves, MasterProcess, ProvisionError, SlurmSlaves
from scientific_ms.provision.provider import DONE, PENDING, RUNNING, Provider, SlaveJobs
from scientific_ms.provision.provisioner import Provisioner
from scientific_ms.provision.scaling import Decision, JobCounts, decide, slaves_needed
from scientific_ms.provision.slurm import SlurmProvider, submission_environment, walltime_seconds

pytestmark = pytest.mark.timeout(120)


# ------------------------------------------------------------------ the scaling policy (pure)

def test_unmeasured_tags_count_one_slave_per_waiting_task():
    assert slaves_needed({"a": 5}, {"a": None}, running_tasks=0) == 5
    decision = decide({"a": 300}, {"a": None}, 0, JobCounts(), slaves_per_job=2, min_jobs=0, max_jobs=3)
    assert decision == Decision(wanted=3, submit=3, cancel_pending=0)


def test_measured_short_tasks_need_fewer_slaves():
    # 300 tasks of 0.1 s: 30 slave-seconds, one slave's worth at the default target
    assert slaves_needed({"a": 300}, {"a": 0.1}, 0) == 1
    assert slaves_needed({"a": 300}, {"a": 1.0}, 0, target_seconds=30) == 10
    assert slaves_needed({"a": 1}, {"a": 0.001}, 0) == 1     # any waiting work wants a slave
    assert slaves_needed({"a": 4}, {"a": 100.0}, 2) == 6     # never more than one per task, plus the running


def test_pending_jobs_count_so_a_slow_queue_never_makes_it_submit_more():
    decision = decide({"a": 300}, {"a": None}, 0, JobCounts(pending=3), 1, 0, 3)
    assert decision.submit == 0
    decision = decide({"a": 300}, {"a": None}, 0, JobCounts(pending=1, running=1), 1, 0, 3)
    assert decision.submit == 1


def test_min_jobs_are_held_without_work_and_max_jobs_caps():
    assert decide({}, {}, 0, JobCounts(), 1, 2, 5).submit == 2
    assert decide({"a": 10**6}, {"a": None}, 0, JobCounts(running=5), 1, 2, 5).submit == 0


def test_running_jobs_are_never_cancelled_pending_ones_are_once_no_work_waits():
    assert decide({}, {}, 0, JobCounts(running=3), 1, 0, 3).cancel_pending == 0
    assert decide({}, {}, 0, JobCounts(pending=2, running=1), 1, 0, 3).cancel_pending == 2
    assert decide({}, {}, 0, JobCounts(pending=2, running=1), 1, 1, 3).cancel_pending == 2
    assert decide({}, {}, 0, JobCounts(pending=2), 1, 1, 3).cancel_pending == 1
    # work waits: pending jobs stay even when the estimate says fewer would do (no churn)
    assert decide({"a": 1}, {"a": 0.01}, 0, JobCounts(pending=3), 1, 0, 3).cancel_pending == 0


def test_jobs_near_their_walltime_are_replaced_while_work_remains():
    assert decide({"a": 100}, {"a": None}, 0, JobCounts(running=0, ending=2), 1, 0, 2).submit == 2
    assert decide({}, {}, 0, JobCounts(running=0, ending=2), 1, 0, 2).submit == 0
    # replacements that end as soon as they run stop at twice max_jobs
    assert decide({"a": 100}, {"a": None}, 0, JobCounts(running=0, ending=3), 1, 0, 2).submit == 1
    assert decide({"a": 100}, {"a": None}, 0, JobCounts(running=0, ending=4), 1, 0, 2).submit == 0


# ------------------------------------------------------------------ the loop, with a fake provider

class FakeProvider(Provider):
    name = "fake"

    def __init__(self):
        self.jobs = {}
        self.cancelled = []
        self.refuse = None

    def submit(self, request):
        if self.refuse:
            raise ProvisionError(self.refuse)
        job_id = str(len(self.jobs) + 1)
        self.jobs[job_id] = PENDING
        self.requests = getattr(self, "requests", []) + [request]
        return job_id

    def states(self, job_ids):
        return {job_id: self.jobs.get(job_id, DONE) for job_id in job_ids}

    def cancel(self, job_ids):
        for job_id in job_ids:
            self.cancelled.append(job_id)
            self.jobs[job_id] = DONE


class FakeSlaves(SlaveJobs):
    def __init__(self, *args, warning=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fake = FakeProvider()
        self.warning = warning

    def provider(self):
        return self.fake

    def walltime_warning(self):
        return self.warning


class FakeManager:
    def __init__(self):
        self.waiting = {}
        self.running = {}
        self.terminated = False
        self.data = {}

    def counts(self):
        return {"waiting": dict(self.waiting), "running": dict(self.running)}

    def waiting_estimates(self):
        return dict.fromkeys(self.waiting)

    def store_data(self, key, data):
        self.data[key] = data


def provisioner_for(spec, manager):
    def request(keep, number):
        return spec.request("lab", "127.0.0.1", 1, {"SCIENTIFIC_MS_SECRET": "s"}, "/", keep, number)
    return Provisioner(spec, manager, request, poll_seconds=0.0)


def test_the_loop_submits_for_waiting_work_and_withdraws_pending_jobs_when_it_is_gone():
    spec, manager = FakeSlaves(1, 0, 3), FakeManager()
    provisioner = provisioner_for(spec, manager)
    provisioner.step()
    assert spec.fake.jobs == {}
    manager.waiting = {"a": 10}
    provisioner.step()
    provisioner.step()
    assert len(spec.fake.jobs) == 3                      # pending ones counted: no more than max_jobs
    spec.fake.jobs["1"] = RUNNING
    manager.waiting = {}
    provisioner.step()
    assert sorted(spec.fake.cancelled) == ["2", "3"]     # pending withdrawn, the running one left alone
    table = json.loads(manager.data["scientific_ms.provision.jobs"])
    assert [(job["id"], job["state"]) for job in table["jobs"]] == [("1", "running"), ("2", "leaving"),
                                                                    ("3", "leaving")]
    provisioner.stop()
    assert "1" in spec.fake.cancelled


def test_min_jobs_are_submitted_without_an_idle_timeout():
    spec, manager = FakeSlaves(2, 1, 2, idle_timeout=5), FakeManager()
    provisioner = provisioner_for(spec, manager)
    provisioner.step()
    manager.waiting = {"a": 10}
    provisioner.step()
    kept, extra = spec.fake.requests
    assert "--idle-timeout" not in kept.command and kept.command[-2:] == ["-n", "2"]
    assert extra.command[-2:] == ["--idle-timeout", "5.0"]


def test_a_job_near_its_walltime_warning_is_replaced_ahead_of_time():
    spec, manager = FakeSlaves(1, 0, 1, warning=0.0, replace_ahead=0.0), FakeManager()
    provisioner = provisioner_for(spec, manager)
    manager.waiting = {"a": 10}
    provisioner.step()
    spec.fake.jobs["1"] = RUNNING
    provisioner.step()          # running, and already past its warning (0 s): replaced
    assert list(spec.fake.jobs) == ["1", "2"]
    assert spec.fake.cancelled == []                     # the old one drains on its own
    provisioner.stop()


def test_a_refused_first_submission_raises_with_the_batch_systems_message():
    spec, manager = FakeSlaves(1, 1, 1), FakeManager()
    spec.fake.refuse = "sbatch: error: invalid partition specified: nope"
    with pytest.raises(ProvisionError, match="invalid partition specified: nope"):
        provisioner_for(spec, manager).start()


def test_jobs_submitted_before_a_refused_one_are_cancelled():
    spec, manager = FakeSlaves(1, 2, 2), FakeManager()
    refusing = spec.fake.submit

    def submit_once(request):
        if spec.fake.jobs:
            raise ProvisionError("sbatch: error: QOSMaxSubmitJobPerUserLimit")
        return refusing(request)
    spec.fake.submit = submit_once
    with pytest.raises(ProvisionError, match="QOSMaxSubmitJobPerUserLimit"):
        provisioner_for(spec, manager).start()
    assert spec.fake.cancelled == ["1"]


def test_bad_options_are_refused_at_once():
    with pytest.raises(ConfigurationError, match="min_jobs"):
        LocalSlaves(min_jobs=3, max_jobs=2)
    with pytest.raises(ConfigurationError, match="slaves_per_job"):
        SlurmSlaves(slaves_per_job=0)
    with pytest.raises(ConfigurationError, match="walltime"):
        SlurmSlaves(walltime="an hour")
    with pytest.raises(ConfigurationError, match="setup"):
        SlurmSlaves(setup="module load python")


# ------------------------------------------------------------------ SlurmSlaves without SLURM

def test_walltime_formats():
    assert walltime_seconds("30") == 1800
    assert walltime_seconds("10:30") == 630
    assert walltime_seconds("01:00:00") == 3600
    assert walltime_seconds("1-02") == 93600
    assert walltime_seconds("1-00:00:10") == 86410
    assert walltime_seconds(None) is None


def test_the_batch_script_runs_the_setup_lines_then_the_node_agent_with_the_secret_kept_out():
    spec = SlurmSlaves(4, 0, 2, walltime="01:00:00", partition="short", account="proj", qos="q",
                       cpus_per_slave=2, memory="8G", sbatch_options=["--constraint=cpu"],
                       setup=["module load python", "source venv/bin/activate"], idle_timeout=30)
    request = spec.request("sweep", "10.0.0.1", 7766, {"SCIENTIFIC_MS_SECRET": "hush"}, "/data/run", False)
    script = SlurmProvider(spec).script(request)
    lines = script.splitlines()
    assert lines[0] == "#!/bin/sh"
    for option in ("--job-name=sms-sweep", "--cpus-per-task=8", "--time=01:00:00", "--partition=short",
                   "--account=proj", "--qos=q", "--mem=8G", "--signal=B:TERM@120", "--constraint=cpu"):
        assert f"#SBATCH {option}" in lines, script
    body = [line for line in lines if not line.startswith("#")]
    assert body[0] == "cd '/data/run'"
    assert body[1:3] == ["module load python", "source venv/bin/activate"]
    assert body[3].startswith("exec ") and body[3].endswith(
        "-m scientific_ms slave sweep -m 10.0.0.1:7766 -n 4 --idle-timeout 30.0"), body
    assert "hush" not in script


def test_a_master_inside_a_job_submits_without_its_jobs_variables():
    environment = {"SLURM_CONF": "/etc/slurm.conf", "SLURM_JOB_ID": "7", "SLURM_MEM_PER_CPU": "100",
                   "SBATCH_PARTITION": "x", "SCIENTIFIC_MS_SECRET": "s", "PATH": "/bin"}
    assert submission_environment(environment) == {"SLURM_CONF": "/etc/slurm.conf", "SBATCH_PARTITION": "x",
                                                   "SCIENTIFIC_MS_SECRET": "s", "PATH": "/bin"}


def test_jobs_submitted_together_end_staggered():
    spec = SlurmSlaves(max_jobs=4, walltime="02:00:00", warning=300)
    requests = [spec.request("s", "h", 1, {}, "/", False, number) for number in range(5)]
    assert [request.time_limit for request in requests] == [7200, 6840, 6480, 6120, 7200]   # 6 min steps
    assert [request.warning_after for request in requests] == [6900, 6540, 6180, 5820, 6900]
    scripts = [SlurmProvider(spec).script(request) for request in requests]
    assert "#SBATCH --time=02:00:00" in scripts[0] and "#SBATCH --time=114" in scripts[1]
    assert all("#SBATCH --signal=B:TERM@300" in script for script in scripts)
    # short walltimes are not staggered (the steps are whole minutes)
    assert {SlurmSlaves(max_jobs=4, walltime="10").time_limit(n) for n in range(4)} == {600}


def test_no_sbatch_on_path_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    spec = SlurmSlaves()
    request = spec.request("x", "h", 1, dict(os.environ), "/", False)
    with pytest.raises(ProvisionError, match="sbatch is not on PATH"):
        SlurmProvider(spec).check(request)


# ------------------------------------------------------------------ LocalSlaves: real node agents

SLAVE_CODE = textwrap.dedent("""\
    import time
    from scientific_ms import startSlaveProcess

    def do_step(value, seconds):
        time.sleep(seconds)
        return value

    startSlaveProcess()
    """)


@pytest.fixture
def master(tmp_path):
    script = tmp_path / "slave_code.py"
    script.write_text(SLAVE_CODE)
    created = MasterProcess("provision", use_name_server=False, port=0)
    created.store_slave_code(SLAVE_CODE, str(script), [str(script)])
    yield created
    created.shutdown()


def test_local_slaves_scale_out_with_the_work_and_leave_when_idle(master):
    ids = [master.requestTask("step", i, 0.01) for i in range(200)]
    master.launchSlaveJobs(LocalSlaves(slaves_per_job=2, min_jobs=0, max_jobs=3, idle_timeout=1))
    got = {}
    for _ in ids:
        task_id, _, value = master.retrieveResult("step", timeout=60)
        assert task_id not in got
        got[task_id] = value
    assert sorted(got.values()) == list(range(200))
    assert len(master.slave_jobs) == 3
    report = json.loads(subprocess.run([sys.executable, "-m", "scientific_ms", "show", "provision", "--json"],
                                       capture_output=True, text=True, timeout=30).stdout)
    assert {job["id"] for job in report["slave_jobs"]} <= {job["id"] for job in master.slave_jobs}
    assert all(job["provider"] == "local" for job in report["slave_jobs"])
    # the queue is dry: the jobs leave on their own while the master lives on
    wait_for(lambda: all(job["state"] == "done" for job in master.slave_jobs), 30, "the idle jobs to end")
    assert master.task_manager.slave_count == 0
    assert master.task_manager.counters["rescheduled"] == 0


def test_min_jobs_stay_and_every_job_ends_with_the_master(master):
    master.launchSlaveJobs(LocalSlaves(slaves_per_job=1, min_jobs=1, max_jobs=2, idle_timeout=1))
    master.wait_for_slaves(1, timeout=30)
    ids = [master.requestTask("step", i, 0.2) for i in range(10)]
    for _ in ids:
        master.retrieveResult("step", timeout=60)
    wait_for(lambda: sum(job["state"] != "done" for job in master.slave_jobs) == 1, 30,
             "the extra job to leave when idle")
    assert master.task_manager.slave_count == 1        # the job kept for min_jobs has no idle timeout
    pids = [child.pid for child in psutil.Process().children(recursive=True)]
    assert pids
    master.shutdown()
    assert not descendants_gone(pids, 15)


@pytest.mark.parametrize("ending", ["kill", "exception", "sigterm"])
def test_no_local_job_outlives_its_master(processes, tmp_path, ending):
    """kill -9: the agents lose their master and end; an exception in run() or SIGTERM: the master
    cancels its jobs in its shutdown."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent("""\
        import sys, time
        import psutil
        from scientific_ms import LocalSlaves, MasterProcess, SlaveProcess, runJob

        class Master(MasterProcess):
            def run(self):
                for i in range(1000):
                    self.requestTask("wait", i)
                self.wait_for_slaves(2)
                # Read here: on an exception the master cancels its jobs at once.
                print("AGENTS", *[child.pid for child in psutil.Process().children()], flush=True)
                if sys.argv[2] == "exception":
                    raise RuntimeError("the master's run() failed")
                time.sleep(600)

        class Slave(SlaveProcess):
            def do_wait(self, i):
                time.sleep(0.5)

        runJob(sys.argv[1], Master, Slave, launch_slaves=LocalSlaves(1, 0, 2))
        """))
    master = processes.python(script, "ending", ending, cwd=tmp_path)
    wait_for(lambda: "AGENTS" in processes.output(master), 60, "the master's jobs to serve")
    [line] = [line for line in processes.output(master).splitlines() if line.startswith("AGENTS")]
    agents = [int(pid) for pid in line.split()[1:]]
    assert len(agents) == 2, line
    if ending == "kill":
        master.kill()
    elif ending == "sigterm":
        master.terminate()
    code = master.wait(60)
    assert code == {"kill": -9, "exception": 1, "sigterm": 143}[ending], processes.output(master)
    assert not descendants_gone(agents, 30), "node agents outlived their killed master"


def test_an_executor_holds_local_slave_jobs():
    from scientific_ms import Executor
    with Executor(slaves=LocalSlaves(slaves_per_job=2, max_jobs=2, idle_timeout=5)) as executor:
        assert list(executor.map(abs, range(-20, 0))) == list(range(20, 0, -1))
        jobs = executor.master.slave_jobs
        assert 1 <= len(jobs) <= 2
        pids = [child.pid for child in psutil.Process().children(recursive=True)]
    assert not descendants_gone(pids, 15)


def test_task_manager_provision_holds_jobs_for_a_running_master_until_it_ends(master, processes):
    command = processes.task_manager("provision", "provision", "--local", "-n", "2", "--max-jobs", "2",
                                     "--idle-timeout", "2")
    ids = [master.requestTask("step", i, 0.01) for i in range(100)]
    got = {}
    for _ in ids:
        task_id, _, value = master.retrieveResult("step", timeout=60)
        assert task_id not in got
        got[task_id] = value
    assert sorted(got.values()) == list(range(100))
    agents = [child.pid for child in psutil.Process(command.pid).children()]
    assert 1 <= len(agents) <= 2
    master.shutdown()
    code, out = processes.finish(command, 30)
    assert code == 0, out
    assert re.search(r"^[12] job\(s\) submitted; none left$", out, re.M), out
    assert not descendants_gone(agents, 15)


def test_task_manager_provision_refuses_bad_options(processes):
    command = processes.task_manager("provision", "nobody", "--local", "--min-jobs", "3", "--max-jobs", "2")
    code, out = processes.finish(command, 30)
    assert code == 1 and "min_jobs (3) is above max_jobs (2)" in out, out
