#!/usr/bin/env python3
"""A single-node SLURM cluster on this machine, for tests and for trying the recipes.

    python scripts/slurm_cluster.py [--dir DIR] [--cpus N]   # prints: export SLURM_CONF=...; Ctrl-C stops it

Debian's packages (``slurm-wlm`` 22.05, ``munge``, ``libpmix2``, ``libpmix-dev``) are
installed with apt-get when missing, which needs root; so does running the
daemons. Everything else lives under one folder (a temporary one by
default): the munge key, socket and PID file, ``slurm.conf``, the state and
spool folders and the logs. munged, slurmctld and slurmd run in the
foreground as children of this process (no systemd), root is SlurmUser and
SlurmdUser, there is no accounting. The node declares ``--cpus`` CPUs
(default 8, whatever the machine has: ``SlurmdParameters=config_overrides``)
so that a job may run more tasks than there are cores. SLURM's ports
6817/6818 are fixed, so only one such cluster runs at a time; a lock file
(``/tmp/scientific_ms_slurm.lock``) makes a second one wait.

The client commands (sbatch, srun, squeue, ...) need ``SLURM_CONF`` set to
the cluster's ``slurm.conf``: :meth:`SlurmCluster.environment` gives it.
The test suite uses :class:`SlurmCluster` as a fixture (``tests/test_slurm.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

#: libpmix-dev brings the unversioned libpmix.so that SLURM's mpi/pmix plugin opens
#: (``srun --mpi=pmix``); without it slurmd and srun say "can not load PMIx library".
PACKAGES = ("slurm-wlm", "munge", "libpmix2", "libpmix-dev")
LOCK_FILE = "/tmp/scientific_ms_slurm.lock"
PORTS = (6817, 6818)


class ClusterUnavailable(Exception):
    """SLURM cannot be brought up here; the message says why (tests skip with it)."""


def _run(command: List[str], timeout: float = 60.0, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)


def install_packages(timeout: float = 600.0) -> None:
    """``apt-get install`` slurm-wlm, munge and PMIx unless they are already there."""
    if all(shutil.which(name) for name in ("slurmctld", "slurmd", "munged", "sbatch")) and \
            glob.glob("/usr/lib/*/libpmix.so"):
        return
    if os.geteuid() != 0:
        raise ClusterUnavailable("SLURM is not installed and installing it needs root "
                                 f"(apt-get install {' '.join(PACKAGES)})")
    if shutil.which("apt-get") is None:
        raise ClusterUnavailable(f"SLURM is not installed and there is no apt-get to install "
                                 f"{' '.join(PACKAGES)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", *PACKAGES]
    result = _run(install, timeout, env=env)
    if result.returncode != 0:   # maybe the package lists are missing or stale
        _run(["apt-get", "update"], timeout, env=env)
        result = _run(install, timeout, env=env)
    if result.returncode != 0 or shutil.which("slurmctld") is None:
        raise ClusterUnavailable(f"apt-get install {' '.join(PACKAGES)} failed: "
                                 f"{(result.stderr or result.stdout).strip()[-600:]}")


SLURM_CONF = """\
ClusterName=scims
SlurmctldHost={host}({address})
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SlurmdParameters=config_overrides
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
KillWait={kill_wait}
MinJobAge=300
InactiveLimit=0
MessageTimeout=10
SlurmdTimeout=300
SlurmctldTimeout=300
NodeName={host} NodeAddr={address} CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""


class SlurmCluster:
    """munged + slurmctld + slurmd under ``root``; :meth:`stop` reaps every daemon and job."""

    def __init__(self, root: Optional[Path] = None, cpus: int = 8, kill_wait: int = 5):
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="scientific_ms-slurm-"))
        self.cpus = cpus
        self.kill_wait = kill_wait
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge-run" / "munge.socket.2"
        self.daemons: Dict[str, subprocess.Popen] = {}
        self._lock = None
        self.started_at = time.time()

    # ------------------------------------------------------------------ start

    def environment(self) -> Dict[str, str]:
        """Variables the client commands need (``SLURM_CONF``)."""
        return {"SLURM_CONF": str(self.conf)}

    def env(self, **extra) -> Dict[str, str]:
        return dict(os.environ, **self.environment(), **extra)

    def start(self, timeout: float = 60.0) -> "SlurmCluster":
        if os.geteuid() != 0:
            raise ClusterUnavailable("the test SLURM cluster runs its daemons as root; not root here")
        install_packages()
        self._take_lock(timeout)
        try:
            self._write_files()
            self._start_munge(timeout)
            self._start("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
            self._wait(lambda: _run(["scontrol", "ping"], env=self.env()).stdout.count("UP") > 0,
                       timeout, "slurmctld to answer scontrol ping")
            self._start("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", self.host])
            self._wait(self._node_ready, timeout, f"node {self.host} to be idle in sinfo")
        except BaseException:
            self.stop()
            raise
        return self

    def _take_lock(self, timeout: float) -> None:
        self._lock = open(LOCK_FILE, "a")
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ClusterUnavailable(f"another test SLURM cluster holds {LOCK_FILE} "
                                             f"(ports {PORTS[0]}/{PORTS[1]} are fixed)") from None
                time.sleep(0.2)   # waiting for another cluster to stop
        for port in PORTS:
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(("0.0.0.0", port))
                except OSError:
                    raise ClusterUnavailable(f"port {port} is in use: another SLURM runs here") from None

    def _write_files(self) -> None:
        for name, mode in (("state", 0o700), ("spool", 0o755), ("munge-etc", 0o700),
                           ("munge-run", 0o755), ("munge-lib", 0o700)):
            (self.root / name).mkdir(mode=mode, parents=True, exist_ok=True)
            os.chmod(self.root / name, mode)
        os.chmod(self.root, 0o755)
        key = self.root / "munge-etc" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            os.chmod(key, 0o400)
        address = "127.0.0.1"
        self.conf.write_text(SLURM_CONF.format(
            host=self.host, address=address, ctld_port=PORTS[0], slurmd_port=PORTS[1],
            munge_socket=self.munge_socket, root=self.root, cpus=self.cpus, kill_wait=self.kill_wait))

    def _start_munge(self, timeout: float) -> None:
        self._start("munged", [
            "munged", "--foreground", "--force",
            f"--key-file={self.root / 'munge-etc' / 'munge.key'}",
            f"--socket={self.munge_socket}",
            f"--pid-file={self.root / 'munge-run' / 'munged.pid'}",
            f"--log-file={self.root / 'munged.log'}",
            f"--seed-file={self.root / 'munge-lib' / 'munged.seed'}"])
        self._wait(self.munge_socket.exists, timeout, "munged to create its socket")

    def _start(self, name: str, command: List[str]) -> None:
        log = open(self.root / f"{name}.out", "ab")
        self.daemons[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

    def _wait(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            for name, process in self.daemons.items():
                if process.poll() is not None:
                    raise ClusterUnavailable(f"{name} exited with status {process.returncode} while waiting "
                                             f"for {what}:\n{self.log_tail(name)}")
            if time.monotonic() >= deadline:
                raise ClusterUnavailable(f"timed out after {timeout} s waiting for {what}:\n"
                                         + "\n".join(self.log_tail(name) for name in self.daemons))
            time.sleep(0.1)   # polling the daemons' state

    def _node_ready(self) -> bool:
        out = _run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env()).stdout.split()
        return bool(out) and all(state.rstrip("*") in ("idle", "mixed", "allocated") for state in out)

    def log_tail(self, name: str, lines: int = 20) -> str:
        text = ""
        for path in (self.root / f"{name}.out", self.root / f"{name}.log"):
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")
        return f"--- {name}:\n" + "\n".join(text.splitlines()[-lines:])

    # ------------------------------------------------------------------ use

    def run(self, *command: str, timeout: float = 60.0, check: bool = True, **env) -> subprocess.CompletedProcess:
        """Run a client command (sbatch, squeue, ...) with ``SLURM_CONF`` set."""
        result = _run(list(command), timeout, env=self.env(**env))
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def jobs(self) -> Dict[str, str]:
        """``{job id (with _array index): state}`` of every job SLURM still lists."""
        out = self.run("squeue", "-h", "-a", "-r", "-o", "%i %T", check=False).stdout
        return dict(line.split()[:2] for line in out.splitlines() if len(line.split()) >= 2)

    # ------------------------------------------------------------------ stop

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel every job, stop the daemons, kill and reap whatever of theirs is left."""
        if self.daemons.get("slurmctld") is not None and self.daemons["slurmctld"].poll() is None:
            with contextlib.suppress(Exception):
                _run(["scancel", "--full", "-u", "root"], 10, env=self.env())
                deadline = time.monotonic() + min(timeout, 10 + self.kill_wait)
                while self.jobs_running() and time.monotonic() < deadline:
                    time.sleep(0.1)   # polling squeue until the cancelled jobs are gone
        for name in ("slurmd", "slurmctld", "munged"):
            process = self.daemons.pop(name, None)
            if process is None:
                continue
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for pid in self.leftover_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self._lock is not None:
            self._lock.close()   # releases the flock
            self._lock = None

    def jobs_running(self) -> bool:
        try:
            return any(state not in ("COMPLETED", "CANCELLED", "FAILED", "TIMEOUT")
                       for state in self.jobs().values())
        except Exception:
            return False

    def leftover_pids(self) -> List[int]:
        """slurmstepd processes started since this cluster started, and everything below them
        (zombies excepted: they have exited and only wait for init to reap them)."""
        try:
            import psutil
        except ImportError:
            return []
        found = []
        for process in psutil.process_iter(["name", "create_time", "status"]):
            if process.info["name"] == "slurmstepd" and process.info["create_time"] >= self.started_at - 1 \
                    and process.info["status"] != psutil.STATUS_ZOMBIE:
                with contextlib.suppress(psutil.Error):
                    found += [child.pid for child in process.children(recursive=True)
                              if child.status() != psutil.STATUS_ZOMBIE]
                found.append(process.pid)
        return found


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="folder for the cluster's files (default: a new temporary one)")
    parser.add_argument("--cpus", type=int, default=8, help="CPUs the node declares (default 8)")
    args = parser.parse_args(argv)
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    for signum in stop_signals:   # a background job starts with SIGINT ignored
        signal.signal(signum, signal.SIG_DFL)
    cluster = SlurmCluster(args.dir, args.cpus)
    try:
        cluster.start()
        # Blocked only now: the daemons must not inherit a mask that blocks SIGTERM.
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        print(f"export SLURM_CONF={cluster.conf}   # the cluster runs until Ctrl-C", flush=True)
        signal.sigwait(stop_signals)
    except ClusterUnavailable as error:
        print(f"slurm_cluster: {error}", file=sys.stderr)
        return 1
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
