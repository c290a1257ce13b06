"""The dashboard's HTTP server: the standard library's ThreadingHTTPServer, GET only.

Routes: ``/`` (the page), ``/app.js`` and ``/style.css`` (its assets, from
this package), ``/api/state`` (the data the page draws, JSON). Every
request needs the token (``access.py``); anything else gets a 4xx and
changes nothing.
"""

from __future__ import annotations

import concurrent.futures
import errno
import json
import logging
import socket
import sys
import threading
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Optional, Protocol, Tuple

from ..errors import ConfigurationError
from . import DEFAULT_PORT
from .access import Access, new_token, url, warn_if_exposed

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent / "assets"

#: path -> (asset file, content type)
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}

#: Longer request targets get 414: no legitimate one comes near.
MAX_TARGET = 2048

#: Sent with every answer: nothing from elsewhere, no caching, no token in a Referer.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


class Source(Protocol):
    """What the dashboard shows: a live master (``live.py``) or a journal (``journal_view.py``)."""

    kind: str

    def state(self) -> Dict[str, Any]: ...


class DashboardServer:
    """Serves one source's page on ``host``:``port`` (port None: :data:`DEFAULT_PORT`, or any
    free port when it is taken; 0: any free port) until :meth:`close`."""

    def __init__(self, source: Source, host: str = "127.0.0.1", port: Optional[int] = None,
                 token: Optional[str] = None):
        self.source = source
        self.host = host
        self._httpd = _bind(host, port)
        self._httpd.dashboard = self
        self.port: int = self._httpd.server_address[1]
        self.access = Access(token or new_token(), self.port)
        self.url = url(host, self.port, self.access.token)
        self._thread: Optional[threading.Thread] = None
        # One thread builds every /api/state answer, not each request's own thread: glibc
        # gives threads malloc arenas of their own, and each arena that built a large
        # document kept its high-water mark (a master's RSS grew by ~50 MiB over its first
        # 10^6 tasks with a page open, flat with this: benchmarks/dashboard_memory.py).
        self._builder = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="scientific_ms-dashboard-state")
        warn_if_exposed(host)

    def state_body(self) -> bytes:
        """The source's state as JSON (built in the one thread that builds them all)."""
        return self._builder.submit(lambda: json.dumps(self.source.state()).encode()).result()

    def serve_forever(self) -> None:
        """Serve in this thread until :meth:`close` is called from another."""
        self._httpd.serve_forever(poll_interval=0.2)

    def start(self) -> None:
        """Serve in a daemon thread of its own."""
        self._thread = threading.Thread(target=self.serve_forever, name="scientific_ms-dashboard", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving and free the port."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()
        self._builder.shutdown(wait=False, cancel_futures=True)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    dashboard: DashboardServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Not socketserver's traceback on stderr (a master's own output): a page that closed or
        # went silent mid-answer is routine; anything else is logged.
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            log.debug("a page's connection ended mid-answer: %s", error)
        else:
            log.error("the dashboard failed to answer a request", exc_info=error)


class _Server6(_Server):
    address_family = socket.AF_INET6


def _bind(host: str, port: Optional[int]) -> _Server:
    tries = [port] if port is not None else [DEFAULT_PORT, 0]
    for index, candidate in enumerate(tries):
        try:
            return (_Server6 if ":" in host else _Server)((host, candidate), _Handler)
        except OSError as error:
            if index + 1 < len(tries) and error.errno == errno.EADDRINUSE:
                continue
            raise ConfigurationError(f"the dashboard cannot listen on {host}:{candidate}: {error.strerror}; "
                                     f"choose another --port (0: any free one) or --host") from None
    raise AssertionError("unreachable")


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "scientific_ms-dashboard"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    # A request line too garbled to name a version still gets a status line and headers.
    default_request_version = "HTTP/1.0"
    # Seconds a connection may stay silent (a page asks every second): idle or stalled
    # connections do not keep their threads after the page, or the dashboard, is gone.
    timeout = 30

    def do_GET(self) -> None:
        parsed = self._parse()
        if parsed is None:
            return
        path, token = parsed
        board = self.server.dashboard
        verdict = board.access.verdict(token, self.headers)
        if verdict != 200:
            text = "the dashboard needs its token: open the URL it printed (with ?token=...)" if verdict == 401 \
                else "wrong token: open the URL the dashboard printed"
            extra = {"WWW-Authenticate": 'Bearer realm="scientific_ms dashboard"'} if verdict == 401 else {}
            self._send(verdict, text.encode(), "text/plain; charset=utf-8", extra)
            return
        if path not in STATIC and path != "/api/state":
            self._send(404, b"no such page", "text/plain; charset=utf-8")
            return
        if path == "/api/state":
            try:
                body = board.state_body()
            except Exception as error:   # a broken journal, say: the page says why
                log.exception("the dashboard cannot read its source")
                self._send(500, f"cannot read the job's state: {error}".encode(), "text/plain; charset=utf-8")
                return
            self._send(200, body, "application/json")
            return
        name, kind = STATIC[path]
        extra = {"Set-Cookie": board.access.set_cookie()} if path == "/" else {}
        self._send(200, (ASSETS / name).read_bytes(), kind, extra)

    def _parse(self) -> Optional[Tuple[str, Optional[str]]]:
        """(path, token in the query) of a well-formed request; else answers it with a 4xx."""
        if len(self.path) > MAX_TARGET:
            self._send(414, b"request target too long", "text/plain; charset=utf-8")
            return None
        try:
            target = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(target.query, keep_blank_values=True, strict_parsing=bool(target.query),
                                          errors="strict", max_num_fields=4)
        except ValueError:
            self._send(400, b"malformed query", "text/plain; charset=utf-8")
            return None
        if set(query) - {"token"} or len(query.get("token", ())) > 1:
            self._send(400, b"the only query parameter is one token", "text/plain; charset=utf-8")
            return None
        return target.path, query.get("token", [None])[0]

    def _refuse(self) -> None:
        self._send(405, b"only GET is served", "text/plain; charset=utf-8", {"Allow": "GET"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _refuse

    def _send(self, code: int, body: bytes, kind: str, extra: Optional[Dict[str, str]] = None) -> None:
        self.send_response(code, HTTPStatus(code).phrase)
        headers = {"Content-Type": kind, "Content-Length": str(len(body)), **SECURITY_HEADERS, **(extra or {})}
        if code >= 400:
            headers["Connection"] = "close"
            self.close_connection = True
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # Not the request line: its query holds the token.
        log.debug("%s %s %s: %s", self.address_string(), self.command,
                  urllib.parse.urlsplit(getattr(self, "path", "")).path, args[-2] if len(args) > 1 else "")
