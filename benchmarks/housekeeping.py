"""Two costs of the master's housekeeping, measured here.

    python benchmarks/housekeeping.py release [--runs 3]
    python benchmarks/housekeeping.py status

``release``: seconds from SIGKILL of an idle slave (watchdog period 60 s,
so its heartbeat long-poll lasts 45-60 s) until the master holds none of
its connections. ``status``: what one ``TaskManager.status()`` costs with
10, 1,000 and 10,000 registered slaves (it holds the manager's lock; the
unserved-tags check in the master reads it at most 1% of the time).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def release(runs: int) -> None:
    import psutil

    from scientific_ms import MasterProcess
    os.environ["SCIENTIFIC_MS_REGISTRY"] = tempfile.mkdtemp()
    master = MasterProcess("release", use_name_server=False, port=0)
    me = psutil.Process()

    def held():
        return [c for c in me.net_connections("tcp")
                if c.laddr and c.laddr.port == master.port and c.status != psutil.CONN_LISTEN]
    try:
        for run in range(runs):
            slave = subprocess.Popen([sys.executable, str(ROOT / "tests" / "slave_script.py"), "release", "60"])
            master.wait_for_slaves(1, timeout=30)
            master.requestTask("pid")
            master.retrieveResult(timeout=30)
            while len(held()) < 2:          # its task and heartbeat connections
                time.sleep(0.05)            # a measurement loop, not synchronisation
            slave.kill()
            slave.wait()
            killed = time.monotonic()
            while held() and time.monotonic() - killed < 120:
                time.sleep(0.05)
            print(f"run {run + 1}: the master released the killed slave's connections "
                  f"{time.monotonic() - killed:.1f} s after SIGKILL", flush=True)
    finally:
        master.shutdown()


def status_cost() -> None:
    from scientific_ms.core.manager import TaskManager
    for slaves in (10, 1000, 10000):
        manager = TaskManager()
        for pid in range(slaves):
            manager.register_process("slave", {"host": "h", "pid": pid}, tags=["work"], watchdog_period=120.0)
        manager.add_task("other", b"x")
        repeat = 20
        started = time.perf_counter()
        for _ in range(repeat):
            manager.status()
        print(f"{slaves:6d} slaves: status() takes {1000 * (time.perf_counter() - started) / repeat:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["release", "status"])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    release(args.runs) if args.what == "release" else status_cost()


if __name__ == "__main__":
    main()
