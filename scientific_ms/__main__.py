"""``python -m scientific_ms`` is the task_manager command; ``python -m scientific_ms script.py``
runs a script whose Executor is served by the other ranks under mpiexec."""

import sys

from .executor.script import is_script, run

if is_script(sys.argv[1:]):
    sys.exit(run(sys.argv[1:]))

from .cli.commands import main

sys.exit(main())
