"""How task parameters, results and exceptions are pickled (protocol 5).

Parameters are pickled in the master when the task is requested, so an
unpicklable one fails at ``requestTask``. A :class:`GlobalStateValue`
anywhere inside them is pickled as a reference (a persistent id) and the
slave puts the value in its place, fetched once per slave.

Large buffers travel out of band: a ``bytes``, ``bytearray``,
``memoryview`` or numpy array of at least ``OUT_OF_BAND_BYTES`` is not
copied into the pickle but kept beside it in a :class:`Pickled`, and
``buffers.py`` sends it on the socket as it is. Copies of one large value,
master to handler and result to ``retrieveResult`` (kernel copies into
and out of the socket not counted):

=========================  =======================  ========================
value                      pickling side            unpickling side
=========================  =======================  ========================
bytes; read-only numpy     none (a reference)       none (received into the
array or memoryview                                 very object returned, or
                                                    the bytes it is built on)
bytearray; writable numpy  one: a snapshot, so      none (received into the
array or memoryview        that a change after      bytearray the value is
                           ``requestTask`` (or by   built on)
                           the next handler call)
                           is not sent
=========================  =======================  ========================

A read-only array is sent from its own memory: whoever made it read-only
promises not to change it (through another, writable view) until the
task is done.

(Before, each side made two or three: pickle, marshal, and the joining
of Pyro5's header to the message, or marshal and unpickle.)

Smaller buffers, non-contiguous arrays and object arrays go inside the
pickle as before (one copy each side).
"""

from __future__ import annotations

import functools
import io
import pickle
import traceback as traceback_module
from typing import Any, Callable, List, Optional, Tuple, Union, final

from ..errors import ConfigurationError, RemoteError, SerializationError, TaskRaisedException
from .limits import check_parameters

PROTOCOL = 5

#: Buffers at least this large travel beside the pickle (out of band), smaller ones inside it:
#: below about this size a copy costs less than a buffer's own bookkeeping on the wire.
OUT_OF_BAND_BYTES = 64 * 1024

#: memoryview formats that ``memoryview.cast`` can rebuild on the other side.
_CASTABLE = frozenset("bBhHiIlLqQnNfde?c")


@final   # so that `type(payload) is Pickled` tells the checker the other case is bytes
class Pickled:
    """A pickle (``head``) and the large buffers that travel beside it, in order.

    Each buffer is a ``bytes`` or a read-only ``memoryview`` of format "B"
    (read-only: the value's own memory) or a ``bytearray`` (writable: a
    snapshot, or what was received). ``len()`` is the total size, as the
    memory budget and the size limits count it.
    """

    __slots__ = ("head", "buffers", "size")

    def __init__(self, head: bytes, buffers: List[Union[bytes, bytearray, memoryview]]):
        self.head = head
        self.buffers = buffers
        self.size = len(head) + sum(len(buffer) for buffer in buffers)

    def __len__(self) -> int:
        return self.size

    def __reduce__(self):   # the journal pickles payloads (buffers in band there)
        return Pickled, (self.head, [bytes(b) if type(b) is memoryview else b for b in self.buffers])

    def __repr__(self) -> str:
        return f"Pickled({len(self.head)} bytes + {len(self.buffers)} buffers, {self.size} bytes)"


#: What payload functions return: plain pickled bytes, or a Pickled with buffers beside it.
Payload = Union[bytes, Pickled]


class GlobalStateValue:
    """Placeholder for a value stored once with ``MasterProcess.setGlobalState``.

    Pass it as (or inside) a task parameter; the slave's handler receives
    the value itself.
    """

    __slots__ = ("state_id", "name", "label")

    def __init__(self, state_id: int, name: str):
        self.state_id = state_id
        self.name = name
        self.label = state_label(state_id, name)

    def __repr__(self) -> str:
        return f"GlobalStateValue({self.state_id!r}, {self.name!r})"

    def __reduce__(self):
        return (GlobalStateValue, (self.state_id, self.name))


def state_label(state_id: int, name: str) -> str:
    return f"state_{state_id}_{name}"


def state_placeholder(label: str) -> GlobalStateValue:
    """The GlobalStateValue that :func:`state_label` named ``label``."""
    _, state_id, name = label.split("_", 2)
    return GlobalStateValue(int(state_id), name)


# ---------------------------------------------------------------- out-of-band buffers
#
# numpy arrays hand the pickler a PickleBuffer by themselves (protocol 5);
# bytes and bytearray, which the pickler writes in band, are turned into a
# persistent id holding a PickleBuffer; memoryviews, which pickle cannot
# handle at all, are reduced to a PickleBuffer and their format and shape.
# Every PickleBuffer then reaches _OutOfBandPickler._keep, which takes the
# large ones out of the stream.

_BYTES, _BYTEARRAY = "oob-bytes", "oob-bytearray"   # persistent ids of large bytes and bytearrays


class _OutOfBandPickler(pickle.Pickler):
    """A protocol-5 pickler that keeps large buffers out of the stream, in ``self.buffers``."""

    def __init__(self, file):
        self.buffers: List[Union[bytes, bytearray, memoryview]] = []
        # The callback must not refer to the pickler: a cycle would leave the pickler's memo,
        # which holds PickleBuffers, to the garbage collector, and clearing a memoryview
        # before the PickleBuffer exported from it fails (BufferError, then worse).
        super().__init__(file, PROTOCOL, buffer_callback=functools.partial(_keep, self.buffers))
        self._ids: dict = {}   # id(object) -> its persistent id: an object named twice travels once

    def persistent_id(self, obj: Any):
        kind = type(obj)
        if kind is bytes or kind is bytearray:
            return self._buffer_id(obj)
        return None

    def _buffer_id(self, obj):
        """The persistent id of a large bytes or bytearray (None: a small one, pickled in band)."""
        if len(obj) < OUT_OF_BAND_BYTES:
            return None
        pid = self._ids.get(id(obj))
        if pid is None:   # the pickler memoizes this tuple: a second mention reads the first
            kind = _BYTES if type(obj) is bytes else _BYTEARRAY
            pid = self._ids[id(obj)] = kind, pickle.PickleBuffer(obj)
        return pid

    def reducer_override(self, obj: Any):
        if type(obj) is memoryview:
            return _reduce_memoryview(obj)
        return NotImplemented


def _keep(buffers: list, buffer: pickle.PickleBuffer) -> bool:
    """Keep a large buffer beside the stream (False); a small one goes in band (True)."""
    view = buffer.raw()   # contiguous, format "B"
    if view.nbytes < OUT_OF_BAND_BYTES:
        view.release()
        return True
    if type(view.obj) is bytes and view.nbytes == len(view.obj):
        buffers.append(view.obj)          # immutable: send the object itself
    elif view.readonly:
        buffers.append(view)              # read-only (an array whose flags say so): as it is
    else:
        buffers.append(bytearray(view))  # writable: a snapshot, its owner may change it later
        view.release()
    return False


def _reduce_memoryview(view: memoryview):
    if view.format.lstrip("@") not in _CASTABLE:
        raise TypeError(f"cannot pickle a memoryview of format {view.format!r}: pass the object "
                        f"it views (a numpy array, bytes, bytearray) instead")
    if not view.c_contiguous:
        data = view.tobytes()
        view = memoryview(data if view.readonly else bytearray(data))
    return _rebuild_memoryview, (pickle.PickleBuffer(view), view.format, view.shape)


def _rebuild_memoryview(buffer, format: str, shape: Tuple[int, ...]) -> memoryview:
    flat = memoryview(buffer).cast("B")
    # The stubs accept only literal formats; a format outside _CASTABLE raises at run time.
    if 0 in shape:   # cast() refuses a shape with a zero in it
        return flat.cast(format)  # type: ignore[call-overload]
    return flat.cast(format, shape)  # type: ignore[call-overload]


def _load_buffer(pid: Tuple[str, Any]) -> Any:
    """The bytes or bytearray of an out-of-band persistent id (``buffer`` arrives as that type)."""
    kind, buffer = pid
    if kind == _BYTES:
        return buffer if type(buffer) is bytes else bytes(buffer)
    return buffer if type(buffer) is bytearray else bytearray(buffer)


def _finish(head: bytes, pickler: _OutOfBandPickler) -> Payload:
    return Pickled(head, pickler.buffers) if pickler.buffers else head


def _split(payload: Payload) -> Tuple[bytes, Optional[list]]:
    """(pickle stream, out-of-band buffers or None)."""
    if type(payload) is Pickled:
        return payload.head, payload.buffers
    return payload, None


class _ParameterPickler(_OutOfBandPickler):
    def __init__(self, file, known_state: Optional[Callable[[GlobalStateValue], bool]] = None):
        super().__init__(file)
        self._known_state = known_state

    def persistent_id(self, obj: Any):   # called for every object: one call, no super()
        kind = type(obj)
        if kind is GlobalStateValue:
            if self._known_state is not None and not self._known_state(obj):
                raise ConfigurationError(f"{obj!r} names a global state value that was deleted or never "
                                         f"set (setGlobalState returns the state ids)")
            return obj.label
        if kind is bytes or kind is bytearray:
            return self._buffer_id(obj)
        return None


class _ParameterUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, fetch_state: Callable[[str], Any], buffers: Optional[list]):
        super().__init__(io.BytesIO(data), buffers=buffers)
        self._fetch_state = fetch_state

    def persistent_load(self, pid) -> Any:
        if type(pid) is tuple:
            return _load_buffer(pid)
        return self._fetch_state(pid)


#: Values of these types hold no buffer and no placeholder: parameters and results of only
#: these are pickled without the out-of-band pickler's Python hooks.
_PLAIN = frozenset({int, float, complex, bool, str, type(None)})


class _ResultUnpickler(pickle.Unpickler):
    def persistent_load(self, pid) -> Any:
        return _load_buffer(pid)


def dumps_parameters(tag: str, parameters: Tuple,
                     known_state: Optional[Callable[[GlobalStateValue], bool]] = None) -> Payload:
    """Pickle a task's parameters; the error names the parameter that failed.

    ``known_state`` tells whether a GlobalStateValue names a stored value.
    Returns bytes, or a :class:`Pickled` when large buffers travel beside it.
    """
    if all(type(value) in _PLAIN for value in parameters):
        # No placeholder, no buffer: the C pickler alone, without the Python hooks (the same
        # bytes, in a third of the time of the usual task of a number or two).
        plain = pickle.dumps(parameters, protocol=PROTOCOL)
        check_parameters(tag, len(plain))
        return plain
    buffer = io.BytesIO()
    try:
        pickler = _ParameterPickler(buffer, known_state)
        pickler.dump(parameters)
    except ConfigurationError:
        raise
    except Exception as error:
        culprit = _first_unpicklable(parameters)
        raise SerializationError(
            f"requestTask({tag!r}, ...): parameter {culprit} cannot be pickled "
            f"({type(error).__name__}: {error}); only picklable values can be sent to a slave") from error
    payload = _finish(buffer.getvalue(), pickler)
    check_parameters(tag, len(payload))
    return payload


def _first_unpicklable(parameters: Tuple) -> str:
    for index, value in enumerate(parameters):
        try:
            _ParameterPickler(io.BytesIO()).dump(value)
        except Exception:
            return f"#{index + 1} ({type(value).__name__})"
    return "?"


def loads_parameters(payload: Payload, fetch_state: Callable[[str], Any]) -> Tuple:
    head, buffers = _split(payload)
    return _ParameterUnpickler(head, fetch_state, buffers).load()


def loads_journaled_parameters(payload: Payload) -> Tuple:
    """A task's parameters as requested, GlobalStateValue placeholders left unresolved (``read_journal``)."""
    return loads_parameters(payload, state_placeholder)


def dumps_result(value: Any) -> Payload:
    """Pickle a handler's result for the master, large buffers out of band.

    The out-of-band pickler calls back into Python for every object it
    pickles (about 0.15 us each); a scalar result skips it.
    """
    if type(value) in _PLAIN:
        return pickle.dumps(value, protocol=PROTOCOL)
    buffer = io.BytesIO()
    pickler = _OutOfBandPickler(buffer)
    pickler.dump(value)
    return _finish(buffer.getvalue(), pickler)


def dumps_value(value: Any) -> bytes:
    return pickle.dumps(value, protocol=PROTOCOL)


def loads_value(data: bytes) -> Any:
    """Unpickle a value that this package pickled (shared data, stored code)."""
    return pickle.loads(data)


def dumps_exception(error: BaseException) -> bytes:
    """Pickle an exception so that it will unpickle in the master.

    Exceptions whose constructor takes other arguments than ``args`` often
    pickle fine but fail to unpickle; those, and unpicklable ones, travel
    as a RemoteError carrying the type name and message.
    """
    try:
        data = pickle.dumps(error, protocol=PROTOCOL)
        pickle.loads(data)
        return data
    except Exception:
        return pickle.dumps(RemoteError(f"{type(error).__module__}.{type(error).__qualname__}: {error}"),
                            protocol=PROTOCOL)


def format_exception(error: BaseException) -> str:
    return "".join(traceback_module.format_exception(type(error), error, error.__traceback__))


def loads_answer(payload: Payload, task_id: str) -> Any:
    """Unpickle a result or exception in the master."""
    try:
        if type(payload) is Pickled:
            return _ResultUnpickler(io.BytesIO(payload.head), buffers=payload.buffers).load()
        return pickle.loads(payload)
    except Exception as error:
        raise SerializationError(
            f"the answer to task {task_id} cannot be unpickled in the master "
            f"({type(error).__name__}: {error}); a class defined only in the slave's script (its "
            f"__main__) is unknown here: define it in a module that master and slaves both import") from error


def unreadable_answer(ok: bool, traceback: str, error: Exception) -> Tuple[BaseException, str]:
    """(exception, traceback text) to report for an answer the master cannot unpickle.

    The slave's text survives: an exception becomes a RemoteError carrying
    the slave's message, with the remote traceback; a result, the error
    naming the class that could not be found.
    """
    if not ok and traceback.strip():
        message = traceback.rstrip().splitlines()[-1]
        return (RemoteError(f"{message} (the master cannot rebuild this exception: {error})"), traceback)
    return error, "(no remote traceback: the slave computed the result, the master cannot unpickle it)\n"


def answer_value(payload: Payload, ok: bool, traceback: str, task_id: str, tag: str) -> Any:
    """The result an answer carries, read in the master; for a failed task (``ok`` False) or
    an answer the master cannot unpickle, raises TaskRaisedException (see :func:`unreadable_answer`)."""
    try:
        value = loads_answer(payload, task_id)
    except Exception as error:
        exception, remote_traceback = unreadable_answer(ok, traceback, error)
        raise TaskRaisedException(task_id, tag, exception, remote_traceback) from error
    if not ok:
        raise TaskRaisedException(task_id, tag, value, traceback)
    return value
