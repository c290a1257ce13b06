"""runJob: python runjob.py LABEL LAUNCH_SLAVES (also each rank of ``mpiexec -n 3 python runjob.py LABEL 0``)."""

import sys

import control
import work

from scientific_ms import MasterProcess, SlaveProcess, runJob


class Master(MasterProcess):
    def run(self):
        control.serve_master(self)


class Worker(SlaveProcess):
    def do_run(self, kind, key, arg, log_dir):
        return work.run(kind, key, arg, log_dir)


runJob(sys.argv[1], Master, Worker, watchdog_period=0.5, launch_slaves=int(sys.argv[2]))
