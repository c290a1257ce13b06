"""From a label to a master's address and secret.

A master publishes itself in a **label file** (``<registry>/<label>.json``,
mode 0600 in a 0700 folder) and, when one is reachable, in the Pyro5 name
server as ``TaskManager.<label>``. A slave looks, in this order, at:

1. an explicit ``master_host`` (``HOST`` or ``HOST:PORT``; 7766 by default);
2. the slave context set by ``task_manager slave`` or a spawning master;
3. ``SCIENTIFIC_MS_MASTER``;
4. the name server (``PYRO_NS_HOST``/``PYRO_NS_PORT``, default localhost:9090);
5. the label file.

The secret comes from the source that gave the address when it carries one
(context, label file), else from ``SCIENTIFIC_MS_SECRET`` or a key file,
else from the label file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import socket
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from .. import settings
from ..errors import ConfigurationError
from . import auth
from .protocol import object_name

log = logging.getLogger(__name__)

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_label(label: object) -> str:
    """Return ``label`` if it is usable in file names and Pyro names, else raise."""
    if not isinstance(label, str) or not _LABEL.match(label):
        raise ConfigurationError(
            f"bad label {label!r}: use 1-128 letters, digits, '_', '.' or '-', "
            f"starting with a letter or digit")
    return label


@dataclasses.dataclass
class Candidate:
    """One place a master may be: addresses to try in order, a port, maybe a secret."""
    hosts: List[str]
    port: int
    secret: Optional[bytes]
    source: str
    tls: bool = False


@dataclasses.dataclass
class SlaveContext:
    """Set while a slave runs code stored by its master (task_manager slave, spawned slaves).

    Host, port and secret: where that master is (None when unknown; a slave
    then finds the master by its label).
    """
    label: str
    host: Optional[str]
    port: Optional[int]
    secret: Optional[bytes]


_slave_context: Optional[SlaveContext] = None


def current_slave_context() -> Optional[SlaveContext]:
    return _slave_context


def set_slave_context(context: Optional[SlaveContext]) -> None:
    global _slave_context
    _slave_context = context


# ---------------------------------------------------------------- label files

def label_file(label: str) -> Path:
    return settings.registry_dir() / f"{check_label(label)}.json"


def private_registry() -> Path:
    """The registry folder, created private to the user (label files hold secrets)."""
    folder = settings.registry_dir()
    # A folder named by SCIENTIFIC_MS_REGISTRY is made with its parents; the default one is
    # not, so that a HOME that does not exist is reported rather than created.
    explicit = settings.raw("REGISTRY") is not None
    try:
        folder.mkdir(mode=0o700, parents=explicit, exist_ok=True)
        if folder.stat().st_mode & 0o077:
            os.chmod(folder, 0o700)  # it holds secrets: only its owner may look inside
    except OSError as error:
        raise registry_error(folder, error) from None
    return folder


def registry_error(folder: Path, error: OSError) -> ConfigurationError:
    """A clear error for a label folder that cannot be made or written."""
    if isinstance(error, FileNotFoundError):
        problem = f"{folder.parent} does not exist (is HOME right?)"
    elif isinstance(error, (FileExistsError, NotADirectoryError)):
        problem = f"{folder} or a folder above it is a file, not a folder"
    elif isinstance(error, PermissionError):
        problem = "permission denied"
    else:
        problem = error.strerror or str(error)
    return ConfigurationError(f"cannot use the label folder {folder}: {problem}; a master writes its label "
                              f"file there: set {settings.PREFIX}REGISTRY to a folder of yours to move it")


#: File systems that live on one host: a label file there is seen by that host alone.
LOCAL_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "overlay", "f2fs",
                               "vfat", "ramfs", "squashfs", "zfs", "jfs", "reiserfs"})


def filesystem_type(path: Path) -> Optional[str]:
    """The type of the file system holding ``path`` (or its nearest existing parent), or None."""
    try:
        import psutil
        path = Path(os.path.realpath(path))
        mounts = {Path(part.mountpoint): part.fstype for part in psutil.disk_partitions(all=True)}
    except (ImportError, OSError):
        return None
    for folder in (path, *path.parents):
        if folder in mounts:
            return mounts[folder]
    return None


def missing_label_file(label: str) -> str:
    """Why no label file was found, and what to do when master and slave run on different hosts."""
    path = label_file(label)
    kind = filesystem_type(path.parent)
    # One short line per point: this note is one item of a "no master found" message.
    where = (f"{path.parent} is on a local {kind} file system of {socket.gethostname()},\n"
             f"    which other hosts cannot see" if kind in LOCAL_FILESYSTEMS
             else f"{path.parent} must be shared with the master's host")
    return (f"no label file {path}\n"
            f"    (a master on another host writes its label file on its own host:\n"
            f"    {where};\n"
            f"    on a cluster set {settings.PREFIX}REGISTRY to a folder on a shared file system,\n"
            f"    such as the shared home, for master and slaves alike,\n"
            f"    or give the master's address (-m HOST:PORT, master_host=))")


def read_label_file(label: str) -> Optional[Dict]:
    path = label_file(label)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        log.warning("ignoring unreadable label file %s: %s", path, error)
        return None


def list_label_files() -> List[Dict]:
    folder = settings.registry_dir()
    records = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        with contextlib.suppress(OSError, ValueError):
            record = json.loads(path.read_text())
            record["_path"] = str(path)
            records.append(record)
    return records


def hosts_of(record: Dict) -> List[str]:
    """Addresses to try for a label file record, best first."""
    hosts = []
    if record.get("hostname") == socket.gethostname() and record.get("loopback", True):
        hosts.append("127.0.0.1")
    hosts += [h for h in record.get("addresses", []) if h not in hosts]
    return hosts


def probe(host: str, port: int, label: str, timeout: float = 1.0) -> bool:
    """True if a scientific_ms master serving ``label`` answers at host:port.

    Reads only the master's greeting; needs no secret.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            greeting = auth.read_greeting(sock)
            return greeting is not None and greeting.label == label   # a master of any version
    except (OSError, ConnectionError):
        return False


# ---------------------------------------------------------------- name server

def ns_name(label: str) -> str:
    return object_name(label)


def locate_name_server(timeout: float = 0.5):
    """A proxy for the Pyro5 name server at PYRO_NS_HOST:PYRO_NS_PORT, or None.

    A direct, quick lookup: no broadcast, so no waiting when there is none.
    """
    import Pyro5.api
    from Pyro5 import config as pyro_config
    host, port = pyro_config.NS_HOST, pyro_config.NS_PORT
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return None
    try:
        ns = Pyro5.api.locate_ns(host=host, port=port)
        ns._pyroTimeout = 5.0
        return ns
    except Exception as error:
        log.debug("no name server at %s:%s: %s", host, port, error)
        return None


def _name_server_candidate(label: str) -> Optional[Candidate]:
    if not settings.use_name_server(True):
        return None
    ns = locate_name_server()
    if ns is None:
        return None
    with ns:
        try:
            uri = ns.lookup(ns_name(label))
        except Exception:
            return None
    return Candidate([uri.host], uri.port, None, f"the name server entry {ns_name(label)}")


# ---------------------------------------------------------------- resolution

def candidates(label: str, master_host: Optional[str] = None,
               key_file: Optional[str] = None) -> Tuple[Iterator[Candidate], List[str]]:
    """Where to look for the master of ``label``, in order: (the candidates, notes on misses).

    The candidates come one by one, each looked up only when the ones before
    it did not answer: a slave that knows its master (its slave context, or
    SCIENTIFIC_MS_MASTER) never asks the name server. The notes fill in as
    the candidates are drawn: read them once every candidate was tried.
    """
    check_label(label)
    notes: List[str] = []
    user_secret = settings.secret_from_environment(key_file)
    record = read_label_file(label)
    file_secret = record["secret"].encode() if record and record.get("secret") else None

    def looked_up() -> Iterator[Candidate]:
        if master_host:
            host, port = settings.parse_host_port(master_host)
            yield Candidate([host], port, None, f"master_host {master_host}")
            return
        context = current_slave_context()
        if context is not None and context.label == label and context.host is not None and context.port is not None:
            yield Candidate([context.host], context.port, context.secret, "the slave context")
        env_master = settings.raw("MASTER")
        if env_master:
            host, port = settings.parse_host_port(env_master)
            yield Candidate([host], port, None, f"{settings.PREFIX}MASTER={env_master}")
        else:
            notes.append(f"{settings.PREFIX}MASTER is not set")
        ns_candidate = _name_server_candidate(label)
        if ns_candidate is not None:
            yield ns_candidate
        elif not settings.use_name_server(True):
            notes.append(f"the name server is not asked ({settings.PREFIX}NAME_SERVER=0)")
        else:
            from Pyro5 import config as pyro_config
            notes.append(f"no name server entry (looked at {pyro_config.NS_HOST}:{pyro_config.NS_PORT})")
        if record is not None:
            yield Candidate(hosts_of(record), record["port"], file_secret,
                            f"the label file {label_file(label)}", bool(record.get("tls")))
        else:
            notes.append(missing_label_file(label))

    def with_secrets() -> Iterator[Candidate]:
        for candidate in looked_up():
            if candidate.secret is None:
                candidate.secret = user_secret or file_secret
            yield candidate

    return with_secrets(), notes
