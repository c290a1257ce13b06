"""Steering the scheduler: priorities, a concurrency limit per tag, retries.

    python steering_demo.py

Urgent tasks jump the queue; at most two ``load`` tasks run at once (say,
a database that takes two connections); a flaky handler runs again, on
another slave when there is one, and a task that keeps failing is
reported with its last exception, naming its attempts.
"""

import os
import tempfile
import time

from scientific_ms import MasterProcess, SlaveProcess, TaskRaisedException, runJob


class Master(MasterProcess):

    def run(self):
        self.limit_concurrency("load", 2)               # at most 2 "load" tasks at once
        for n in range(6):
            self.requestTask("load", n)
        self.request_task("load", 100, priority=10)     # urgent: before the other waiting loads
        with tempfile.TemporaryDirectory() as once, tempfile.TemporaryDirectory() as never:
            self.request_task("flaky", once, 1, retries=2, retry_on=(OSError,))   # fails once
            self.request_task("flaky", never, 99, retries=1)                      # always fails
            for _ in range(9):
                try:
                    task_id, tag, result = self.retrieveResult()
                    print(f"{tag}: {result}")
                except TaskRaisedException as e:
                    print(f"{e.tag} gave up: {e.exception}")
                    print(e.traceback.splitlines()[0])  # scientific_ms: ... failed on attempt 2 of 2 ...


class Worker(SlaveProcess):

    def do_load(self, n):
        time.sleep(0.1)                                 # holds one of the 2 connections
        return n

    def do_flaky(self, marks, failures):
        attempt = len(os.listdir(marks)) + 1            # attempts so far, across slaves
        open(os.path.join(marks, str(attempt)), "w").close()
        if attempt <= failures:
            raise OSError(f"attempt {attempt}: the disk was busy")
        return f"done on attempt {attempt}"


runJob("steering_demo", Master, Worker, launch_slaves=3)
