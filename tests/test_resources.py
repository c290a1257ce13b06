"""Resources on a real master with real slaves: GPU ids per task, cores held, an
unmet request reported, a host's declaration checked."""

import textwrap
from pathlib import Path

import pytest

from conftest import wait_for
from scientific_ms import Executor, MasterProcess
from test_steering import most_at_once

HERE = Path(__file__).resolve().parent
SLAVE_SCRIPT = HERE / "resources_slave.py"
TIMEOUT = 90


@pytest.fixture
def job():
    """A master whose stored slave code is resources_slave.py."""
    masters = []

    def start(label):
        master = MasterProcess(label, use_name_server=False, port=0)
        masters.append(master)
        master.store_slave_code(SLAVE_SCRIPT.read_text(), str(SLAVE_SCRIPT), [str(SLAVE_SCRIPT), label])
        return master

    yield start
    for master in masters:
        master.shutdown()


def test_two_tasks_needing_a_gpu_each_see_different_devices(job, processes, tmp_path):
    master = job("gpus")
    processes.task_manager("slave", "gpus", "-n", 3, "--resources", "gpu=2", name="agent")
    master.wait_for_slaves(3, timeout=TIMEOUT)
    markers = tmp_path / "markers"
    markers.mkdir()
    for name in ("a", "b"):
        master.request_task("together", str(markers), 2, name, resources={"gpu": 1})
    seen = [master.retrieveResult(timeout=TIMEOUT)[2] for _ in range(2)]
    assert sorted(devices for devices, _ in seen) == [("0", "0"), ("1", "1")]
    assert seen[0][1] != seen[1][1]   # two workers
    # the handler's environment is put back: a plain task on any worker sees no GPU
    for _ in range(6):
        master.requestTask("devices")
    assert {master.retrieveResult(timeout=TIMEOUT)[2][0] for _ in range(6)} == {(None, None)}


def test_a_third_gpu_task_waits_while_two_gpus_are_held(job, processes, tmp_path):
    master = job("gpus3")
    processes.task_manager("slave", "gpus3", "-n", 3, "--resources", "gpu=0,1", name="agent")
    master.wait_for_slaves(3, timeout=TIMEOUT)
    master.set_resources("span", {"gpu": 1})
    for _ in range(6):
        master.requestTask("span", 0.2)
    spans = [master.retrieveResult(timeout=TIMEOUT)[2] for _ in range(6)]
    assert most_at_once([(start, end) for start, end, _ in spans]) <= 2


def test_a_task_needing_every_core_of_its_host_runs_alone(job, processes):
    master = job("cores")
    processes.task_manager("slave", "cores", "-n", 2, name="agent")   # cores: its two workers
    master.wait_for_slaves(2, timeout=TIMEOUT)
    plain = [master.requestTask("span", 0.2) for _ in range(3)]
    wide = master.request_task("span", 0.3, resources={"cores": 2})
    plain += [master.requestTask("span", 0.2) for _ in range(3)]
    results = {}
    for _ in range(7):
        task_id, _, value = master.retrieveResult(timeout=TIMEOUT)
        results[task_id] = value
    start, end, _ = results[wide]
    for task_id in plain:
        other_start, other_end, _ = results[task_id]
        assert other_end <= start or other_start >= end, (results[wide], results[task_id])


def test_the_executor_runs_calls_with_resources(processes):
    with Executor(slaves=0) as ex:
        processes.task_manager("slave", ex.master.label, "--resources", "gpu=1", "-m",
                               f"127.0.0.1:{ex.master.port}", name="slave")
        ex.master.wait_for_slaves(1, timeout=TIMEOUT)
        future = ex.options(resources={"gpu": 1}).submit(gpu_ids)
        assert future.result(timeout=TIMEOUT) == "0"


def gpu_ids():
    import os
    return os.environ.get("SCIENTIFIC_MS_GPUS")


BIG_MASTER = textwrap.dedent("""
    from scientific_ms import initializeMasterProcess
    tasks = initializeMasterProcess("bigmem", slave_script="resources_slave.py")
    tasks.request_task("devices", resources={"memory": "1000T"})
    tasks.launchSlaveJobs(1)
    print("WAITING", flush=True)
    tasks.retrieveResult()
""")


def test_a_request_no_host_could_meet_is_reported_by_the_master_and_show(processes, tmp_path):
    (tmp_path / "big_master.py").write_text(BIG_MASTER)
    (tmp_path / "resources_slave.py").write_text(SLAVE_SCRIPT.read_text())
    master = processes.python(tmp_path / "big_master.py", cwd=tmp_path, name="master")
    out = wait_for(lambda: "largest offer" in processes.output(master) and processes.output(master),
                   60, "the master's warning")
    assert "tag 'devices' needs memory=1000T; the largest offer is gpu=0,memory=" in out, out
    assert "--resources" in out
    show = processes.task_manager("show", "bigmem", name="show")
    code, shown = processes.finish(show, 30)
    assert code == 0, shown
    assert "note: tasks of tag 'devices' need memory=1000T, more than any connected host offers" in shown, shown


def test_a_bad_declaration_says_how_to_write_it(processes):
    slave = processes.task_manager("slave", "nobody", "--resources", "gpus=2", name="slave")
    code, out = processes.finish(slave, 30)
    assert code != 0 and "unknown resource 'gpus'" in out and "gpu=COUNT" in out, out
