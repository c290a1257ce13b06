"""A parameter sweep whose master provisions its own slaves: SLURM jobs when SLURM answers here,
node agents on this machine otherwise.

    python slurm_sweep.py            # on a login node: up to 3 jobs of 2 slaves each, none left behind

The master holds between ``min_jobs`` and ``max_jobs`` jobs from the work
that waits; jobs idle for ``idle_timeout`` seconds leave; every job still
pending or running is cancelled when the master ends (normally, on an
exception, Ctrl-C or SIGTERM). See docs/guide/clusters.md.
"""

import math
import time

from scientific_ms import LocalSlaves, MasterProcess, SlaveProcess, SlurmSlaves, runJob
from scientific_ms.provision.slurm import slurm_reachable

POINTS = 60


class Sweep(MasterProcess):
    def run(self):
        for i in range(POINTS):
            self.requestTask("point", i / POINTS)
        total = 0.0
        for _ in range(POINTS):
            task_id, tag, value = self.retrieveResult("point")
            total += value
        print(f"integral ~ {total / POINTS:.4f} from {POINTS} points")
        print(f"slave jobs held: {len(self.slave_jobs)} ({self.slave_jobs[0]['provider']})")


class Point(SlaveProcess):
    def do_point(self, x):
        time.sleep(0.05)   # stands for a real computation
        return math.sin(math.pi * x) ** 2


if slurm_reachable():
    slaves = SlurmSlaves(slaves_per_job=2, min_jobs=0, max_jobs=3, walltime="00:30:00",
                         setup=[], idle_timeout=30)   # setup: e.g. ["module load python/3.11"]
else:
    slaves = LocalSlaves(slaves_per_job=2, min_jobs=0, max_jobs=2, idle_timeout=30)
runJob("slurm_sweep", Sweep, Point, launch_slaves=slaves)
