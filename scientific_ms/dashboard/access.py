"""Who may see the dashboard: a token in every request, compared in constant time.

The token travels in the URL the dashboard prints (``?token=``), in an
``Authorization: Bearer`` header, or in the cookie the first page sets, so
that the page's own requests need not repeat it. A request without one gets
401, one with a wrong one 403.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import secrets
import socket
from http.cookies import CookieError, SimpleCookie
from typing import Any, Optional

log = logging.getLogger(__name__)

#: Loopback unless told otherwise: the dashboard shows a job's inner workings.
DEFAULT_HOST = "127.0.0.1"


def new_token() -> str:
    """A fresh random token (URL-safe text, 192 bits)."""
    return secrets.token_urlsafe(24)


class Access:
    """The token check of one dashboard."""

    def __init__(self, token: str, port: int):
        self.token = token
        # One cookie per port: two dashboards on one host must not overwrite each other's.
        self.cookie_name = f"scientific_ms_dashboard_{port}"

    def verdict(self, query_token: Optional[str], headers: Any) -> int:
        """200 if the request carries the token, 401 if it carries none, 403 if a wrong one
        (``headers``: the request's, anything with ``get``)."""
        offered = [query_token, _bearer(headers.get("Authorization")), self._cookie(headers.get("Cookie"))]
        given = [token for token in offered if token]
        if not given:
            return 401
        expected = self.token.encode()
        # Every offered token is compared (constant time each): a stale cookie must not
        # hide a right token in the URL.
        right = False
        for token in given:
            right |= hmac.compare_digest(token.encode("utf-8", "replace"), expected)
        return 200 if right else 403

    def set_cookie(self) -> str:
        """The Set-Cookie header value that lets the page's own requests through."""
        return f"{self.cookie_name}={self.token}; Path=/; HttpOnly; SameSite=Strict"

    def _cookie(self, header: Optional[str]) -> Optional[str]:
        if not header:
            return None
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie.load(header)
        except CookieError:
            return None
        morsel = cookie.get(self.cookie_name)
        return morsel.value if morsel is not None else None


def _bearer(header: Optional[str]) -> Optional[str]:
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) is this machine's loopback only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_exposed(host: str) -> None:
    """Log a warning when the dashboard listens beyond this machine."""
    if not is_loopback(host):
        log.warning("the dashboard listens on %s, reachable from other machines: anyone with its URL (and its "
                    "token) sees the job; prefer the default 127.0.0.1 and an SSH tunnel "
                    "(docs/guide/dashboard.md)", host or "every interface")


def url(host: str, port: int, token: str) -> str:
    """The URL to open: the host as others reach it (this machine's name for a wildcard)."""
    shown = socket.gethostname() if host in ("", "0.0.0.0", "::") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/?token={token}"
