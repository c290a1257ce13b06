"""The ``task_manager`` command: inspect a running job, watch it, list jobs, run slaves.

    task_manager show LABEL [-v] [--json]      (alias: status)
    task_manager show JOURNAL [-v] [--json]    (a master's journal file: works when it is dead)
    task_manager watch LABEL [-v] [--interval SECONDS]
    task_manager list [-v] [--json]
    task_manager slave LABEL [-n N] [--idle-timeout SECONDS]
    task_manager dashboard LABEL|JOURNAL [--port PORT] [--host HOST] [--show-values]   (docs/guide/dashboard.md)
    task_manager provision LABEL (--slurm | --local) [--max-jobs N] [-n N] [...]

Options common to the commands that take a label, accepted before or after
the command name: ``-m/--master HOST[:PORT]``, ``-w/--wait``,
``-v/--verbose``, ``-k/--key-file FILE``. Exit codes: 0 success, 1 the
master cannot be found, reached or authenticated (a message on stderr says
where it looked), 2 usage errors, 130 interrupted. docs/guide/task_manager.md
describes the output and the JSON keys.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import logging
import os
import sys
import traceback
from typing import Callable, Dict, List, NamedTuple, NoReturn, Optional, Set, Tuple, Union

from .. import logs, settings
from ..core import needs
from ..errors import AuthenticationError, ConfigurationError, ScientificMSError
from ..master.launch import fetch_stored_code, run_stored_code, wait_for_stored_code
from ..slave import departure, worker_link
from ..slave.keeper_start import run_keeper
from ..wire import discovery, leaving
from ..wire.client import MasterConnection, connect, hand_over

log = logging.getLogger(__name__)

#: How long one call fetching the slave code may take before the command gives up.
STATUS_TIMEOUT = 30.0


def _connect(args) -> MasterConnection:
    return connect(args.label, args.master, key_file=args.key_file, wait=args.wait)


# ------------------------------------------------------------------ dashboard

def dashboard(args) -> int:
    """Serve a live web page of a job (a label) or of its journal file, until interrupted."""
    from ..dashboard.command import run
    return run(args, _connect)


# ------------------------------------------------------------------ slave

def slave(args) -> int:
    """Run the slave code stored by the master, in the master's working directory
    (-n N: N slave processes forked from one keeper, ``slave/keeper.py``)."""
    leaving.claim()   # before the slave's code runs: a spawning master's pipe is ours alone
    if args.idle_timeout is not None:   # read by every SlaveProcess here and in -n workers
        os.environ[settings.PREFIX + "IDLE_TIMEOUT"] = repr(args.idle_timeout)
    idle_timeout = settings.idle_timeout()   # a bad SCIENTIFIC_MS_IDLE_TIMEOUT fails here
    if args.resources is not None:   # what this host offers: read by the keeper (-n) or the lone slave
        os.environ[needs.VARIABLE] = needs.offer_text(args.resources, f"--resources {args.resources}")
    needs.declared()   # a bad SCIENTIFIC_MS_RESOURCES fails here, before any slave starts
    connection = departure.connect_or_leave(
        functools.partial(connect, args.label, args.master, key_file=args.key_file),
        args.wait, None, idle_timeout, args.label)
    if connection is None:   # -w with an idle timeout, and no master came: leave as an idle slave
        return 0
    try:
        code = fetch_stored_code(connection, STATUS_TIMEOUT)
        if code is None and args.wait:   # found the master a moment before it stored its code
            code = wait_for_stored_code(connection, STATUS_TIMEOUT, args.label, idle_timeout)
        if code is None:
            _no_slave_code(args.label)
            connection.close()
            return 1
    except BaseException:
        connection.close()
        raise
    context = discovery.SlaveContext(args.label, connection.host, connection.port, connection.secret)
    if args.n > 1:
        result = run_keeper(args.label, connection, args.n, settings.slave_restarts(None))
        if isinstance(result, worker_link.WorkerLink):   # a worker forked by the keeper
            worker_link.become_worker(result)
            _serve_as_worker(context, code)
        connection.close()
        return result
    # The slave in the stored code connects to this master at once: it gets this connection.
    hand_over(connection, args.master, args.key_file)
    discovery.set_slave_context(context)
    run_stored_code(code)
    return 0


def _serve_as_worker(context: discovery.SlaveContext, code) -> NoReturn:
    """In a worker of ``slave -n``: run the stored slave code, then end this process
    (never returning into the keeper's code it was forked from)."""
    status = 1
    try:
        discovery.set_slave_context(context)
        run_stored_code(code)
        status = 0
    except SystemExit as end:
        if end.code is None or isinstance(end.code, int):
            status = end.code or 0
        else:
            print(end.code, file=sys.stderr)
    except KeyboardInterrupt:
        status = 130
    except BaseException:
        traceback.print_exc()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


def _no_slave_code(label: str) -> None:
    print(f"task_manager: the master of {label!r} stored no slave code\n"
          f"  run your slave script directly instead, or start the master with runJob,\n"
          f"  or initializeMasterProcess(..., slave_script=...)", file=sys.stderr)


# ------------------------------------------------------------------ main

def _label(text: str) -> str:
    if os.path.isfile(text):
        return text   # a journal file (show); the other commands reject it as a label
    try:
        return discovery.check_label(text)
    except ConfigurationError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _master_address(text: str) -> str:
    try:
        settings.parse_host_port(text)
    except ConfigurationError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _positive(kind: type) -> Callable[[str], object]:
    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not 0 < value < float("inf"):   # nan and inf too
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    convert.__name__ = kind.__name__
    return convert


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object (keys: docs/guide/task_manager.md)")


def _watch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--interval", type=_positive(float), default=2.0, metavar="SECONDS",
                        help="seconds between refreshes (default 2)")


def _slave_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", type=_positive(int), default=1, metavar="N",
                        help="run N slave processes forked from one keeper, which beats their hearts, "
                             "enforces their time limits and replaces those that die (default 1)")
    parser.add_argument("--idle-timeout", type=_positive(float), default=None, metavar="SECONDS",
                        help="leave after SECONDS without work, so that a batch allocation is freed "
                             "when the queue runs dry (default: SCIENTIFIC_MS_IDLE_TIMEOUT, else never)")
    parser.add_argument("--resources", default=None, metavar="gpu=2,memory=64G,cores=8",
                        help="what this host offers tasks that need resources, shared by its N slaves: "
                             "gpu=COUNT or gpu=ID,ID,..., memory=SIZE (K/M/G/T), cores=COUNT (default: "
                             "SCIENTIFIC_MS_RESOURCES, else no GPU, the memory psutil sees, N cores; "
                             "docs/guide/resources.md)")


class Command(NamedTuple):
    """A command: its one-line summary; ``run(args)`` and ``options(parser)``, each a function
    or ``"module:function"`` (relative to this package), imported only when needed: a slave
    runs this command line too, and must not pay for the others' modules."""
    summary: str
    run: Union[str, Callable[[argparse.Namespace], int]]
    options: Union[str, Callable[[argparse.ArgumentParser], None], None] = None
    takes_label: bool = True
    aliases: Tuple[str, ...] = ()


def _function(spec: Union[str, Callable]) -> Callable:
    if not isinstance(spec, str):
        return spec
    module, name = spec.split(":")
    return getattr(importlib.import_module(module, __package__), name)


#: The commands, written once: the parser and the dispatch are built from this.
COMMANDS: Dict[str, Command] = {
    "show": Command("Print the state of one task manager (add -v for tags and processes, --json for scripts).",
                    ".watching:show", _json_option, aliases=("status",)),
    "watch": Command("Show the state of one task manager, refreshed in place until the job ends.",
                     ".watching:watch", _watch_options),
    "list": Command("List the task managers this machine knows of.", ".listing:list_managers", _json_option,
                    takes_label=False),
    "slave": Command("Run the slave code stored by the master, in the master's working directory.",
                     slave, _slave_options),
    "dashboard": Command("Serve a live web page of a job (a label) or of its journal file, until interrupted.",
                         dashboard, "..dashboard.command:add_options"),
    "provision": Command("Keep slave jobs running for a job on a batch system (SLURM) or here, as its "
                         "queue needs them.", "..provision.command:run", "..provision.command:options"),
}


def command_names() -> Set[str]:
    """Every command's name and alias (``python -m scientific_ms NAME`` is a command, not a script)."""
    return set(COMMANDS) | {alias for command in COMMANDS.values() for alias in command.aliases}


def _add_common_options(parser: argparse.ArgumentParser, suppress: bool, takes_label: bool = True) -> None:
    # Accepted before and after the command name; after it, an option that is
    # not given must not overwrite one given before it (hence SUPPRESS).
    def default(value):
        return argparse.SUPPRESS if suppress else value
    if takes_label:
        parser.add_argument("-m", "--master", metavar="HOST[:PORT]", type=_master_address, default=default(None),
                            help="address of the master (default: environment, name server or label file)")
        parser.add_argument("-w", "--wait", action="store_true", default=default(False),
                            help="wait for the master to start (slave: and to store its slave code)")
    parser.add_argument("-v", "--verbose", action="store_true", default=default(False), help="more detail")
    parser.add_argument("-k", "--key-file", metavar="FILE", default=default(None),
                        help="file holding the master's secret (default: SCIENTIFIC_MS_KEY_FILE, "
                             "SCIENTIFIC_MS_SECRET or the label file)")


def build_parser(argv: Optional[List[str]] = None) -> argparse.ArgumentParser:
    """The parser; the options of only the commands named in ``argv`` (all when it names none,
    as for ``--help``): a command's options may live in a module of its own."""
    named = set(sys.argv[1:] if argv is None else argv)
    if not named & command_names():
        named = command_names()
    parser = argparse.ArgumentParser(
        prog="task_manager",
        description="Inspect scientific_ms task managers and run slaves for them.",
        epilog="Exit codes: 0 success, 1 master not found, unreachable or wrong secret, "
               "2 usage error, 130 interrupted. See docs/guide/task_manager.md.")
    _add_common_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        sub = commands.add_parser(name, aliases=list(command.aliases), help=command.summary,
                                  description=command.summary)
        _add_common_options(sub, suppress=True, takes_label=command.takes_label)
        if command.takes_label:
            sub.add_argument("label", type=_label, help="the task manager's label")
        if command.options is not None and named & {name, *command.aliases}:
            _function(command.options)(sub)
        sub.set_defaults(run=command.run, takes_label=command.takes_label)
    return parser


def _program() -> str:
    # A slave that a master spawned runs this command too, but nobody typed it.
    return "scientific_ms" if leaving.spawned_by_master() else "task_manager"


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not args.takes_label and (args.master or args.wait):
        parser.error(f"{args.command} takes no -m/--master or -w/--wait")
    logs.configure(logging.INFO if args.verbose else logging.WARNING)
    try:
        logs.apply_debug_flag()
        return _function(args.run)(args)
    except AuthenticationError as error:
        print(f"{_program()}: wrong secret: {error}", file=sys.stderr)
        return 1
    except ScientificMSError as error:
        print(f"{_program()}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our output went away (``task_manager show x | head -1``).
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
