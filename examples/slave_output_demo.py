"""What slaves print and log, at the master: docs/guide/output.md."""

import logging

from scientific_ms import MasterProcess, SlaveProcess, runJob

log = logging.getLogger("squares")


class Master(MasterProcess):
    def run(self):
        for x in range(2):
            self.requestTask("square", x)
        for _ in range(2):
            self.retrieveResult("square")


class Squares(SlaveProcess):
    def do_square(self, x):
        print("squaring", x)
        if x > 0:
            log.warning("x = %s is positive", x)
        return x * x


runJob("squares", Master, Squares, launch_slaves=1)
