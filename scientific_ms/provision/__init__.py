"""Slaves the master provisions for itself: jobs of node agents, held between a
minimum and a maximum from the waiting work (``SlurmSlaves``, ``LocalSlaves``)."""
