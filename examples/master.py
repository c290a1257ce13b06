"""The master of a two-script job: requests and results can be anywhere in its code.

    python master.py                 # in one shell (or: python master.py 2 to spawn 2 slaves)
    python slave.py                  # in other shells, or on machines sharing the home directory
    task_manager slave demo          # the same, running the slave code the master stored
"""

import sys

from scientific_ms import TaskRaisedException, initializeMasterProcess

tasks = initializeMasterProcess("demo", slave_script="slave.py")
if len(sys.argv) > 1:
    tasks.launchSlaveJobs(int(sys.argv[1]))

for i in range(5):
    tasks.requestTask("sqrt", float(i - 1))  # sqrt(-1.0) raises ValueError
for _ in range(5):
    try:
        task_id, tag, result = tasks.retrieveResult("sqrt")
        print(task_id, result)
    except TaskRaisedException as e:
        print(f"Task {e.task_id} raised {e.exception!r}")
