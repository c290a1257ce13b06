"""``python -m scientific_ms`` is the task_manager command; ``python -m scientific_ms script.py``
runs a script whose Executor is served by the other ranks under mpiexec."""

import sys

from .cli.commands import command_names, main
from .executor.script import is_script, run

if is_script(sys.argv[1:], command_names()):
    sys.exit(run(sys.argv[1:]))

sys.exit(main())
