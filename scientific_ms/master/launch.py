"""Roles and launching: how a master makes itself known and how slaves come to run.

``discovery.py`` reads (label -> address); this module writes and starts:

- :func:`publish`: a master claims its label file (and a name server entry)
  with its :func:`address_record`, the same record rank 0 broadcasts
  under MPI; :func:`master_state` is the one rule for whether the master
  that wrote a record still lives (used to claim a label and by
  ``task_manager list``);
- :func:`start_script_master`: the master of ``runJob``, which stores the
  script's source so that any slave can run it;
- :func:`store_slave_code`, :func:`fetch_stored_code`,
  :func:`run_stored_code`: the slave code a master keeps, fetched and run
  as ``__main__`` by ``task_manager slave`` and by MPI slave ranks;
- :func:`slave_command`: the command a spawned slave runs, with
  :func:`protocol.slave_environment` telling it where its master is
  (``task_manager slave -n N`` runs N workers forked by one keeper,
  ``slave/keeper.py``;
  the master's own spawned slaves are supervised and replaced by
  ``supervisor.py``).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import socket
import sys
import time
import types
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple

import psutil

from .. import settings
from ..errors import ConfigurationError, LabelInUseError
from ..machine import non_loopback_addresses
from ..wire import auth, discovery
from ..wire.client import connect
from ..wire.payload import dumps_value, loads_value
from ..wire.protocol import SLAVE_ARGV, SLAVE_CODE, SLAVE_CWD, SLAVE_SCRIPT, STORED_CODE_KEYS

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- the address record

def address_record(label: str, port: int, secret: bytes, bound_host: str, tls: bool = False) -> Dict:
    """Where a master listens and how to prove we know it: the label file's content."""
    advertised = settings.advertised_hosts()
    if advertised is None:
        advertised = non_loopback_addresses() if bound_host in ("0.0.0.0", "") else [bound_host]
    me = psutil.Process()
    return {
        "label": label, "hostname": socket.gethostname(), "addresses": advertised,
        "loopback": bound_host in ("0.0.0.0", "", "localhost") or bound_host.startswith("127."),
        "port": port, "pid": os.getpid(), "create_time": me.create_time(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "secret": secret.decode(),
        "token": auth.new_secret().decode()[:16], "cwd": os.getcwd(), "tls": tls,
    }


def master_state(record: Dict) -> Tuple[str, str]:
    """('live' | 'dead' | 'unknown', reason) for the master that wrote ``record``.

    On its own host the process decides: gone (or its PID reused, or a
    zombie) is dead, anything else lives, even stopped or busy. From
    another host only a refused connection on every address is dead; a
    master that greets us lives; silence (a slow or broken route) is unknown.
    """
    where = f"PID {record.get('pid')} on {record.get('hostname')}"
    if record.get("hostname") == socket.gethostname():
        try:
            process = psutil.Process(record.get("pid"))
            alive = process.create_time() == record.get("create_time") and \
                process.status() != psutil.STATUS_ZOMBIE
        except (psutil.Error, TypeError, ValueError):
            alive = False
        return ("live", "") if alive else ("dead", f"{where} is gone")
    port = record.get("port")
    if not isinstance(port, int):   # a label file not written by address_record()
        return "unknown", f"the label file of {where} names no port"
    states = [endpoint_state(host, port, record.get("label", ""))
              for host in discovery.hosts_of(record)]
    if "live" in states:
        return "live", ""
    if states and all(state == "dead" for state in states):
        return "dead", f"nothing answers for {where} at port {record.get('port')}"
    return "unknown", f"{where} does not answer at port {record.get('port')}"


def endpoint_state(host: str, port: int, label: str) -> str:
    """'live' (a master for ``label`` greets us), 'dead' (connection refused) or 'unknown'."""
    try:
        socket.create_connection((host, port), timeout=1.0).close()
    except ConnectionRefusedError:
        return "dead"
    except OSError:
        return "unknown"
    return "live" if discovery.probe(host, port, label) else "unknown"


# ---------------------------------------------------------------- publication

class Publication:
    """Where a master announced itself; ``withdraw()`` removes every trace."""

    def __init__(self, label: str, path: Optional[Path], record: Dict, name_server_uri: Optional[str]):
        self.label = label
        self.path = path
        self.record = record
        self.name_server_uri = name_server_uri

    def withdraw(self) -> None:
        if self.path is not None:
            current = discovery.read_label_file(self.label)
            if current is not None and current.get("token") == self.record["token"]:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
            self.path = None
        if self.name_server_uri is not None:
            with contextlib.suppress(Exception):
                ns = discovery.locate_name_server()
                if ns is not None:
                    with ns:
                        if str(ns.lookup(discovery.ns_name(self.label))) == self.name_server_uri:
                            ns.remove(discovery.ns_name(self.label))
            self.name_server_uri = None


def publish(label: str, port: int, secret: bytes, bound_host: str, use_name_server: bool,
            tls: bool = False) -> Publication:
    """Announce a master; raise LabelInUseError if a live master holds the label."""
    record = address_record(label, port, secret, bound_host, tls)
    path = _claim_label_file(label, record)
    try:
        uri = _register_in_name_server(label, record) if use_name_server else None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        raise
    return Publication(label, path, record, uri)


_HELD_HERE = ("label {label!r} is already served by a live master: one this very process (PID {pid}) "
              "started earlier (a notebook cell run again?); call that master's shutdown() "
              "(an Executor's: shutdown(), or use it in a with block) before starting another, "
              "or choose another label")


def _claim_label_file(label: str, record: Dict) -> Path:
    folder = discovery.private_registry()
    path = folder / f"{label}.json"
    temporary = folder / f".{label}.{os.getpid()}.{record['token']}.tmp"
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as error:
        raise discovery.registry_error(folder, error) from None
    with os.fdopen(descriptor, "w") as stream:
        json.dump(record, stream)
    try:
        for _ in range(3):
            try:
                os.link(temporary, path)  # atomic, and fails if the label is taken
                return path
            except FileExistsError:
                existing = discovery.read_label_file(label)
                state, reason = master_state(existing) if existing is not None else ("dead", "")
                if state == "live":
                    assert existing is not None   # a missing record counts as dead
                    if existing.get("pid") == os.getpid() and existing.get("hostname") == record["hostname"]:
                        raise LabelInUseError(_HELD_HERE.format(label=label, pid=os.getpid())) from None
                    raise LabelInUseError(
                        f"label {label!r} is already served by a live master (PID {existing.get('pid')} "
                        f"on {existing.get('hostname')}, started {existing.get('started')}); "
                        f"choose another label or stop that master") from None
                if state == "unknown":
                    raise LabelInUseError(
                        f"label {label!r} is held by a master that may still run ({reason}); "
                        f"choose another label, or remove {path} if that master is gone") from None
                log.info("replacing the label file of a dead master: %s", path)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        raise LabelInUseError(f"could not claim the label file {path}: another master keeps taking it")
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def _register_in_name_server(label: str, record: Dict) -> Optional[str]:
    ns = discovery.locate_name_server()
    if ns is None:
        log.debug("no name server reachable; the label file is the only publication")
        return None
    name = discovery.ns_name(label)
    host = record["addresses"][0] if record["addresses"] else "127.0.0.1"
    uri = f"PYRO:{name}@{host}:{record['port']}"
    with ns:
        try:
            existing = ns.lookup(name)
        except Exception:
            existing = None
        if existing is not None and str(existing) != uri and \
                discovery.probe(existing.host, existing.port, label):
            raise LabelInUseError(
                f"label {label!r} is registered in the name server by a live master at "
                f"{existing.host}:{existing.port}; choose another label or stop that master")
        ns.register(name, uri, metadata={"scientific_ms"})
    log.info("registered %s in the name server as %s", label, uri)
    return uri


# ---------------------------------------------------------------- the master of a script

def main_script() -> Optional[Path]:
    """The file the running program was started from, or None (interactive, -c)."""
    main = sys.modules.get("__main__")
    try:
        path = inspect.getsourcefile(main) if main is not None else None
    except TypeError:
        path = None
    return Path(path).resolve() if path and os.path.isfile(path) else None


def start_script_master(label: str, master_class, **options):
    """Create ``runJob``'s master and store this script's source as the slaves' code.

    Only the options given (not None) are passed, so that subclasses whose
    ``__init__`` takes just the label still work.
    """
    master = master_class(label, **{name: value for name, value in options.items() if value is not None})
    try:
        script = main_script()
        if script is not None:
            master.store_slave_code(script.read_text(), str(script), sys.argv)
    except BaseException:
        master.shutdown()
        raise
    return master


# ---------------------------------------------------------------- stored slave code

#: A slave that waits for its master's code says so after this many seconds, then every
#: STORED_CODE_NOTE_INTERVAL.
STORED_CODE_NOTE_SECONDS = 2.0
STORED_CODE_NOTE_INTERVAL = 300.0

class StoredCode(NamedTuple):
    """The slaves' code as a master keeps it."""
    source: str
    script: Optional[str]   # the file it came from (for tracebacks and sys.path)
    cwd: Optional[str]      # the master's working directory
    argv: Optional[List[str]]


def store_slave_code(manager, source: str, script: Optional[str], argv: Optional[List[str]]) -> None:
    """Keep the slaves' code in ``manager``'s shared data."""
    values = (source, script, os.getcwd(), list(argv or [script or "slave"]))
    # The code last: a slave that finds it (fetch_stored_code reads it first) finds the rest.
    for key, value in reversed(list(zip(STORED_CODE_KEYS, values))):
        manager.store_data(key, dumps_value(value))


def stored_cwd(manager) -> Optional[str]:
    """The working directory stored with the slaves' code; None if no code is stored."""
    try:
        return loads_value(manager.retrieve_data(SLAVE_CWD))
    except KeyError:
        return None


def fetch_stored_code(connection, timeout: float) -> Optional[StoredCode]:
    """The code stored by the master at ``connection``; None if it stored none."""
    values = {}
    for key in STORED_CODE_KEYS:
        found, data = connection.call("get_data", key, timeout=timeout)
        values[key] = loads_value(data) if found else None
    source = values[SLAVE_CODE]
    if source is None:
        return None
    return StoredCode(source, values[SLAVE_SCRIPT], values[SLAVE_CWD], values[SLAVE_ARGV])


def wait_for_stored_code(connection, timeout: float, label: str,
                         wait_timeout: Optional[float] = None) -> Optional[StoredCode]:
    """:func:`fetch_stored_code` until the master has stored its code, or ``wait_timeout``
    seconds passed (None then). A master stores it just after it starts to listen, so a
    slave told to wait for its master (``-w``) may find it a moment too early."""
    started = time.monotonic()
    note_at = started + STORED_CODE_NOTE_SECONDS
    pause = 0.02
    while True:
        code = fetch_stored_code(connection, timeout)
        now = time.monotonic()
        if code is not None or (wait_timeout is not None and now - started >= wait_timeout):
            return code
        if now >= note_at:   # a wait that may last forever says why
            log.warning("the master of %r has stored no slave code yet (%.0f s); waiting for it, as asked (-w)",
                        label, now - started)
            note_at = now + STORED_CODE_NOTE_INTERVAL
        time.sleep(pause)   # polling: the master has no call that waits for stored data
        pause = min(2 * pause, 0.5)


def run_stored_code(code: StoredCode) -> None:
    """Execute the master's slave code as this process's ``__main__``."""
    if code.cwd and os.path.isdir(code.cwd):
        os.chdir(code.cwd)
    elif code.cwd:
        log.warning("the master's working directory %s does not exist here; staying in %s",
                    code.cwd, os.getcwd())
    module = types.ModuleType("__main__")
    module.__file__ = code.script or "<slave code>"
    module.__dict__["__builtins__"] = __builtins__   # ModuleType's stub declares no __builtins__
    sys.modules["__main__"] = module
    sys.argv = list(code.argv or [module.__file__])
    if code.script:
        sys.path.insert(0, os.path.dirname(code.script))
    exec(compile(code.source, module.__file__, "exec"), module.__dict__)


NO_STORED_CODE = ("the master stored no slave code\n  start it with runJob, or "
                  "initializeMasterProcess(label, slave_script=... or slave_module=...)")


def run_stored_slave_code(label: str, timeout: float = 30.0) -> None:
    """Connect to the master of ``label``, fetch its slave code and run it here."""
    connection = connect(label)
    try:
        code = fetch_stored_code(connection, timeout)
    finally:
        connection.close()
    if code is None:
        raise ConfigurationError(NO_STORED_CODE)
    run_stored_code(code)


# ---------------------------------------------------------------- spawned slaves

def slave_command(label: str, verbose: bool = False) -> List[str]:
    """The command that runs one slave of ``label`` (with the environment of
    :func:`protocol.slave_environment`)."""
    return [sys.executable, "-m", "scientific_ms", "slave", label] + (["-v"] if verbose else [])
