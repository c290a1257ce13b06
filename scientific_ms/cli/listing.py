"""``task_manager list``: every task manager this user can see, and stale entries pruned.

Masters are found through the label files of the registry folder and, when
one is reachable, the Pyro5 name server; a master whose process is gone (or
whose port refuses connections) has its entry removed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from .. import settings
from ..errors import AuthenticationError, ScientificMSError
from ..master.launch import endpoint_state, master_state
from ..wire import discovery
from ..wire.client import MasterConnection
from ..wire.protocol import OBJECT_PREFIX
from .report import JSON_SCHEMA, build_report, format_table, iso_text

log = logging.getLogger(__name__)

#: ``list`` gives each master this long to answer, so one stuck master cannot hold it up for long.
LIST_TIMEOUT = 5.0


class _Entry(NamedTuple):
    label: str
    host: Optional[str]
    pid: Optional[int]
    address: str
    started_at: Optional[str]
    source: str
    report: Optional[Dict]
    error: Optional[str]


def _status_at(hosts: List[str], port: int, secret: Optional[bytes],
               label: str) -> Tuple[Optional[Dict], Optional[str], str]:
    """(report, error, address) of the master at the first of ``hosts`` that answers."""
    address = f"{hosts[0] if hosts else '?'}:{port}"
    if secret is None:
        return None, "no secret (set SCIENTIFIC_MS_SECRET or use --key-file)", address
    error = "no address to try"
    for host in hosts:
        address = f"{host}:{port}"
        try:
            connection = MasterConnection(host, port, secret, label, timeout=LIST_TIMEOUT)
        except AuthenticationError:
            return None, "wrong secret", address
        except ScientificMSError as failure:
            error = str(failure)
            continue
        try:
            return build_report(label, address, connection.status(LIST_TIMEOUT)), None, address
        except ScientificMSError as failure:
            return None, str(failure), address
        finally:
            connection.close()
    return None, error, address


def _collect_managers(key_file: Optional[str]) -> Tuple[List[_Entry], List[str]]:
    entries: List[_Entry] = []
    pruned: List[str] = []
    seen = set()
    for record in discovery.list_label_files():
        label = record.get("label", "?")
        state, reason = master_state(record)
        if state == "dead":
            with contextlib.suppress(OSError):
                os.unlink(record["_path"])
            pruned.append(f"label file {record['_path']} ({reason})")
            continue
        seen.add(label)
        secret = record["secret"].encode() if record.get("secret") else settings.secret_from_environment(key_file)
        report, error, address = _status_at(discovery.hosts_of(record), record["port"], secret, label)
        entries.append(_Entry(label, record.get("hostname"), record.get("pid"), address,
                              iso_text(record.get("started")), "label file", report, error))
    entries += _name_server_managers(seen, key_file, pruned)
    return entries, pruned


def _name_server_managers(seen: set, key_file: Optional[str], pruned: List[str]) -> List[_Entry]:
    if not settings.use_name_server(True):
        return []
    ns = discovery.locate_name_server()
    if ns is None:
        return []
    import Pyro5.core
    entries = []
    with ns:
        try:
            names = ns.list(prefix=OBJECT_PREFIX)
        except Exception as failure:  # a name server that misbehaves must not break list
            log.warning("could not list the name server: %s", failure)
            return []
        for name, uri_text in sorted(names.items()):
            label = name[len(OBJECT_PREFIX):]
            if label in seen:
                continue
            uri = Pyro5.core.URI(uri_text)
            state = endpoint_state(uri.host, uri.port, label)
            if state == "dead":
                with contextlib.suppress(Exception):
                    ns.remove(name)
                pruned.append(f"name server entry {name} ({uri.host}:{uri.port} does not answer)")
                continue
            report: Optional[Dict] = None
            error: Optional[str] = "unreachable from here"
            if state == "live":
                report, error, _ = _status_at([uri.host], uri.port, settings.secret_from_environment(key_file), label)
            master: Dict[str, Any] = next((p for p in (report or {}).get("processes", []) if p["role"] == "master"), {})
            entries.append(_Entry(label, master.get("host"), master.get("pid"), f"{uri.host}:{uri.port}",
                                  (report or {}).get("started_at"), "name server", report, error))
    return entries


def list_managers(args) -> int:
    """List every live task manager this user can see; prune entries of dead masters."""
    entries, pruned = _collect_managers(args.key_file)
    if args.json:
        print(json.dumps({"schema": JSON_SCHEMA, "task_managers": [_list_json(e) for e in entries],
                          "pruned": pruned}, indent=2))
        return 0
    for note in pruned:
        print(f"task_manager: removed the stale {note}", file=sys.stderr)
    if not entries:
        print("no live task managers")
        return 0
    rows = []
    for entry in entries:
        started = (entry.started_at or "?").replace("T", " ")[:19]
        if entry.report is not None:
            tasks = entry.report["tasks"]
            slaves = str(entry.report["slaves"])
            progress = f"{tasks['retrieved']}/{tasks['requested']}"
            if tasks["requested"]:
                progress += f" ({100 * tasks['retrieved'] / tasks['requested']:.0f}%)"
            if entry.report["terminated"]:
                progress += " ending"
        else:
            slaves, progress = "?", f"? ({entry.error})"
        rows.append([entry.label, entry.host or "?", str(entry.pid or "?"), entry.address, started,
                     slaves, progress] + ([entry.source] if args.verbose else []))
    header = ["LABEL", "HOST", "PID", "ADDRESS", "STARTED", "SLAVES", "PROGRESS"] + (["SOURCE"] if args.verbose else [])
    print("\n".join(format_table(header, rows, right=(2, 5))))
    return 0


def _list_json(entry: _Entry) -> Dict:
    report = entry.report
    return {
        "label": entry.label, "host": entry.host, "pid": entry.pid, "address": entry.address,
        "started_at": entry.started_at, "source": entry.source,
        "slaves": report["slaves"] if report else None,
        "requested": report["tasks"]["requested"] if report else None,
        "retrieved": report["tasks"]["retrieved"] if report else None,
        "progress": report["progress"] if report else None,
        "terminated": report["terminated"] if report else None,
        "error": entry.error,
    }
