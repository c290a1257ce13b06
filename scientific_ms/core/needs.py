"""What a task needs and what a host offers, as users write them: parsed and checked.

``resources.py`` decides who holds what; this module only reads the words: a
task's ``resources={"gpu": 1, "memory": "8G", "cores": 4}`` (:func:`parse_need`),
a host's ``--resources gpu=2,memory=64G`` or ``SCIENTIFIC_MS_RESOURCES``
(:func:`parse_offer`, :func:`declared`). A slave imports this, not the rules.
"""

from __future__ import annotations

import re
from typing import Dict, Mapping, NamedTuple, Optional

from ..errors import ConfigurationError

_UNITS = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
KINDS = ("gpu", "memory", "cores")
HELP = "give gpu=COUNT or gpu=ID,ID,..., memory=BYTES with K/M/G/T (memory=64G), cores=COUNT"


class Need(NamedTuple):
    """What a task needs while it runs (memory in bytes)."""
    gpu: int = 0
    memory: int = 0
    cores: int = 1

    def describe(self) -> str:
        parts = [f"gpu={self.gpu}"] if self.gpu else []
        if self.memory:
            parts.append(f"memory={format_bytes(self.memory)}")
        if self.cores != 1:
            parts.append(f"cores={self.cores}")
        return ",".join(parts) or "nothing"


def format_bytes(n: int) -> str:
    for unit in "TGMK":
        if n >= _UNITS[unit] and n % _UNITS[unit] == 0:
            return f"{n // _UNITS[unit]}{unit}"
    return f"{n / _UNITS['G']:.1f}G" if n >= _UNITS["G"] else str(n)


def parse_memory(value: object, where: str) -> int:
    """Bytes from ``64G``, ``512M``, ``1.5T`` or a whole number of bytes."""
    if isinstance(value, bool):
        raise ConfigurationError(f"{where}: memory must be bytes or a size like 64G, got {value!r}")
    if isinstance(value, int) and value >= 0:
        return value
    match = _MEMORY.match(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigurationError(f"{where}: memory must be bytes or a size like 64G (units K, M, G, T), "
                                 f"got {value!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def _count(value: object, kind: str, where: str, least: int) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigurationError(f"{where}: {kind} must be a whole number >= {least}, got {value!r} ({HELP})")
    return value


def split_text(text: str, where: str) -> Dict[str, object]:
    """``"gpu=0,1,memory=64G"`` -> {"gpu": ["0", "1"], "memory": "64G"}: a bare item after
    ``gpu=`` is one more GPU id."""
    values: Dict[str, object] = {}
    key = None
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if "=" not in item:
            if key != "gpu":
                raise ConfigurationError(f"{where}: {item!r} is not KIND=VALUE ({HELP})")
            gpu = values["gpu"]
            values["gpu"] = (gpu if isinstance(gpu, list) else [gpu]) + [item]
            continue
        key, _, value = (s.strip() for s in item.partition("="))
        if key not in KINDS:
            raise ConfigurationError(f"{where}: unknown resource {key!r} (known: {', '.join(KINDS)}; {HELP})")
        if key in values:
            raise ConfigurationError(f"{where}: {key} given twice in {text!r}")
        values[key] = value
    return values


def parse_need(resources: object, where: str = "resources") -> Optional[Need]:
    """A task's :class:`Need` from ``{"gpu": 1, "memory": "8G", "cores": 4}`` (or the same as
    text, ``"gpu=1,memory=8G"``); None when it needs nothing beyond its worker."""
    if resources is None:
        return None
    if isinstance(resources, Need):
        return resources if resources != Need() else None
    if isinstance(resources, str):
        resources = split_text(resources, where)
    if not isinstance(resources, Mapping):
        raise ConfigurationError(f"{where} must be a dict like {{'gpu': 1, 'memory': '8G', 'cores': 4}}, "
                                 f"got {resources!r}")
    unknown = sorted(str(key) for key in resources if key not in KINDS)
    if unknown:
        raise ConfigurationError(f"{where}: unknown resource(s) {', '.join(unknown)} (known: {', '.join(KINDS)})")
    need = Need(_count(resources.get("gpu", 0), "gpu", where, 0),
                parse_memory(resources.get("memory", 0), where),
                _count(resources.get("cores", 1), "cores", where, 1))
    return need if need != Need() else None


def parse_offer(resources: object, where: str = "--resources") -> Dict[str, object]:
    """What a host declares, as registration info carries it:
    {"gpu": [ids], "memory": bytes or absent, "cores": count or absent}.

    ``gpu=2``: two GPUs, ids 0 and 1; ``gpu=0,1`` or ``gpu=[2, 3]``: those ids.
    """
    if resources is None:
        return {}
    if isinstance(resources, str):
        resources = split_text(resources, where)
    if not isinstance(resources, Mapping):
        raise ConfigurationError(f"{where} must be text like 'gpu=2,memory=64G' or a dict, got {resources!r}")
    offer: Dict[str, object] = {}
    for key, value in resources.items():
        if key == "gpu":
            if isinstance(value, (list, tuple)):
                ids = [_count(v, "a GPU id", where, 0) for v in value]
                if len(set(ids)) != len(ids):
                    raise ConfigurationError(f"{where}: a GPU id is given twice in {value!r}")
                offer["gpu"] = ids
            else:
                offer["gpu"] = list(range(_count(value, "gpu", where, 0)))
        elif key == "memory":
            offer["memory"] = parse_memory(value, where)
        elif key == "cores":
            offer["cores"] = _count(value, "cores", where, 1)
        else:
            raise ConfigurationError(f"{where}: unknown resource {key!r} (known: {', '.join(KINDS)}; {HELP})")
    return offer


#: The variable ``task_manager slave --resources`` sets for the processes it starts.
VARIABLE = "SCIENTIFIC_MS_RESOURCES"


def declared(explicit: object = None) -> Dict[str, object]:
    """What this host offers, for its registration info: ``explicit`` (a slave's
    ``resources=``), else ``SCIENTIFIC_MS_RESOURCES``; memory defaults to what psutil sees."""
    import os

    import psutil
    if explicit is None:
        text = os.environ.get(VARIABLE, "").strip()
        offer = parse_offer(text, f"{VARIABLE}={text!r}") if text else {}
    else:
        offer = parse_offer(explicit, f"resources={explicit!r}")
    if "memory" not in offer:
        offer["memory"] = int(psutil.virtual_memory().total)
    return offer


def offer_text(resources: object, where: str) -> str:
    """A host's offer (text or dict) checked, as text for ``--resources``."""
    offer = parse_offer(resources, where)
    parts = []
    if "gpu" in offer:
        gpus = offer["gpu"]
        assert isinstance(gpus, list)
        if len(gpus) == 1 and gpus != [0]:
            raise ConfigurationError(f"{where}: one GPU id other than 0 cannot be passed on as text "
                                     f"(gpu=N is a count): give a count, or two ids or more")
        parts.append("gpu=" + (str(len(gpus)) if gpus == list(range(len(gpus))) else ",".join(map(str, gpus))))
    parts += [f"{key}={offer[key]}" for key in ("memory", "cores") if key in offer]
    return ",".join(parts)
