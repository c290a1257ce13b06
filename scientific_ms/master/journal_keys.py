"""The request keys by which a journal matches a resumed job's requests with its journaled answers.

A key is a hash of a request's tag and its pickled parameters; a
:class:`GlobalStateValue` among them counts as the hash of the value it stands
for (``value_digest``), so that it matches whatever state id the resumed run
gave it. ``journal.py`` stores the keys, ``journaled.py`` computes them.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from typing import Any, Callable, Optional, Tuple

from ..wire.payload import PROTOCOL, GlobalStateValue, Payload, Pickled


def request_key(tag: str, payload: Payload, parameters: Optional[tuple] = None,
                digest_of: Optional[Callable[[str], bytes]] = None) -> bytes:
    """The matching key of a request: a hash of its tag and its parameters.

    ``payload`` is the pickled parameters (bytes or a payload.Pickled). When they hold GlobalStateValue
    placeholders, pass ``parameters`` and ``digest_of`` (state label ->
    hash of the stored value): they are pickled again with each placeholder
    replaced by that hash, so a placeholder matches by the value it stands
    for, whatever its state id.
    """
    if parameters is not None and digest_of is not None:
        payload = dumps_by_state_digest(parameters, digest_of)
    return hashlib.blake2b(tag.encode() + b"\x00" + payload_bytes(payload), digest_size=16).digest()


def value_digest(data: bytes) -> bytes:
    """Hash of a pickled global state value, as request keys use it."""
    return hashlib.blake2b(data, digest_size=16).digest()


class _DigestPickler(pickle.Pickler):
    """Pickles parameters with each GlobalStateValue replaced by the hash of its value."""

    def __init__(self, file, digest_of: Callable[[str], bytes]):
        super().__init__(file, PROTOCOL)
        self._digest_of = digest_of

    def persistent_id(self, obj: Any):
        if type(obj) is GlobalStateValue:
            return self._digest_of(obj.label)
        return None


def dumps_by_state_digest(parameters: Tuple, digest_of: Callable[[str], bytes]) -> bytes:
    """Parameters pickled with each GlobalStateValue as ``digest_of(its label)``: the journal's
    request keys, so that a placeholder matches by the value it stands for, whatever its state id."""
    buffer = io.BytesIO()
    _DigestPickler(buffer, digest_of).dump(parameters)
    return buffer.getvalue()


def payload_bytes(payload: Payload) -> bytes:
    """The payload as one bytes object (a copy when it has buffers): what the journal hashes."""
    if type(payload) is Pickled:
        return pickle.dumps(payload, protocol=PROTOCOL)
    return payload
