"""Optional TLS for every connection to a master (for networks you do not trust).

The master wraps each accepted connection in TLS inside its per-connection
worker thread, with a timeout, before the secret challenge-response. (Pyro5's
own SSL mode does the TLS handshake in the daemon's single accept loop, with
no timeout, so one silent client could hold up every new connection.)

Clients verify the master's certificate against ``SCIENTIFIC_MS_TLS_CA``
(for a self-signed certificate, the certificate file itself). Host names are
not checked, since cluster nodes are often reached by address; what stops a
man in the middle is that only the master holds a key that chains to that CA
(and only it knows the secret).
"""

from __future__ import annotations

import ssl
from typing import Optional, Tuple

from .. import settings
from ..errors import ConfigurationError

HANDSHAKE_TIMEOUT = 10.0


def server_files(cert: Optional[str], key: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    """The master's certificate and key: the arguments, else SCIENTIFIC_MS_TLS_CERT/KEY."""
    return cert or settings.raw("TLS_CERT"), key or settings.raw("TLS_KEY")


def server_context(cert: Optional[str], key: Optional[str]) -> Optional[ssl.SSLContext]:
    """The master's TLS context from its certificate and key files, or None when neither is given."""
    if not cert and not key:
        return None
    if not cert or not key:
        raise ConfigurationError("TLS needs both a certificate and its key "
                                 "(tls_cert=/tls_key=, or SCIENTIFIC_MS_TLS_CERT and SCIENTIFIC_MS_TLS_KEY)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        raise ConfigurationError(f"cannot load the TLS certificate {cert} and key {key}: {error}") from None
    return context


def client_context(ca: Optional[str] = None) -> Optional[ssl.SSLContext]:
    """A client context trusting ``ca`` (or SCIENTIFIC_MS_TLS_CA), or None when TLS is off."""
    ca = ca or settings.raw("TLS_CA")
    if not ca:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_verify_locations(ca)
    except (OSError, ssl.SSLError) as error:
        raise ConfigurationError(f"cannot load the TLS CA file {ca}: {error}") from None
    return context
