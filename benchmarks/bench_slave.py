"""The slave code of the throughput benchmark (stored by the master, run by its spawned slaves)."""

from workloads import echo as do_echo, inc as do_inc, nap as do_nap  # noqa: F401

from scientific_ms import startSlaveProcess

startSlaveProcess()
