"""A SlaveProcess subclass started by hand: python slave_class.py LABEL."""

import sys

import work

from scientific_ms import SlaveProcess


class Worker(SlaveProcess):
    def do_run(self, kind, key, arg, log_dir):
        return work.run(kind, key, arg, log_dir)


Worker(sys.argv[1], watchdog_period=0.5, wait=True).start()
