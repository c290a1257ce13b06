"""The slave runtime: the handler loop and its task feed, time limits, leaving
and rejoining, and the keeper that beats every slave's heart and replaces its
workers (one per slave, or one for the N workers of ``task_manager slave -n N``)."""
