"""Master and slaves in one script.

    python master_slave_demo.py

runs the master and two slaves on this machine. More slaves can join from
other shells or machines with ``task_manager slave demo`` while it runs.
"""

import math

from scientific_ms import MasterProcess, SlaveProcess, TaskRaisedException, runJob


class Master(MasterProcess):

    def run(self):
        for i in range(5):
            self.requestTask("sqrt", float(i - 1))  # sqrt(-1.0) raises ValueError
        for _ in range(5):
            try:
                task_id, tag, result = self.retrieveResult("sqrt")
                print(task_id, result)
            except TaskRaisedException as e:
                print(f"Task {e.task_id} raised {e.exception!r}")
                print(e.traceback)


class SquareRoot(SlaveProcess):

    def do_sqrt(self, x):
        return x, math.sqrt(x)


runJob("demo", Master, SquareRoot, launch_slaves=2)
