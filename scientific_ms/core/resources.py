"""Resources: what a host offers (GPUs, memory, cores), what a task needs, who holds what.

Pure and lock-free, as ``scheduling.py``, whose assignment rules call it
(the manager holds its lock around every call). The rules:

- **Host pools.** A host declares its resources once: the keeper of
  ``task_manager slave LABEL -n N`` (role ``"agent"``) for its N workers,
  which register with ``info["agent"]`` = its id; a lone slave for itself.
  Its :class:`HostPool` is shared by its workers. Defaults: no GPU, the
  memory psutil sees, as many cores as the host has workers.
- **Holding.** A task that needs resources (:class:`Need`) goes only to a
  worker that holds no other task, alone in its batch, so that it starts at
  once: it holds its resources from its assignment until its answer, its
  slave's loss or its requeue (``tasks.TaskTable.move`` releases them when
  it leaves the running state).
- **Cores.** A task needing c cores takes c of its host's core slots; any
  other running task takes one (its worker). A worker whose host has no
  slot free stays idle. A worker whose host lacks only cores for the task at
  the head of the queue waits for them (and the host's other workers take
  no new task meanwhile), so that a many-core task is not starved by small
  ones; a task whose GPUs or memory are taken is passed over for others.
- **Devices.** A task given k GPUs gets k ids from its host's free ones; no
  id is given to two running tasks. The worker sets ``CUDA_VISIBLE_DEVICES``
  and ``SCIENTIFIC_MS_GPUS`` to them around the handler (``slave/running.py``);
  it tells a task that holds resources its cores, and the launcher line of an
  MPI program on that many (``mpi_program.py``).
- **Unmet requests.** A need larger than every connected host's offer is
  reported (:func:`unmet`) in ``show`` and in the master's log (``unserved.py``).
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from .needs import Need, format_bytes, parse_offer
from .tasks import WAITING


class Grant:
    """Resources a running task holds on its host; :meth:`release` gives them back once."""

    __slots__ = ("pool", "need", "gpus")

    def __init__(self, pool: HostPool, need: Need, gpus: Tuple[int, ...]):
        self.pool: Optional[HostPool] = pool
        self.need = need
        self.gpus = gpus

    def release(self) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.give_back(self)


class HostPool:
    """The resources of one host, shared by its workers (see the module docstring)."""

    def __init__(self, key: int, offer: Mapping[str, object], freed: Callable[[], None]):
        self.key = key
        gpus = offer.get("gpu", [])
        self.gpu_ids: Tuple[int, ...] = tuple(gpus) if isinstance(gpus, (list, tuple)) else ()
        memory = offer.get("memory")
        self.memory: Optional[int] = memory if isinstance(memory, int) else None   # None: not known
        cores = offer.get("cores")
        self.cores: Optional[int] = cores if isinstance(cores, int) else None      # None: its workers
        self.workers: List = []            # ProcessRecords of its slaves
        self.free_gpus: List[int] = list(self.gpu_ids)
        self.memory_held = 0
        self.extra_cores = 0               # cores held beyond one per busy worker
        self.waiting_for_cores = None      # the task a worker of it waits for cores for
        self.cores_kept_by = None          # that worker (the reservation ends if it leaves)
        self.keeper_here = False           # its keeper (an agent) is registered: more workers may come
        #: May a plain task be kept from a worker of this host? Read per assignment, so kept as a
        #: plain attribute (:meth:`_retighten`): cores held beyond one per worker, cores declared,
        #: or cores kept for a task that waits for them.
        self.tight = self.cores is not None
        self._freed = freed

    def core_slots(self) -> int:
        return self.cores if self.cores is not None else len(self.workers)

    def _retighten(self) -> None:
        self.tight = bool(self.extra_cores) or self.cores is not None or self.waiting_for_cores is not None

    def keep_cores_for(self, task, proc=None) -> None:
        """The worker ``proc`` of this host waits for cores for ``task`` (None: for none any more)."""
        self.waiting_for_cores = task
        self.cores_kept_by = proc
        self._retighten()

    def busy_cores(self, but=None) -> int:
        """Core slots taken by tasks running on its workers (but the worker ``but``)."""
        return self.extra_cores + sum(1 for w in self.workers if w.running and w is not but)

    def fits_ever(self, need: Need) -> bool:
        return (need.gpu <= len(self.gpu_ids) and (self.memory is None or need.memory <= self.memory)
                and need.cores <= self.core_slots())

    def lacks(self, need: Need, proc) -> Optional[str]:
        """What ``need`` lacks now for the idle worker ``proc``: None, "cores", or "other"."""
        if need.gpu > len(self.free_gpus) or (self.memory is not None and need.memory > self.memory - self.memory_held):
            return "other"
        if self.busy_cores(proc) + need.cores > self.core_slots():
            return "cores"
        return None

    def room_for_plain(self, proc, busy: bool) -> bool:
        """May the worker ``proc`` (``busy``: it holds a task already) get a task that needs
        nothing beyond itself?"""
        waited = self.waiting_for_cores
        if waited is not None:
            if waited.state is WAITING and self.cores_kept_by in self.workers:
                return False   # the host keeps its slots for the task its worker waits for
            self.keep_cores_for(None)
        return busy or self.busy_cores(proc) + 1 <= self.core_slots()

    def take(self, task) -> Grant:
        """``task`` (it has a need) holds its resources here from now on."""
        need = task.need
        gpus = tuple(self.free_gpus[:need.gpu])
        del self.free_gpus[:need.gpu]
        self.memory_held += need.memory
        self.extra_cores += need.cores - 1
        if self.waiting_for_cores is task:
            self.keep_cores_for(None)
        else:
            self._retighten()
        return Grant(self, need, gpus)

    def give_back(self, grant: Grant) -> None:
        self.free_gpus.extend(grant.gpus)
        self.free_gpus.sort()
        self.memory_held -= grant.need.memory
        self.extra_cores -= grant.need.cores - 1
        self._retighten()
        self._freed()

    def in_use(self) -> bool:
        """Did it declare GPUs or cores, or does a running task hold some of it?"""
        return bool(self.gpu_ids) or self.cores is not None or bool(self.memory_held) or bool(self.extra_cores)

    def offer(self) -> Dict[str, object]:
        """What it offers, as ``show`` reports it."""
        return {"gpu": len(self.gpu_ids), "gpu_ids": list(self.gpu_ids), "memory": self.memory,
                "cores": self.core_slots(), "free_gpu_ids": list(self.free_gpus),
                "memory_held": self.memory_held}


class HostPools:
    """Every host's pool by key (its keeper's process id, or a lone slave's own)."""

    def __init__(self):
        self._pools: Dict[int, HostPool] = {}
        #: Called when a task gives resources back (the traffic wakes the slaves waiting for work).
        self.on_free: Callable[[], None] = lambda: None

    def _freed(self) -> None:
        self.on_free()

    def join(self, proc, info: Mapping[str, object]) -> None:
        """Give a registering process its host's pool (an agent makes it; its workers share it)."""
        agent = info.get("agent")
        offer = info.get("resources")
        if proc.tags is None and proc.role != "agent":
            return   # the master: runs nothing, offers nothing
        key = agent if isinstance(agent, int) else proc.process_id
        pool = self._pools.get(key)
        if pool is None:
            offer = parse_offer(offer, f"the resources of {proc.describe()}") if offer else {}
            pool = self._pools[key] = HostPool(key, offer, self._freed)
        if proc.tags is not None:
            pool.workers.append(proc)
        else:
            pool.keeper_here = True
        proc.pool = pool

    def leave(self, proc) -> None:
        """A process left: forget it, and its host's pool once nobody of that host is left."""
        pool = proc.pool
        if pool is None:
            return
        proc.pool = None
        if proc.tags is None:
            pool.keeper_here = False
        elif proc in pool.workers:
            pool.workers.remove(proc)
        if not pool.workers and not pool.keeper_here:
            self._pools.pop(pool.key, None)

    def forget_waiting(self, task) -> None:
        """A waiting task left its queue (cancelled, answered): no host keeps cores for it."""
        for pool in self._pools.values():
            if pool.waiting_for_cores is task:
                pool.keep_cores_for(None)

    def __iter__(self):
        return iter(list(self._pools.values()))


#: What :func:`place` says of a task that needs resources.
TAKE, SKIP, WAIT = "take", "skip", "wait"


def place(pool: Optional[HostPool], task, proc, busy: bool) -> str:
    """May the worker ``proc`` of ``pool`` (``busy``: it holds a task already) take ``task``,
    which has a need? TAKE (its resources are now held: ``task.held``), SKIP (pass its tag
    over: the task goes to an idle worker, or its GPUs or memory are taken or never here),
    or WAIT (only cores lack: the worker takes nothing and its host keeps them for it)."""
    need = task.need
    if busy or pool is None:
        return SKIP
    lack = pool.lacks(need, proc) if pool.fits_ever(need) else "never"
    if lack == "cores":
        pool.keep_cores_for(task, proc)
        return WAIT
    if lack is not None:
        return SKIP
    task.held = pool.take(task)
    return TAKE


def unmet(needs: Mapping[str, Iterable[Need]], pools: Iterable[HostPool]) -> List[Dict[str, str]]:
    """The needs of waiting tasks that no connected host could ever meet, each with the largest
    offer (the most GPUs, memory and cores of any one host; "none" without a host)."""
    hosts = [pool for pool in pools if pool.workers]
    if not hosts:
        return []   # no slave at all: unserved.py says so already
    largest = max(hosts, key=lambda p: (len(p.gpu_ids), p.memory or 0, p.core_slots()))
    report = []
    for tag, tag_needs in needs.items():
        for need in sorted(set(tag_needs)):
            if not any(pool.fits_ever(need) for pool in hosts):
                report.append({"tag": tag, "need": need.describe(),
                               "largest_offer": describe_offer(largest)})
    return report


def describe_offer(pool: HostPool) -> str:
    memory = "memory unknown" if pool.memory is None else f"memory={format_bytes(pool.memory)}"
    return f"gpu={len(pool.gpu_ids)},{memory},cores={pool.core_slots()}"
