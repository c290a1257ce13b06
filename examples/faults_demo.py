"""Time limits and poison tasks: what a job gets back when a handler misbehaves.

    python faults_demo.py

A handler that runs past its time limit is interrupted on its slave and
reported as a TaskTimeLimitError; a task that kills every slave running it
is reported as a SlaveLostError after ``max_slave_losses`` deaths. Either
way every task yields exactly one answer, and the other tasks complete.
"""

import os
import time

from scientific_ms import MasterProcess, SlaveLostError, SlaveProcess, TaskRaisedException, TaskTimeLimitError, runJob


class Master(MasterProcess):

    def __init__(self, label, **options):
        # A task is failed after it lost 2 slaves (default 3).
        super().__init__(label, max_slave_losses=2, **options)

    def run(self):
        for x in range(4):
            self.requestTask("work", x)
        self.request_task("nap", 60.0, time_limit=0.5)   # interrupted after 0.5 s
        self.requestTask("crash", 1)                     # kills its slave, every time
        for _ in range(6):
            try:
                task_id, tag, result = self.retrieveResult()
                print(f"{tag}: {result}")
            except TaskRaisedException as e:
                if isinstance(e.exception, TaskTimeLimitError):
                    print(f"{e.tag}: stopped by its time limit")
                elif isinstance(e.exception, SlaveLostError):
                    print(f"{e.tag}: {e.exception}")
                else:
                    raise


class Worker(SlaveProcess):

    def do_work(self, x):
        return x * x

    def do_nap(self, seconds):
        time.sleep(seconds)

    def do_crash(self, code):
        os._exit(code)             # a segfault, the OOM killer: the slave is gone


# The master replaces each spawned slave that dies (up to 5 times each).
runJob("faults_demo", Master, Worker, launch_slaves=2)
