"""Slaves the master provisions for itself: jobs of node agents, held between a
minimum and a maximum from the waiting work (``SlurmSlaves``, ``LocalSlaves``)."""

from typing import Any


def is_slave_jobs(value: Any) -> bool:
    """Is ``value`` a provider's SlaveJobs (``SlurmSlaves(...)``, ``LocalSlaves(...)``)? The
    providers are imported only then: a master that starts local slaves does without them."""
    if isinstance(value, int):
        return False
    from .provider import SlaveJobs
    return isinstance(value, SlaveJobs)
