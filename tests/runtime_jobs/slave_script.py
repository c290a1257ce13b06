"""A slave script: python slave_script.py (label from RUNTIME_LABEL), or stored code of ``task_manager slave``."""

import os

from work import run as do_run  # noqa: F401  (the handler, found by its name)

from scientific_ms import startSlaveProcess

startSlaveProcess(os.environ.get("RUNTIME_LABEL"), watchdog_period=0.5, wait=True)
