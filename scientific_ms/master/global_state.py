"""Global state: values the master stores once for every task (``setGlobalState``).

Each value is pickled once and kept in the TaskManager's shared data under
``state_label(state_id, name)``; slaves fetch it once. Tasks refer to it with
a :class:`GlobalStateValue` placeholder, which :meth:`GlobalStates.dumps_parameters`
checks against the values stored now; it also says, once per tag, when a task's
parameters are so large that they belong in a global state.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any, Dict, List, Optional, Set, Tuple

from ..core.manager import TaskManager
from ..errors import ConfigurationError
from ..wire.limits import check_state
from ..wire.payload import GlobalStateValue, Payload, dumps_parameters, dumps_value, state_label

log = logging.getLogger(__name__)


class GlobalStates:
    """The values stored with ``setGlobalState``, by state id."""

    def __init__(self, manager: TaskManager):
        self._manager = manager
        self.names: Dict[int, List[str]] = {}   # state id -> the names stored under it
        self._numbers = itertools.count(1)
        self._large_tags: Set[str] = set()   # tags whose large parameters were named already

    def store(self, values: Dict[str, Any]) -> int:
        """Pickle and store ``values``; returns their state id. ConfigurationError if one cannot be."""
        if not values:
            raise ConfigurationError("setGlobalState() needs at least one name=value")
        state_id = next(self._numbers)
        for name, value in values.items():
            try:
                data = dumps_value(value)
            except Exception as error:
                raise ConfigurationError(f"setGlobalState: {name} cannot be pickled ({error})") from error
            check_state(name, len(data))
            self._manager.store_data(state_label(state_id, name), data)
        self.names[state_id] = list(values)
        return state_id

    def delete(self, state_id: int) -> None:
        """Drop the values stored under ``state_id``; ConfigurationError if there are none."""
        try:
            names = self.names.pop(state_id)
        except KeyError:
            raise ConfigurationError(f"no global state with id {state_id!r}") from None
        for name in names:
            self._manager.delete_data(state_label(state_id, name))

    def is_stored(self, value: GlobalStateValue) -> bool:
        """Whether ``value`` names a value stored now."""
        return value.name in self.names.get(value.state_id, ())

    def dumps_parameters(self, tag: str, parameters: tuple, large: Optional[int] = None) -> Tuple[Payload, bool]:
        """A task's parameters pickled, and whether they hold GlobalStateValue placeholders.

        A placeholder naming a value deleted or never stored raises ConfigurationError.
        Parameters over ``large`` bytes get a warning, once per tag.
        """
        if not self.names:   # nothing stored: a placeholder can only be refused
            payload, uses_state = dumps_parameters(tag, parameters, self.is_stored), False
        else:
            placeholders: List[GlobalStateValue] = []

            def known(value: GlobalStateValue) -> bool:
                placeholders.append(value)
                return self.is_stored(value)

            payload, uses_state = dumps_parameters(tag, parameters, known), bool(placeholders)
        if large is not None and len(payload) > large and tag not in self._large_tags:
            self._large_tags.add(tag)
            log.warning("requestTask(%r, ...): the parameters take %.0f MB; each task's copy is held "
                        "by the master until a slave takes it. Values shared by many tasks belong in "
                        "setGlobalState (stored once, fetched once per slave)", tag, len(payload) / 1e6)
        return payload, uses_state
