"""A job to watch with task_manager: 63 tasks, two spawned slaves, one task that fails.

    python sample_master.py &
    task_manager show -v sample          # or: task_manager watch sample
"""

from scientific_ms import TaskRaisedException, initializeMasterProcess

master = initializeMasterProcess("sample", slave_script="sample_slave.py", use_name_server=False)
master.launchSlaveJobs(2)
for n in range(60):
    master.requestTask("integrate", 200_000 + n)
for x in (4.0, -1.0, 9.0):
    master.requestTask("sqrt", x)
for _ in range(63):
    try:
        master.retrieveResult()
    except TaskRaisedException as error:
        print("failed:", error.task_id, repr(error.exception))
