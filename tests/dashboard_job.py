"""A journaled job for the dashboard's tests, killed by the test once it is half done.

    python dashboard_job.py LABEL JOURNAL

Requests 4 ``square`` tasks, 2 ``fail`` tasks (they raise ValueError) and 2
``slow`` ones, run by 3 slaves (one at least is free for the quick ones); once
the 6 quick answers are retrieved it prints READY and waits, the slow tasks
never answered, for the test to kill it.
"""

import sys
import threading
import time

from scientific_ms import MasterProcess, SlaveProcess, TaskRaisedException, runJob

LABEL, JOURNAL = sys.argv[1], sys.argv[2]


class Master(MasterProcess):
    def run(self):
        for i in range(4):
            self.requestTask("square", i)
        for i in range(2):
            self.requestTask("fail", f"bad input {i}")
        for _ in range(2):
            self.requestTask("slow", 600.0)
        for _ in range(6):
            try:
                self.retrieveResult()
            except TaskRaisedException:
                pass
        print("READY", flush=True)
        threading.Event().wait(600)   # until killed


class Slave(SlaveProcess):
    def do_square(self, i):
        return i * i

    def do_fail(self, text):
        raise ValueError(f"cannot use {text}")

    def do_slow(self, seconds):
        time.sleep(seconds)


runJob(LABEL, Master, Slave, launch_slaves=3, journal=JOURNAL)
