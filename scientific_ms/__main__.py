"""``python -m scientific_ms`` is the task_manager command."""

import sys

from .cli import main

sys.exit(main())
