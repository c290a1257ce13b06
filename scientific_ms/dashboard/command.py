"""``task_manager dashboard TARGET [--port PORT] [--host HOST] [--show-values]``.

Light to import: ``build_parser`` adds these options for every command run;
the server and its sources are imported when the dashboard starts.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable

from .access import DEFAULT_HOST


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535 (0: any free one), got {port}")
    return port


def add_options(parser: argparse.ArgumentParser) -> None:
    """The dashboard's own options."""
    parser.add_argument("--port", type=_port, default=None,
                        help="port to serve on (default 8787, or any free port when it is taken; 0: any free one)")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="interface to listen on (default 127.0.0.1, this machine only; "
                             "another one is reachable from elsewhere: reach it through an SSH tunnel instead)")
    parser.add_argument("--show-values", action="store_true",
                        help="show the parameters and exceptions of failed tasks (journal view); hidden by default")


def run(args: argparse.Namespace, connect: Callable[[argparse.Namespace], Any]) -> int:
    """Serve the dashboard of ``args.label`` (a label or a journal file) until interrupted;
    the page's URL, with its token, is the first line printed."""
    from .server import DashboardServer
    remote = None
    source: Any
    if os.path.isfile(args.label):
        from .journal_view import JournalSource
        source = JournalSource(args.label, args.show_values)
        what = f"journal {args.label}"
    else:
        from .live import LiveSource, RemoteStatus
        remote = RemoteStatus(lambda: connect(args))
        source = LiveSource(args.label, remote.address, remote, show_values=args.show_values)
        what = f"task manager {args.label!r} at {remote.address}"
    try:
        server = DashboardServer(source, args.host, args.port)
        print(server.url, flush=True)
        print(f"dashboard of the {what}; Ctrl-C to stop", file=sys.stderr, flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.close()
    finally:
        if remote is not None:
            remote.close()
    return 0
