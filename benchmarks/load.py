"""Load: 1,000 slaves connected to one master at once.

    python benchmarks/load.py [--slaves 1000] [--processes 4] [--kind real|light|agent]
                              [--watchdog 1.0] [--hold 6] [--short-tasks 20000]
                              [--per-agent 64] [--table 10,100,1000,10000] [--idle 0]
                              (--kind relay: the keepers relay their workers' exchanges)

The master runs in this process (so psutil measures it: CPU seconds, RSS,
threads). The slaves are threads spread over ``--processes`` subprocesses,
each thread a complete slave:

* ``real``: a genuine ``SlaveProcess(..., hard_exit=False).start(...)``
  (in a thread, so without a keeper process: it beats its own heart), with
  its feed and heartbeat threads and two connections (main, watch):
  3 threads and 2 master connections per slave;
* ``light``: one thread and one connection per slave, speaking the
  protocol directly (register, exchange, and ``agent_watch`` of itself as
  the heartbeat);
* ``agent``: light workers kept by keepers of ``--per-agent`` workers each,
  as ``task_manager slave LABEL -n N`` runs them (``slave/keeper.py``): each
  worker a thread with its own connection (register with its keeper's id,
  exchange, no heartbeat of its own); each keeper a thread with two
  connections that registers as "agent" and sends the heartbeats of all its
  workers in one ``agent_watch``. Workers answer at once, so that 10,000
  of them fit on one machine;
* ``relay``: as ``agent``, with the keeper's relay (``slave/relay.py``)
  carrying its workers' calls on its own connections (their exchanges in
  batches), as a keeper of ``SCIENTIFIC_MS_RELAY_WORKERS`` (16) workers or
  more does: the workers open no connection to the master.

``--table`` runs once per number of slaves, each with a fresh master, and
prints one table: master CPU per short task (and its ratio to the first
row), tasks per second, connect time, worst heartbeat silence, master RSS
and threads, slaves wrongly declared dead.

Phases: every slave connects and registers (and with ``--idle S`` all stay
idle, polling for work, for S seconds: the master's CPU and the relayed
exchanges per second then are printed); then one task per slave is
requested, a task that *holds* its slave until every slave holds one (so
each of the 1,000 slaves provably gets work, all at once); the holds last
``--hold`` seconds, several watchdog limits, while heartbeats must keep up
(``processes_lost`` must stay 0); then they are released and every result
is retrieved exactly once. Optionally a burst of short tasks follows.
Finally the master shuts down and every slave process must exit cleanly.

The same file is the slave side:

    python benchmarks/load.py slaves HOST:PORT COUNT --kind real --watchdog 1.0

reads SCIENTIFIC_MS_SECRET and the label from its environment / arguments,
and waits for the word ``release`` on stdin before held tasks return.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LABEL = "load"

# ---------------------------------------------------------------------------- slave side


def _serve_slaves(address: str, count: int, kind: str, watchdog: float, label: str,
                  stack_kib: int, start_window: int, per_agent: int = 64) -> int:
    """Run ``count`` slaves as threads of this process (``agent``: behind light node
    agents of ``per_agent`` slaves each, a thread per agent); returns an exit code."""
    if stack_kib:
        threading.stack_size(stack_kib * 1024)   # every thread started from now on
    release = threading.Event()
    errors: list = []
    finished = [0]
    lock = threading.Lock()
    # At most ``start_window`` slaves may be connecting at once: a burst of a
    # thousand SYNs would overflow Pyro5's listen backlog of 100.
    window = threading.BoundedSemaphore(start_window)
    # The same for the workers of the keepers (``agent``, ``relay``): on real hosts each
    # keeper's workers connect on that host's cores, not all on these two.
    worker_window = threading.BoundedSemaphore(start_window)

    def do_hold(index, hold_limit):
        """Block until the driver says every slave holds a task."""
        if not release.wait(hold_limit):
            raise RuntimeError(f"task {index} was never released")
        return os.getpid(), threading.get_ident()

    def do_x(value):
        return value, os.getpid(), threading.get_ident()

    handlers = {"do_hold": do_hold, "do_x": do_x}

    def real_slave():
        from scientific_ms import SlaveProcess

        released = []

        class PacedSlave(SlaveProcess):
            def _serve(self, handler_table):     # registered: let the next slave connect
                released.append(window.release())
                return super()._serve(handler_table)

        try:
            PacedSlave(label, address, watchdog, hard_exit=False, wait=True, wait_timeout=60).start(handlers)
        finally:
            if not released:
                window.release()

    def light_slave(keeper=None, on_registered=None, relay_link=None):
        """A slave speaking the protocol directly; ``keeper``: the id of the keeper that
        beats its heart (then it sends no heartbeat of its own); ``relay_link``: its link
        to the keeper's relay, which carries its exchanges (``--kind relay``)."""
        from scientific_ms.wire.client import MasterConnection
        from scientific_ms.wire.payload import dumps_value, loads_parameters
        from scientific_ms.wire.protocol import OK, TERMINATED
        host, port = address.rsplit(":", 1)
        info = {"pid": os.getpid()} if keeper is None else {"pid": os.getpid(), "agent": keeper}
        if keeper is not None:
            worker_window.acquire()
        try:
            if relay_link is not None:   # no connection of its own: everything through the keeper
                from scientific_ms.slave.relayed import RelayedConnection, RelayLink
                connection = RelayedConnection(RelayLink(relay_link, (host, int(port),
                                                                      os.environb[b"SCIENTIFIC_MS_SECRET"])))
            else:
                connection = MasterConnection(host, int(port), os.environb[b"SCIENTIFIC_MS_SECRET"], label,
                                              timeout=30)
            status, process_id = connection.call("register", "slave", info,
                                                 sorted(name[3:] for name in handlers), watchdog)
        finally:
            (window if keeper is None else worker_window).release()
        if on_registered is not None:
            on_registered(process_id if status == OK else None)
        if status != OK:
            return

        def alive():
            """The heartbeat (agent_watch of itself, not waiting); False once the job ended."""
            if keeper is not None:
                return True
            return connection.call("agent_watch", process_id, [(process_id, {})], 0.0)[0] != TERMINATED

        if relay_link is not None:
            from scientific_ms import settings
            from scientific_ms.wire.protocol import Answer

            def exchange(answers):
                # Idle, it waits as a real worker's feed does (its keeper beats its heart).
                wait = settings.POLL_SECONDS * random.uniform(0.8, 1.2)
                return connection.exchange(process_id, [Answer(*answer) for answer in answers], 1, wait)
        else:
            def exchange(answers):
                return connection.call("exchange", process_id, answers, 1, watchdog / 2)

        answers = []
        while True:
            # One exchange per heartbeat period at most; a heartbeat of its own while
            # a task holds this thread.
            status, tasks, _revoked = exchange(answers)
            answers = []
            if status == TERMINATED:
                break
            for task_id, assignment, tag, payload, *_rest in tasks:   # then time limit, GPU ids
                parameters = loads_parameters(payload, None)
                if tag == "hold":
                    while not release.wait(watchdog / 2):
                        if not alive():
                            return
                    result = (os.getpid(), threading.get_ident())
                else:
                    result = handlers["do_" + tag](*parameters)
                answers.append((task_id, assignment, True, dumps_value(result), ""))
            if not alive():
                break
        connection.close()

    def light_agent(size, relayed=False):
        """A keeper of ``size`` light workers (threads here, processes in a real keeper):
        it registers as "agent" and beats all their hearts in one ``agent_watch``;
        ``relayed``: it carries their exchanges with the keeper's relay (``slave/relay.py``)."""
        from scientific_ms.wire.client import MasterConnection
        from scientific_ms.wire.protocol import OK, TERMINATED
        host, port = address.rsplit(":", 1)
        secret = os.environb[b"SCIENTIFIC_MS_SECRET"]
        try:
            main = MasterConnection(host, int(port), secret, label, timeout=30)
            status, keeper_id = main.call("register", "agent", {"pid": os.getpid()}, None, None)
            ids: list = []
            registered = threading.Condition()

            def on_registered(process_id):
                with registered:
                    ids.append(process_id)
                    registered.notify_all()

            relay = None
            if relayed and status == OK:
                from scientific_ms.slave.relay import ExchangeRelay
                relay = ExchangeRelay(main.duplicate)
                relay.start()
            workers = []
            for index in range(size if status == OK else 0):
                link = None
                if relay is not None:
                    ours, link = relay.pair()
                    relay.add(ours, index + 1)
                workers.append(threading.Thread(target=light_slave, args=(keeper_id, on_registered, link)))
            watch = main.duplicate() if status == OK else None
            for worker in workers:
                worker.start()
            # As a real keeper does, beat for each worker from its registration on: briefly
            # while some are still registering, then once per period.
            while watch is not None:
                with registered:
                    starting = len(ids) < len(workers)
                    beats = [(process_id, {}) for process_id in ids if process_id is not None]
                period = 0.1 if starting else watchdog * random.uniform(0.75, 1.0)
                if watch.call("agent_watch", keeper_id, beats, period)[0] == TERMINATED or not starting:
                    break
        finally:
            window.release()
        if status != OK or watch is None:
            return
        while True:
            status, _ = watch.call("agent_watch", keeper_id, beats, watchdog * random.uniform(0.75, 1.0))
            if status == TERMINATED:
                break
        for worker in workers:
            worker.join()
        if relay is not None:
            relay.stop()
        watch.close()
        main.close()

    if kind in ("agent", "relay"):
        sizes = [per_agent] * (count // per_agent) + ([count % per_agent] if count % per_agent else [])
        bodies = [lambda size=size: light_agent(size, kind == "relay") for size in sizes]
    else:
        body = real_slave if kind == "real" else light_slave
        bodies = [body] * count

    def run(body):
        try:
            body()
            with lock:
                finished[0] += 1
        except BaseException as error:   # counted and reported below
            with lock:
                errors.append(repr(error))

    def read_commands():
        for line in sys.stdin:
            if line.strip() == "release":
                release.set()

    threading.Thread(target=read_commands, daemon=True).start()
    threads = []
    for body in bodies:
        window.acquire()
        thread = threading.Thread(target=run, args=(body,))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    print(f"{kind} threads finished cleanly: {finished[0]} of {len(bodies)}; errors: {len(errors)}", flush=True)
    for error in errors[:5]:
        print("  ", error, flush=True)
    return 0 if finished[0] == len(bodies) else 1


# ---------------------------------------------------------------------------- master side


def slave_command(port: int, count: int, kind: str, watchdog: float, label: str = LABEL,
                  stack_kib: int = 256, start_window: int = 16, per_agent: int = 64) -> list:
    return [sys.executable, str(Path(__file__).resolve()), "slaves", f"127.0.0.1:{port}", str(count),
            "--kind", kind, "--watchdog", str(watchdog), "--label", label,
            "--stack-kib", str(stack_kib), "--start-window", str(start_window), "--per-agent", str(per_agent)]


def _cpu_seconds(process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _wait(predicate, timeout: float, what: str, pause: float = 0.05):
    deadline = time.monotonic() + timeout
    ticker = threading.Event()
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        ticker.wait(pause)


def run_load(master, spawn, *, slaves: int = 1000, processes: int = 4, kind: str = "real",
             watchdog: float = 1.0, hold: float = 6.0, short_tasks: int = 0,
             stack_kib: int = 256, start_window: int = 16, deadline: float = 100.0,
             strict: bool = True, log=print, per_agent: int = 64, idle: float = 0.0) -> dict:
    """Drive one load run against ``master`` (a MasterProcess in this process).

    ``spawn(args, env)`` starts a subprocess with stdin=PIPE and returns the
    Popen. ``idle``: seconds every slave stays idle (polling for work) before the held
    tasks are requested. Returns the figures; with ``strict``, raises AssertionError when
    a guarantee fails (otherwise the figures say so).
    """
    import psutil

    me = psutil.Process()
    started = time.monotonic()
    end_by = started + deadline
    figures = {"slaves": slaves, "processes": processes, "kind": kind, "watchdog_period": watchdog,
               "rss_before": me.memory_info().rss, "threads_before": me.num_threads(),
               "cpu_before": _cpu_seconds(me)}
    manager = master.task_manager
    per_process = [slaves // processes + (1 if i < slaves % processes else 0) for i in range(processes)]
    env = {"SCIENTIFIC_MS_SECRET": master.secret.decode()}
    children = [spawn(slave_command(master.port, n, kind, watchdog, master.label, stack_kib, start_window,
                                    per_agent), env)
                for n in per_process]
    figures["agents"] = sum(-(-n // per_agent) for n in per_process) if kind in ("agent", "relay") else 0

    # Watch the heartbeats through every phase: the worst silence of any
    # slave, and when (if ever) one was declared dead.
    phase_name = ["connect"]
    worst = {}
    losses = []
    stop_monitor = threading.Event()

    def monitor():
        while not stop_monitor.wait(0.5):
            name = phase_name[0]
            worst[name] = max(worst.get(name, 0.0), manager.longest_silence())
            lost = manager.counters["processes_lost"]
            if lost and (not losses or losses[-1][2] != lost):
                losses.append((round(time.monotonic() - started, 2), name, lost))

    monitor_thread = threading.Thread(target=monitor, name="load-monitor", daemon=True)
    monitor_thread.start()

    def remaining():
        return max(1.0, end_by - time.monotonic())

    _wait(lambda: manager.slave_count == slaves or any(c.poll() is not None for c in children),
          remaining(), f"{slaves} slaves to register")
    if manager.slave_count != slaves:
        raise AssertionError(f"a slave process ended early (codes {[c.poll() for c in children]})")
    figures["connect_seconds"] = time.monotonic() - started
    log(f"{slaves} slaves registered in {figures['connect_seconds']:.1f} s")

    if idle:   # every slave idle, polling for work: what that alone costs the master
        relayed, cpu_idle, idle_started = manager.counters["relayed_exchanges"], _cpu_seconds(me), time.monotonic()
        time.sleep(idle)
        idle_seconds = time.monotonic() - idle_started
        figures["idle_cpu_percent"] = 100 * (_cpu_seconds(me) - cpu_idle) / idle_seconds
        figures["idle_relayed_per_second"] = (manager.counters["relayed_exchanges"] - relayed) / idle_seconds
        log(f"idle for {idle_seconds:.1f} s: master CPU {figures['idle_cpu_percent']:.1f} % of one core, "
            f"{figures['idle_relayed_per_second']:.0f} relayed exchanges per second")

    # Phase 1: one task per slave, held until every slave holds one.
    relayed = manager.counters["relayed_exchanges"]
    phase = time.monotonic()
    cpu_phase = _cpu_seconds(me)
    hold_limit = hold + deadline
    task_ids = {master.requestTask("hold", i, hold_limit) for i in range(slaves)}
    _wait(lambda: sum(manager.counts()["running"].values()) == slaves, remaining(),
          "every slave to hold a task")
    figures["all_holding_seconds"] = time.monotonic() - phase
    figures["all_holding_cpu_seconds"] = _cpu_seconds(me) - cpu_phase
    figures["all_holding_relayed"] = manager.counters["relayed_exchanges"] - relayed
    log(f"all {slaves} slaves hold a task after {figures['all_holding_seconds']:.1f} s")
    # Keep them busy for several watchdog limits: only heartbeats flow now.
    phase_name[0] = "hold"
    hold_started = time.monotonic()
    cpu_hold = _cpu_seconds(me)
    _wait(lambda: losses or time.monotonic() - hold_started >= hold, hold + 5, "the hold", pause=0.1)
    hold_seconds = time.monotonic() - hold_started
    figures["hold_seconds"] = hold_seconds
    figures["hold_cpu_percent"] = 100 * (_cpu_seconds(me) - cpu_hold) / hold_seconds
    figures["rss_holding"] = me.memory_info().rss
    figures["threads_holding"] = me.num_threads()
    figures["connections_holding"] = len(me.net_connections("tcp"))
    phase_name[0] = "release"
    for child in children:
        child.stdin.write(b"release\n")
        child.stdin.flush()
    seen_tasks, seen_slaves = [], set()
    for _ in range(slaves):
        task_id, tag, (pid, thread) = master.retrieveResult("hold", timeout=remaining())
        seen_tasks.append(task_id)
        seen_slaves.add((pid, thread))
    figures["phase1_seconds"] = time.monotonic() - phase
    figures["phase1_cpu_seconds"] = _cpu_seconds(me) - cpu_phase
    figures["distinct_slaves_holding"] = len(seen_slaves)
    assert sorted(seen_tasks) == sorted(task_ids), "a held task's result was lost or duplicated"
    assert len(seen_slaves) == slaves or not strict, (
        f"only {len(seen_slaves)} distinct slaves ran the held tasks; slaves declared dead "
        f"(seconds, phase, count so far): {losses}")

    if short_tasks:
        phase_name[0] = "short"
        phase = time.monotonic()
        cpu_phase = _cpu_seconds(me)
        for i in range(short_tasks):
            master.requestTask("x", i)
        values = sorted(master.retrieveResult("x", timeout=remaining())[2][0] for _ in range(short_tasks))
        assert values == list(range(short_tasks)), "a short task's result was lost or duplicated"
        figures["short_seconds"] = time.monotonic() - phase
        figures["short_cpu_seconds"] = _cpu_seconds(me) - cpu_phase
        figures["short_tasks"] = short_tasks
        log(f"{short_tasks} short tasks in {figures['short_seconds']:.2f} s")

    stop_monitor.set()
    monitor_thread.join()
    figures["worst_heartbeat_silence"] = worst
    figures["losses"] = losses
    status = manager.status()
    figures["processes_lost"] = status["counters"]["processes_lost"]
    figures["duplicates_dropped"] = status["counters"]["duplicates_dropped"]
    figures["idle_slaves"] = sum(1 for p in status["processes"]
                                 if p["role"] == "slave" and p["tasks_done"] < 1)
    figures["rss_peak"] = max(figures["rss_holding"], me.memory_info().rss)
    figures["cpu_total"] = _cpu_seconds(me) - figures["cpu_before"]
    figures["wall_total"] = time.monotonic() - started

    shutdown = time.monotonic()
    master.shutdown()
    codes = []
    for child in children:
        try:
            codes.append(child.wait(timeout=remaining()))
        except subprocess.TimeoutExpired:
            codes.append(None)
    figures["shutdown_seconds"] = time.monotonic() - shutdown
    figures["slave_exit_codes"] = codes
    _wait(lambda: me.num_threads() <= figures["threads_before"] + 2, 15, "the master's threads to end",
          pause=0.1)
    figures["threads_after"] = me.num_threads()
    figures["rss_after"] = me.memory_info().rss
    return figures


def report(figures: dict) -> str:
    mib = 1024 * 1024
    f = figures
    lines = [
        f"{f['slaves']} {f['kind']} slaves in {f['processes']} processes, watchdog period "
        f"{f['watchdog_period']:g} s, {os.cpu_count()} cores, Python {sys.version.split()[0]}",
        f"  connected and registered     {f['connect_seconds']:7.1f} s",
        f"  every slave holding a task   {f['all_holding_seconds']:7.1f} s later "
        f"({f['all_holding_cpu_seconds']:.1f} s master CPU, {f['all_holding_relayed']} relayed exchanges)",
        f"  master during the hold       {f['hold_cpu_percent']:7.1f} % of one core "
        f"(heartbeats only, {f['hold_seconds']:.1f} s)",
        "  worst heartbeat silence      "
        + ", ".join(f"{name} {value:.2f} s" for name, value in f["worst_heartbeat_silence"].items())
        + f" (limit {4 * f['watchdog_period']:g} s)",
        f"  master threads               {f['threads_before']} before, {f['threads_holding']} holding, "
        f"{f['threads_after']} after",
        f"  master TCP connections       {f['connections_holding']} holding",
        f"  master RSS                   {f['rss_before'] / mib:.0f} MiB before, "
        f"{f['rss_holding'] / mib:.0f} MiB holding, {f['rss_peak'] / mib:.0f} MiB peak, "
        f"{f['rss_after'] / mib:.0f} MiB after",
        f"  master CPU                   {f['phase1_cpu_seconds']:.1f} s in the held-task phase "
        f"({f['phase1_seconds']:.1f} s wall), {f['cpu_total']:.1f} s in all ({f['wall_total']:.1f} s wall)",
    ]
    if "short_seconds" in f:
        lines.append(f"  short tasks                  {f['short_seconds']:.2f} s wall, "
                     f"{f['short_cpu_seconds']:.1f} s master CPU")
    lines += [
        f"  slaves wrongly declared dead {f['processes_lost']}; slaves without work {f['idle_slaves']}; "
        f"distinct slaves that ran the held tasks {f['distinct_slaves_holding']}; "
        f"duplicates dropped {f['duplicates_dropped']}"
        + (f"; losses (seconds, phase, count): {f['losses']}" if f["losses"] else ""),
        f"  shutdown: every slave process exited in {f['shutdown_seconds']:.1f} s, codes "
        f"{f['slave_exit_codes']}",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    side = sub.add_parser("slaves", help="the slave side (started by the master side)")
    side.add_argument("address")
    side.add_argument("count", type=int)
    for p in (parser, side):
        p.add_argument("--kind", choices=("real", "light", "agent", "relay"), default="real")
        p.add_argument("--per-agent", type=int, default=64, help="slaves behind each agent (--kind agent)")
        p.add_argument("--watchdog", type=float, default=1.0)
        p.add_argument("--stack-kib", type=int, default=256)
        p.add_argument("--start-window", type=int, default=16)
    side.add_argument("--label", default=LABEL)
    parser.add_argument("--slaves", type=int, default=1000)
    parser.add_argument("--table", default=None, metavar="N,N,...",
                        help="one run per number of slaves, then one table (e.g. 10,100,1000,10000)")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--hold", type=float, default=6.0)
    parser.add_argument("--idle", type=float, default=0.0,
                        help="seconds every slave stays idle before the held tasks (its cost is printed)")
    parser.add_argument("--short-tasks", type=int, default=20000)
    parser.add_argument("--deadline", type=float, default=300.0)
    parser.add_argument("--switch-interval", type=float, default=None,
                        help="sys.setswitchinterval() in the master (CPython's default: 0.005 s)")
    args = parser.parse_args()
    if args.command == "slaves":
        return _serve_slaves(args.address, args.count, args.kind, args.watchdog, args.label,
                             args.stack_kib, args.start_window, args.per_agent)

    import tempfile

    from scientific_ms import MasterProcess

    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    print(f"master: sys.getswitchinterval() = {sys.getswitchinterval():g} s", flush=True)

    os.environ.setdefault("SCIENTIFIC_MS_REGISTRY", tempfile.mkdtemp(prefix="scientific_ms-load-"))
    sizes = [int(size) for size in args.table.split(",")] if args.table else [args.slaves]
    rows = []
    for slaves in sizes:
        master = MasterProcess(LABEL, use_name_server=False, port=0, host="127.0.0.1")
        children = []

        def spawn(command, env, children=children):
            child = subprocess.Popen(command, stdin=subprocess.PIPE, env=dict(os.environ, **env))
            children.append(child)
            return child

        try:
            figures = run_load(master, spawn, slaves=slaves, processes=min(args.processes, slaves),
                               kind=args.kind, watchdog=args.watchdog, hold=args.hold,
                               short_tasks=args.short_tasks, stack_kib=args.stack_kib,
                               start_window=args.start_window, deadline=args.deadline, strict=False,
                               log=lambda text: print(text, flush=True), per_agent=args.per_agent,
                               idle=args.idle)
        finally:
            master.shutdown()
            for child in children:
                if child.poll() is None:
                    child.kill()
                child.wait()
        print(report(figures), flush=True)
        rows.append(figures)
    if len(rows) > 1:
        print(table(rows))
    return 0


def table(rows: list) -> str:
    """One line per run: the figures that show how the master's cost grows with slaves."""
    mib = 1024 * 1024
    head = (f"{'slaves':>7} {'agents':>6} {'CPU/task':>9} {'ratio':>6} {'tasks/s':>8} {'connect':>8} "
            f"{'worst silence':>14} {'RSS':>8} {'threads':>7} {'lost':>5}")
    base = None
    lines = [head]
    for f in rows:
        per_task = f["short_cpu_seconds"] / f["short_tasks"] * 1e6 if f.get("short_tasks") else float("nan")
        base = per_task if base is None else base
        silence = max(f["worst_heartbeat_silence"].values(), default=0.0)
        lines.append(f"{f['slaves']:>7} {f['agents'] or '-':>6} {per_task:>7.1f}us {per_task / base:>5.2f}x "
                     f"{f['short_tasks'] / f['short_seconds']:>8.0f} {f['connect_seconds']:>7.1f}s "
                     f"{silence:>12.2f} s {f['rss_holding'] / mib:>5.0f}MiB {f['threads_holding']:>7} "
                     f"{f['processes_lost']:>5}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
