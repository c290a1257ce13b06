"""Every option read from the environment, in one place.

Each keyword option of the public API falls back to an environment variable
``SCIENTIFIC_MS_<NAME>``; docs/guide/configuration.md lists them. Values are read
when they are needed, so a test or a script may set them at any time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from .errors import ConfigurationError

PREFIX = "SCIENTIFIC_MS_"

#: Pyro's traditional port: a master takes it when it is free.
DEFAULT_PORT = 7766
#: Idle slaves re-ask for work this often (seconds); it bounds how long
#: ``terminationTest`` goes unchecked, nothing else.
POLL_SECONDS = 5.0
#: How long a slave gives a running handler to finish once the master is gone.
ABANDON_GRACE_SECONDS = 0.5
#: How long a slave that got SIGTERM lets a running handler go on before it abandons
#: it (``SCIENTIFIC_MS_TERM_GRACE``; ``slave/departure.py``). SLURM sends SIGKILL
#: ``KillWait`` (default 30 s) after SIGTERM at a job's end; ``--signal=TERM@60`` gives more warning.
TERM_GRACE_SECONDS = 20.0


def raw(name: str) -> Optional[str]:
    """The variable's value, or None when unset or empty."""
    value = os.environ.get(PREFIX + name, "").strip()
    return value or None


def yes_or_no(value: str) -> Optional[bool]:
    """True for 1/true/yes/on, False for 0/false/no/off (any case), None for anything else."""
    word = value.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    return None


def flag(name: str, default: bool) -> bool:
    value = raw(name)
    if value is None:
        return default
    answer = yes_or_no(value)
    if answer is None:
        raise ConfigurationError(f"{PREFIX}{name}={value!r}: expected 1/0, true/false, yes/no or on/off")
    return answer


def number(name: str, default: float, minimum: float = 0.0) -> float:
    value = raw(name)
    if value is None:
        return default
    try:
        result = float(value)
    except ValueError:
        raise ConfigurationError(f"{PREFIX}{name}={value!r} is not a number") from None
    if result < minimum:
        raise ConfigurationError(f"{PREFIX}{name}={value!r} must be >= {minimum:g}")
    return result


def keeper(explicit: Optional[bool] = None) -> bool:
    """Whether a slave started in a main thread gets a keeper process (``slave/keeper.py``):
    ``keeper=`` of SlaveProcess, else ``SCIENTIFIC_MS_KEEPER`` (default on)."""
    return explicit if explicit is not None else flag("KEEPER", True)


def registry_dir() -> Path:
    """Folder of label files (``SCIENTIFIC_MS_REGISTRY``, default ``~/.scientific_ms``)."""
    value = raw("REGISTRY")
    return Path(value).expanduser() if value else Path.home() / ".scientific_ms"


def bind_host() -> str:
    """Interface the master listens on (``SCIENTIFIC_MS_HOST``, default all)."""
    return raw("HOST") or "0.0.0.0"


def advertised_hosts() -> Optional[list]:
    """Addresses the master tells slaves to use (``SCIENTIFIC_MS_ADVERTISE``, comma separated)."""
    value = raw("ADVERTISE")
    return [h.strip() for h in value.split(",") if h.strip()] if value else None


def port(explicit: Optional[int] = None) -> Optional[int]:
    """The master's port: explicit, ``SCIENTIFIC_MS_PORT``, or None (7766 if free, else any)."""
    value = explicit if explicit is not None else raw("PORT")
    if value is None:
        return None
    try:
        result = int(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"port must be a whole number, got {value!r}") from None
    if not 0 <= result <= 65535:
        raise ConfigurationError(f"port must be between 0 and 65535, got {result}")
    return result


def parse_host_port(text: str, default_port: int = DEFAULT_PORT) -> tuple:
    """``"host"``, ``"host:port"`` or ``"[v6]:port"`` -> (host, port)."""
    text = text.strip()
    if not text:
        raise ConfigurationError("empty master address: expected HOST or HOST:PORT")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    if not port_text:
        return host, default_port
    try:
        value = int(port_text)
    except ValueError:
        raise ConfigurationError(f"bad master address {text!r}: port {port_text!r} is not a number") from None
    if not 0 < value <= 65535:
        raise ConfigurationError(f"bad master address {text!r}: port must be 1-65535")
    return host, value


def secret_from_environment(key_file: Optional[str] = None) -> Optional[bytes]:
    """A secret the user set: a key file (argument or ``SCIENTIFIC_MS_KEY_FILE``)
    or ``SCIENTIFIC_MS_SECRET``; None if neither is set."""
    path = key_file or raw("KEY_FILE")
    if path:
        try:
            text = Path(path).expanduser().read_text().strip()
        except OSError as error:
            raise ConfigurationError(f"cannot read the key file {path}: {error.strerror}") from None
        if not text:
            raise ConfigurationError(f"the key file {path} is empty")
        return text.encode()
    value = raw("SECRET")
    return value.encode() if value else None


def use_name_server(requested: bool) -> bool:
    """Name server use: the caller's wish, unless ``SCIENTIFIC_MS_NAME_SERVER=0``."""
    return requested and flag("NAME_SERVER", True)


def debug_requested() -> bool:
    return flag("DEBUG", False)


def malloc_top_pad() -> int:
    """Bytes glibc keeps at the heap top (``SCIENTIFIC_MS_MALLOC_TOP_PAD``, 0 = leave alone)."""
    return int(number("MALLOC_TOP_PAD", 64 * 1024 * 1024))


def relay_workers() -> int:
    """A keeper of at least this many workers carries their exchanges to the master in
    batches on its own connections (``slave/relay.py``; ``SCIENTIFIC_MS_RELAY_WORKERS``,
    0: never)."""
    return int(number("RELAY_WORKERS", 16))


def relay_direct_bytes() -> int:
    """A relayed worker's exchange that carries payloads of at least this many bytes (its
    answers, or the tasks of its last reply) goes on a connection of the worker's own, not
    through its keeper (``slave/relayed.py``; ``SCIENTIFIC_MS_RELAY_DIRECT_BYTES``, 0: never)."""
    return int(number("RELAY_DIRECT_BYTES", 256 * 1024))


def max_connections() -> int:
    """Connections a master serves at once (``SCIENTIFIC_MS_MAX_CONNECTIONS``)."""
    return int(number("MAX_CONNECTIONS", 10000, minimum=8))


def slave_restarts(explicit=None) -> int:
    """How often each spawned slave is replaced when it dies (``SCIENTIFIC_MS_SLAVE_RESTARTS``, 5)."""
    if explicit is not None:
        if isinstance(explicit, bool) or not isinstance(explicit, int) or explicit < 0:
            raise ConfigurationError(f"slave_restarts must be a whole number >= 0, got {explicit!r}")
        return explicit
    return int(number("SLAVE_RESTARTS", 5))


_SIZE_SUFFIXES = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}


def memory_budget(explicit=None) -> int:
    """Bytes of waiting parameters, and of results not yet retrieved, the master holds
    before it makes requests and slaves wait (``SCIENTIFIC_MS_MEMORY_BUDGET``; a number
    of bytes or with K, M, G, T; default a quarter of this machine's memory)."""
    if explicit is None:
        text = raw("MEMORY_BUDGET")
        if text is None:
            import psutil
            return psutil.virtual_memory().total // 4
        where = f"{PREFIX}MEMORY_BUDGET={text!r}"
    else:
        text, where = str(explicit), f"memory_budget={explicit!r}"
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    suffix = value[-1:] if value[-1:] in _SIZE_SUFFIXES and value[-1:] else ""
    try:
        result = int(float(value[:len(value) - len(suffix)]) * _SIZE_SUFFIXES[suffix])
    except ValueError:
        raise ConfigurationError(f"{where}: expected a number of bytes, e.g. 8G or 500M") from None
    if result <= 0:
        raise ConfigurationError(f"{where}: must be more than 0 bytes")
    return result
def journal(explicit=None) -> Optional[str]:
    """The master's journal file (``journal=``, else ``SCIENTIFIC_MS_JOURNAL``; None: no journal)."""
    value = explicit if explicit is not None else raw("JOURNAL")
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise ConfigurationError(f"journal must be a file name, got {value!r}")
    return str(value)


def keep_journal(explicit=None) -> bool:
    """Keep the journal of a job that ended cleanly (``keep_journal=``, ``SCIENTIFIC_MS_KEEP_JOURNAL``, yes)."""
    if explicit is not None:
        return bool(explicit)
    return flag("KEEP_JOURNAL", True)


#: How long a slave waits for a journaled master that vanished to be restarted.
JOURNALED_REJOIN_GRACE = 60.0


def rejoin_grace(explicit=None, journaled: bool = False) -> float:
    """Seconds a slave waits for its vanished master to come back (``rejoin_grace=``,
    ``SCIENTIFIC_MS_REJOIN_GRACE``); default 60 s for a journaled master, else 0."""
    if explicit is not None:
        if isinstance(explicit, bool) or not isinstance(explicit, (int, float)) or explicit < 0:
            raise ConfigurationError(f"rejoin_grace must be a number of seconds >= 0, got {explicit!r}")
        return float(explicit)
    return number("REJOIN_GRACE", JOURNALED_REJOIN_GRACE if journaled else 0.0)


def idle_timeout(explicit=None) -> Optional[float]:
    """Seconds without work after which a slave leaves (``idle_timeout=``, else
    ``SCIENTIFIC_MS_IDLE_TIMEOUT``); None: it never leaves for idleness."""
    if explicit is None:
        text = raw("IDLE_TIMEOUT")
        if text is None:
            return None
        where = f"{PREFIX}IDLE_TIMEOUT={text!r}"
        try:
            value = float(text)
        except ValueError:
            raise ConfigurationError(f"{where}: expected a number of seconds > 0") from None
    else:
        where, value = f"idle_timeout={explicit!r}", explicit
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigurationError(f"{where}: expected a number of seconds > 0 (or None)")
    if not value > 0 or value != value or value == float("inf"):
        raise ConfigurationError(f"{where}: expected a number of seconds > 0")
    return float(value)


def term_grace() -> float:
    """Seconds a slave that got SIGTERM lets its running handler go on
    (``SCIENTIFIC_MS_TERM_GRACE``, default ``TERM_GRACE_SECONDS``)."""
    return number("TERM_GRACE", TERM_GRACE_SECONDS)


#: How a master starts its local slaves (``master/forkserver.py``).
START_METHODS = ("forkserver", "spawn")


def start_method(explicit=None, default: str = "spawn") -> str:
    """``"forkserver"`` (slaves forked from a warm template) or ``"spawn"`` (a fresh
    interpreter each): ``start_method=``, else ``SCIENTIFIC_MS_START_METHOD``, else
    ``default``; where ``os.fork`` is missing, always ``"spawn"``."""
    value = explicit if explicit is not None else raw("START_METHOD") or default
    where = f"start_method={explicit!r}" if explicit is not None else f"{PREFIX}START_METHOD={value!r}"
    if value not in START_METHODS:
        raise ConfigurationError(f"{where}: expected 'forkserver' or 'spawn'")
    return value if hasattr(os, "fork") else "spawn"


def preload(explicit=None) -> Optional[list]:
    """Modules the fork server imports before it forks slaves: ``preload=`` (a list of module
    names), else ``SCIENTIFIC_MS_PRELOAD`` (names separated by commas); None: not given."""
    if explicit is None:
        text = raw("PRELOAD")
        if text is None:
            return None
        explicit, where = [name.strip() for name in text.split(",") if name.strip()], f"{PREFIX}PRELOAD={text!r}"
    else:
        where = f"preload={explicit!r}"
    if not isinstance(explicit, (list, tuple)) or not all(isinstance(name, str) and name.strip() for name in explicit):
        raise ConfigurationError(f"{where}: expected a list of module names, e.g. ['numpy', 'emcee']")
    return [name.strip() for name in explicit]


def slave_output(explicit=None):
    """Where the master shows its slaves' output (``slave_output=``, else
    ``SCIENTIFIC_MS_SLAVE_OUTPUT``): True (its stderr, the default), False (not
    forwarded: each slave prints where it runs), or a file name (appended to)."""
    value = explicit
    where = f"slave_output={explicit!r}"
    if value is None:
        text = raw("SLAVE_OUTPUT")
        if text is None:
            return True
        where = f"{PREFIX}SLAVE_OUTPUT={text!r}"
        answer = yes_or_no(text)
        value = text if answer is None else answer
    if isinstance(value, bool):
        return value
    if isinstance(value, (str, os.PathLike)) and str(value).strip():
        return str(value)
    raise ConfigurationError(f"{where}: give True (the master's stderr), False (off) or a file name")
