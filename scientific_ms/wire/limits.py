"""The largest value one task, result or shared value may carry, checked where it is made.

Every call between a slave and its master is one Pyro5 message, and Pyro5
refuses a message over ``MAX_MESSAGE_SIZE`` (1 GiB by default, set by
``PYRO_MAX_MESSAGE_SIZE``) on the side that sends it and on the side that
receives it: the connection is closed, which reads as a dead slave or a
dead master. Beyond that, Pyro5's header holds the size in 32 bits and
marshal, which carries our bytes, takes no single bytes object over 2 GiB.

So a value is refused where it is pickled, with a message that names the
limit: ``requestTask`` and ``setGlobalState`` in the master, the handler's
result in the slave (which then answers with a SerializationError). A few
MiB are kept for what travels with the value in the same message (a batch
of small tasks, the call's framing).
"""

from __future__ import annotations

from Pyro5 import config as pyro_config

from ..errors import SerializationError
from ..progress import format_bytes

#: Room kept in each message for the rest of a batch and the framing
#: (a batch of tasks is cut at 4 MiB of parameters, see scheduling.BATCH_PAYLOAD_LIMIT).
HEADROOM = 5 * 1024 * 1024

#: Values up to this size never come near any limit.
SMALL = 1024 * 1024


def value_limit() -> int:
    """The largest pickled value (bytes) that fits in one message to or from a slave."""
    return max(1024, int(pyro_config.MAX_MESSAGE_SIZE) - HEADROOM)


def describe_limit() -> str:
    pyro_limit = format_bytes(int(pyro_config.MAX_MESSAGE_SIZE))
    return (f"{format_bytes(value_limit())} (Pyro5's message limit of {pyro_limit}, "
            f"PYRO_MAX_MESSAGE_SIZE, less {format_bytes(HEADROOM)} for the rest of the message)")


def check_parameters(tag: str, size: int) -> None:
    """Refuse task parameters that pickle to more than one message can carry."""
    if size > SMALL and size > value_limit():   # most values are small: skip the lookup
        raise SerializationError(
            f"requestTask({tag!r}, ...): the parameters pickle to {format_bytes(size)}, over the limit of "
            f"{describe_limit()}; pass large values once through setGlobalState(name=value) and "
            f"GlobalStateValue, split them over several tasks, or write them to a file the slaves "
            f"can read and pass its path")


def check_state(name: str, size: int) -> None:
    """Refuse a shared value (setGlobalState) that pickles to more than one message can carry."""
    if size > SMALL and size > value_limit():   # most values are small: skip the lookup
        raise SerializationError(
            f"setGlobalState: {name} pickles to {format_bytes(size)}, over the limit of {describe_limit()}; "
            f"split it into several values, or write it to a file the slaves can read and pass its path")


def check_result(tag: str, size: int) -> None:
    """Refuse, in the slave, a result that pickles to more than one message can carry."""
    if size > SMALL and size > value_limit():   # most values are small: skip the lookup
        raise SerializationError(
            f"the result of do_{tag} pickles to {format_bytes(size)}, over the limit of {describe_limit()}; "
            f"return it in parts (several tasks), or write it to a file and return its path")
