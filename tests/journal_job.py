"""A journaled job for the tests.

    python journal_job.py LABEL JOURNAL TASKS SECONDS SIDE_FILE [LAUNCH_SLAVES]

The master writes its PID to SIDE_FILE.master, requests TASKS tasks
``square(i, SECONDS)``, retrieves every result and prints ``RESULT task_id
i value`` for each, then ``DONE n REPLAYED r``. Each execution of a task
appends ``i`` to SIDE_FILE (O_APPEND, one write), so the test counts
executions across master runs. Run again with the same arguments, it
resumes from the journal.
"""

import os
import sys
import time

from executions import record
from scientific_ms import MasterProcess, SlaveProcess, runJob

LABEL, JOURNAL, TASKS, SECONDS, SIDE = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
LAUNCH = int(sys.argv[6]) if len(sys.argv) > 6 else 0


def say(line):
    sys.stdout.write(line + "\n")   # one write per line: under mpiexec every rank's output is merged
    sys.stdout.flush()


class Master(MasterProcess):
    def run(self):
        with open(SIDE + ".master", "w") as pid_file:
            pid_file.write(str(os.getpid()))
        numbers = {self.requestTask("square", i, SECONDS): i for i in range(TASKS)}
        lines = []
        for _ in range(TASKS):
            task_id, tag, value = self.retrieveResult()
            lines.append(f"RESULT {task_id} {numbers[task_id]} {value}")
        say("\n".join(lines))
        say(f"DONE {TASKS} REPLAYED {self._journal.replayed}")


class Slave(SlaveProcess):
    def do_square(self, i, seconds):
        time.sleep(seconds)
        record(SIDE, i)
        return i * i


runJob(LABEL, Master, Slave, launch_slaves=LAUNCH, journal=JOURNAL)
