"""``concurrent.futures`` on the farm: the Executor, its futures, function
calls as tasks, and ``python -m scientific_ms script.py`` under MPI."""
