"""Large read-only data stored once in the master and fetched once per slave.

    python global_state.py
"""

import random

from scientific_ms import GlobalStateValue, MasterProcess, SlaveProcess, runJob


class Master(MasterProcess):

    def run(self):
        table = [random.random() for _ in range(100_000)]      # the "large" data
        state = self.setGlobalState(table=table, scale=10.0)
        for start in range(0, 100_000, 10_000):
            # Each task names the data instead of carrying it.
            self.requestTask("partial_sum", GlobalStateValue(state, "table"),
                             GlobalStateValue(state, "scale"), start, start + 10_000)
        total = sum(self.retrieveResult("partial_sum")[2] for _ in range(10))
        print(f"total {total:.6f}, expected {10.0 * sum(table):.6f}")
        self.deleteGlobalState(state)


class Worker(SlaveProcess):

    def do_partial_sum(self, table, scale, start, stop):
        return scale * sum(table[start:stop])


runJob("global_state_demo", Master, Worker, launch_slaves=2)
