"""Where slaves reach a master: its server and its published address, opened and ended together.

The server (``wire/server.py``, under TLS when the master has a
certificate) listens first; then the address is published (label file,
name server: ``launch.publish``), which refuses a label that a live master
holds. A publication that fails ends the server it would have announced.
"""

from __future__ import annotations

from typing import Optional

from .. import settings
from ..core.manager import TaskManager
from ..wire.server import MasterServer
from . import launch


class MasterEndpoint:
    """The server of ``manager`` for the job ``label`` on ``host``:``port`` (see
    ``settings.port``), and its address published (``use_name_server``: see
    ``settings.use_name_server``). Raises what either raises, leaving nothing open."""

    def __init__(self, manager: TaskManager, label: str, secret: bytes, host: str, port: Optional[int],
                 tls_context, use_name_server: bool):
        self.server = MasterServer(manager, label, secret, host, settings.port(port), tls_context=tls_context)
        try:
            self._publication = launch.publish(label, self.server.port, secret, host,
                                               settings.use_name_server(use_name_server),
                                               tls=tls_context is not None)
        except BaseException:
            manager.terminate()   # ends the server's threads that wait for the end of the job
            self.server.close()
            raise

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        return self.server.port

    def close(self) -> None:
        """End the server: its connections, its threads."""
        self.server.close()

    def withdraw(self) -> None:
        """Withdraw the published address (label file, name server entry)."""
        self._publication.withdraw()
