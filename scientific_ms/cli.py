"""The ``task_manager`` command: inspect a running job, list jobs, run slaves."""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import sys
import types
from typing import Callable, Dict, List, Optional

from . import discovery, logs
from .client import MasterConnection, connect
from .errors import ScientificMSError

log = logging.getLogger(__name__)


def _connect(args) -> MasterConnection:
    return connect(args.label, args.master, key_file=args.key_file, wait=args.wait)


# ------------------------------------------------------------------ show

def show(args) -> int:
    """Print the state of one task manager."""
    connection = _connect(args)
    try:
        status = connection.call("status", timeout=30.0)
    finally:
        connection.close()
    print(format_status(status, args.verbose))
    return 0


def format_status(status: Dict, verbose: bool) -> str:
    tasks = status["tasks"]
    lines = []
    processes = status["processes"]

    def section(count: int, what: str, per_tag: Dict[str, int]) -> None:
        lines.append(f"{count} {what}")
        if verbose:
            lines.extend(f"  {tag}: {n}" for tag, n in sorted(per_tag.items()))

    lines.append(f"{len(processes)} active process(es)")
    if verbose:
        for proc in processes:
            lines.append(f"  {proc['id']}: {proc['role']} PID {proc['pid']} on {proc['host']}, "
                         f"{proc['tasks_done']} tasks done")
    section(sum(tasks["waiting"].values()), "waiting tasks", tasks["waiting"])
    section(sum(tasks["running"].values()), "running tasks", tasks["running"])
    finished = dict(tasks["finished"])
    for tag, n in tasks["failed"].items():
        finished[tag] = finished.get(tag, 0) + n
    section(sum(finished.values()), "results waiting to be retrieved", finished)
    for tag in status["unserved_tags"]:
        lines.append(f"note: no connected slave handles tag {tag!r}; its tasks wait for one")
    return "\n".join(lines)


# ------------------------------------------------------------------ list

def list_managers(args) -> int:
    """Print every live task manager this user can see; prune dead label files."""
    for record in discovery.list_label_files():
        if not discovery.record_is_live(record):
            try:
                os.unlink(record["_path"])
            except OSError:
                pass
            continue
        print(f"{record['label']}  PID {record['pid']} on {record['hostname']}  port {record['port']}  "
              f"started {record.get('started', '?')}")
    return 0


# ------------------------------------------------------------------ slave

def slave(args) -> int:
    """Run the slave code stored by the master, in the master's working directory."""
    connection = _connect(args)
    try:
        found, source = connection.call("get_data", "slave_code", timeout=30.0)
        if not found:
            print(f"task_manager: the master of {args.label!r} stored no slave code "
                  f"(start it with runJob, or initializeMasterProcess(..., slave_script=...)); "
                  f"run your slave script directly instead", file=sys.stderr)
            return 1
        values = {}
        for name in ("slave_script", "cwd", "argv"):
            ok, data = connection.call("get_data", name, timeout=30.0)
            values[name] = pickle.loads(data) if ok else None
    finally:
        connection.close()
    discovery.set_slave_context(discovery.SlaveContext(
        args.label, connection.host, connection.port, connection.secret))
    run_stored_code(pickle.loads(source), values["slave_script"], values["cwd"], values["argv"])
    return 0


def run_stored_code(source: str, script: Optional[str], cwd: Optional[str], argv: Optional[List[str]]) -> None:
    """Execute the master's slave code as this process's ``__main__``."""
    if cwd and os.path.isdir(cwd):
        os.chdir(cwd)
    elif cwd:
        log.warning("the master's working directory %s does not exist here; staying in %s", cwd, os.getcwd())
    module = types.ModuleType("__main__")
    module.__file__ = script or "<slave code>"
    module.__builtins__ = __builtins__
    sys.modules["__main__"] = module
    sys.argv = list(argv or [module.__file__])
    if script:
        sys.path.insert(0, os.path.dirname(script))
    exec(compile(source, module.__file__, "exec"), module.__dict__)


# ------------------------------------------------------------------ main

COMMANDS: Dict[str, Callable] = {"show": show, "status": show, "list": list_managers, "slave": slave}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="task_manager",
        description="Inspect scientific_ms task managers and run slaves for them.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-m", "--master", metavar="HOST[:PORT]",
                        help="address of the master (default: name server or label file)")
    common.add_argument("-v", "--verbose", action="store_true", help="more detail")
    common.add_argument("-w", "--wait", action="store_true", help="wait for the master to start")
    common.add_argument("-k", "--key-file", metavar="FILE", help="file holding the master's secret")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, function in COMMANDS.items():
        sub = commands.add_parser(name, parents=[common], help=function.__doc__.splitlines()[0])
        if name != "list":
            sub.add_argument("label", help="the task manager's label")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(logging.INFO if args.verbose else logging.WARNING)
    logs.apply_debug_flag()
    try:
        return COMMANDS[args.command](args)
    except ScientificMSError as error:
        print(f"task_manager: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
