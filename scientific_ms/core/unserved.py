"""The master's own log says why it waits when tasks wait for a slave that can run them.

A task goes only to a slave with a ``do_<tag>`` handler for its tag, and a
task nobody can run waits (a suitable slave may still join); so does a task
that needs more resources than any connected host offers
(``status()["unmet_needs"]``, ``resources.py``). A typo in a
handler's name, or a job started without slaves, would leave the master
silent forever; so the reaper calls :meth:`UnservedTags.check`, which reads
the manager's public status now and then and, once tags have gone unserved
for ``FIRST_WARNING_SECONDS``, logs a warning naming them, the tags the
connected slaves do handle, and how to start a slave. The warning comes
back while the situation lasts, ever less often.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Dict, FrozenSet, Optional

log = logging.getLogger(__name__)

#: How long tags must go unserved before the first warning.
FIRST_WARNING_SECONDS = 5.0
#: Delay before the second warning; each later one waits twice as long, up to the maximum.
REPEAT_SECONDS = 60.0
MAX_REPEAT_SECONDS = 1800.0
#: How often the status is read: every second, but never for more than 1% of the time,
#: since ``status()`` holds the manager's lock (3-9 ms with 1,000 slaves, 40-150 ms with 10,000,
#: on a loaded 2-core machine: ``python benchmarks/housekeeping.py status``).
CHECK_SECONDS = 1.0
MAX_SHARE = 0.01


class UnservedTags:
    """Watches ``status()["unserved_tags"]`` and warns in the log; see the module docstring."""

    def __init__(self, label: str, clock: Callable[[], float] = time.monotonic):
        self.label = label
        self._clock = clock
        self._next_check = 0.0
        self._tags: FrozenSet[str] = frozenset()
        self._next_warning: Optional[float] = None
        self._repeat = REPEAT_SECONDS
        self._warned = False

    def check(self, status: Callable[[], Dict]) -> Optional[str]:
        """Read the status if it is time; log and return the warning if one is due."""
        now = self._clock()
        if now < self._next_check:
            return None
        started = time.perf_counter()
        report = status()
        self._next_check = now + max(CHECK_SECONDS, (time.perf_counter() - started) / MAX_SHARE)
        tags = frozenset(report.get("unserved_tags", ())) | unmet_keys(report) \
            if not report.get("terminated") else frozenset()
        if tags != self._tags:
            if self._warned and not tags:
                log.warning("task manager %r: every waiting task now has a slave that can run it", self.label)
            self._tags, self._warned, self._repeat = tags, False, REPEAT_SECONDS
            self._next_warning = now + FIRST_WARNING_SECONDS if tags else None
        if self._next_warning is None or now < self._next_warning:
            return None
        self._next_warning = now + self._repeat
        self._repeat = min(2 * self._repeat, MAX_REPEAT_SECONDS)
        self._warned = True
        message = describe(self.label, report)
        log.warning("%s", message)
        return message


def unmet_keys(report: Dict) -> FrozenSet[str]:
    """The unmet needs of a status report, each as one string (to see when they change)."""
    return frozenset(f"{entry['tag']} needs {entry['need']}" for entry in report.get("unmet_needs", ()))


def describe_unmet(label: str, report: Dict) -> str:
    """The warning's text for tasks whose resources no connected host offers."""
    lines = [f"task manager {label!r}: tasks wait that need more resources than any connected host offers"]
    for entry in report.get("unmet_needs", ()):
        lines.append(f"  tag {entry['tag']!r} needs {entry['need']}; the largest offer is {entry['largest_offer']}")
    lines.append("  Start slaves on a host that has them, declaring them with\n"
                 f"  'task_manager slave {label} -n N --resources gpu=G,memory=M,cores=C', or ask for less\n"
                 "  (request_task(..., resources=...), set_resources; docs/guide/resources.md)")
    return "\n".join(lines)


def describe(label: str, report: Dict) -> str:
    """The warning's text, from a status report."""
    if not report.get("unserved_tags"):
        return describe_unmet(label, report)
    if report.get("unmet_needs"):
        return describe_tags(label, report) + "\n" + describe_unmet(label, report)
    return describe_tags(label, report)


def describe_tags(label: str, report: Dict) -> str:
    """The warning's text for tags no connected slave handles."""
    waiting = report.get("tasks", {}).get("waiting", {})
    unserved = sorted(report.get("unserved_tags", ()))
    counts = ", ".join(f"{waiting.get(tag, 0)} with tag {tag!r}" for tag in unserved)
    slaves = [proc for proc in report.get("processes", ()) if proc.get("tags") is not None]
    served = sorted({tag for proc in slaves for tag in proc["tags"]})
    if not slaves:
        who = "no slave is connected"
    else:
        who = (f"the {len(slaves)} connected slave(s) handle "
               f"{', '.join(repr(tag) for tag in served) or 'no tag'} (tag T needs a handler do_T)")
    return (f"task manager {label!r}: tasks wait that no connected slave can run\n"
            f"  waiting: {counts}\n"
            f"  {who}\n"
            f"  Start slaves with runJob(..., launch_slaves=N) or launchSlaveJobs(N), or run\n"
            f"  'task_manager slave {label}' (or a script calling startSlaveProcess({label!r}))\n"
            f"  in another shell or on another machine")
