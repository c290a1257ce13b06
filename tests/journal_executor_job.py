"""An Executor's journaled job for the tests.

    python journal_executor_job.py JOURNAL TASKS SECONDS SIDE_FILE

As ``journal_job.py`` (the same output and side files), with the calls made
by ``Executor.map`` of a function defined here: it travels by value.
"""

import os
import sys
import time

from executions import record
from scientific_ms import Executor

JOURNAL, TASKS, SECONDS, SIDE = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]


def square(i, seconds, side):
    time.sleep(seconds)
    record(side, i)
    return i * i


if __name__ == "__main__":
    with open(SIDE + ".master", "w") as pid_file:
        pid_file.write(str(os.getpid()))
    with Executor(slaves=2, journal=JOURNAL, use_name_server=False) as ex:
        values = ex.map(square, range(TASKS), [SECONDS] * TASKS, [SIDE] * TASKS)
        lines = [f"RESULT call {i} {value}" for i, value in enumerate(values)]
        sys.stdout.write("\n".join(lines) + f"\nDONE {TASKS} REPLAYED {ex.master._journal.replayed}\n")
