"""Values for the large-data tests, importable by the test and by its slave (numpy optional)."""

try:
    import numpy
except ImportError:   # the numpy tests skip; the rest needs nothing of it
    numpy = None

MB = 1024 * 1024

if numpy is not None:
    class Tagged(numpy.ndarray):
        """An ndarray subclass with an attribute, which pickling must keep."""

        def __array_finalize__(self, obj):
            self.tag = getattr(obj, "tag", None)

        def __reduce_ex__(self, protocol):
            constructor, args, state = super().__reduce_ex__(protocol)[:3]
            return constructor, args, (state, self.tag)

        def __setstate__(self, state):
            state, self.tag = state
            super().__setstate__(state)


def describe(value):
    """(type name, writable or None) of a value as a handler sees it."""
    if numpy is not None and isinstance(value, numpy.ndarray):
        return type(value).__name__, bool(value.flags.writeable)
    if isinstance(value, memoryview):
        return "memoryview", not value.readonly
    return type(value).__name__, isinstance(value, bytearray)


def same(a, b) -> bool:
    """Equal in type, content and layout (numpy: dtype, shape, values, writability, subclass state)."""
    if type(a) is not type(b):
        return False
    if numpy is not None and isinstance(a, numpy.ndarray):
        if a.dtype != b.dtype or a.shape != b.shape or a.flags.writeable != b.flags.writeable:
            return False
        if getattr(a, "tag", None) != getattr(b, "tag", None):
            return False
        if isinstance(a, numpy.ma.MaskedArray):
            return bool((a.mask == b.mask).all()) and a.filled(0).tobytes() == b.filled(0).tobytes()
        if a.dtype == object:
            return a.tolist() == b.tolist()
        return a.tobytes() == b.tobytes()
    if isinstance(a, memoryview):
        return (a.format, a.shape, a.readonly, a.tobytes()) == (b.format, b.shape, b.readonly, b.tobytes())
    return a == b
