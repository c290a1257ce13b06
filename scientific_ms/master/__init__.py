"""The master's side: ``MasterProcess``, publishing its address and launching
slaves, supervising spawned slaves, and the journal that lets a master die."""
