"""The pure task manager: tasks and their states, scheduling, the registry of
processes, results, shared data and the memory budget, behind one lock.

Nothing here does network or file I/O; most of it is tested with a fake clock.
"""
