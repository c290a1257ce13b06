"""A sweep that survives its master: with a journal, the same command run again resumes.

    python journal_demo.py       # run it; kill it (kill -9, Ctrl-C) halfway; run it again

Each run prints how many tasks its slaves computed: the first run computes
all 20, a run after a kill only those not answered before, and a run after
a complete one none (a finished job's journal is kept, and answers
everything). Delete sweep.db (and its -wal, -shm and -lock companions) to
start afresh.
"""

import os

from scientific_ms import MasterProcess, SlaveProcess, read_journal, runJob

COMPUTED = "computed.txt"     # one line per task the slaves computed, over all runs


class Master(MasterProcess):

    def run(self):
        before = computed()
        for n in range(20):
            self.requestTask("square", n)
        total = sum(self.retrieveResult("square")[2] for _ in range(20))
        print(f"sum of squares {total}; computed in this run: {computed() - before} of 20")


class Worker(SlaveProcess):

    def do_square(self, n):
        with open(COMPUTED, "a") as log:       # slaves run in the master's working directory
            log.write(f"{n}\n")
        return n * n


def computed():
    if not os.path.exists(COMPUTED):
        return 0
    with open(COMPUTED) as log:
        return len(log.readlines())


runJob("sweep", Master, Worker, launch_slaves=2, journal="sweep.db")

# Here the master has finished; the journal can be read without it.
for record in read_journal("sweep.db"):
    if record.ok:
        print(record.task_id, record.parameters, record.result)
