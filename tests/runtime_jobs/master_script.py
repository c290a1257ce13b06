"""A master script: python master_script.py LABEL [SLAVE_SCRIPT] (stored for ``task_manager slave LABEL``)."""

import sys

import control

from scientific_ms import initializeMasterProcess

master = initializeMasterProcess(sys.argv[1], slave_script=sys.argv[2] if len(sys.argv) > 2 else None,
                                 use_name_server=False)
control.serve_master(master)
master.shutdown()
