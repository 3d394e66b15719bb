"""ctypes objects in shared memory, under the stdlib's ``multiprocessing.sharedctypes`` names.

``RawValue``/``RawArray`` live in the shared heap (``_heap``: a few memfd
arenas, not a file per value) and are shared with child processes passed as
``Process`` arguments (or inherited through fork).  ``Value``/``Array`` wrap
them with a lock: ``get_lock()``, ``get_obj()``, and ``.value`` / item access
taken under it.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from . import _heap, synchronize
from ._wire.pickling import get_spawning_popen, register

if TYPE_CHECKING:
    from _ctypes import _CData
    from ctypes import _SimpleCData, c_char
    from typing import Protocol, SupportsIndex, TypeAlias

    from .context import BaseContext

    # What ``get_lock()`` returns, as typeshed says (any object with ``acquire`` and
    # ``release`` works at run time).
    _LockLike: TypeAlias = "synchronize.Lock | synchronize.RLock"

    class _AcquireFunc(Protocol):
        # Keywords work too (typeshed makes both positional-only).
        def __call__(self, block: bool = True, timeout: float | None = None) -> bool: ...


_T = TypeVar("_T")
_CT = TypeVar("_CT", bound="_CData")

__all__ = (
    "Array",
    "RawArray",
    "RawValue",
    "Synchronized",
    "SynchronizedArray",
    "SynchronizedBase",
    "SynchronizedString",
    "Value",
    "copy",
    "synchronized",
)

typecode_to_type: dict[str, type[_SimpleCData[Any]]] = {
    "c": ctypes.c_char,
    "u": ctypes.c_wchar,
    "b": ctypes.c_byte,
    "B": ctypes.c_ubyte,
    "h": ctypes.c_short,
    "H": ctypes.c_ushort,
    "i": ctypes.c_int,
    "I": ctypes.c_uint,
    "l": ctypes.c_long,
    "L": ctypes.c_ulong,
    "q": ctypes.c_longlong,
    "Q": ctypes.c_ulonglong,
    "f": ctypes.c_float,
    "d": ctypes.c_double,
}


def _ctype(typecode_or_type: Any) -> Any:
    if isinstance(typecode_or_type, str):
        try:
            return typecode_to_type[typecode_or_type]
        except KeyError:
            raise TypeError(
                f"unknown type code {typecode_or_type!r}: expected one of "
                f"{''.join(typecode_to_type)} or a ctypes type"
            ) from None
    try:
        ctypes.sizeof(typecode_or_type)
    except TypeError:
        raise TypeError(f"{typecode_or_type!r} is neither a type code nor a ctypes type") from None
    return typecode_or_type


def _new_value(type_: Any) -> Any:
    block = _heap.malloc(ctypes.sizeof(type_))  # zeroed
    return _rebuild_ctype(type_, block, None)


def _rebuild_ctype(type_: Any, block: _heap.Block, length: int | None) -> Any:
    if length is not None:
        type_ = type_ * length
    register(type_, _reduce_ctype)
    obj = type_.from_buffer(block.arena.buffer, block.offset)
    obj._block = block  # keeps the memory allocated while the object lives
    return obj


def _reduce_ctype(obj: Any) -> Any:
    block = getattr(obj, "_block", None)
    if block is None:  # an ordinary ctypes object of a type we registered
        return obj.__reduce_ex__(2)
    _check_spawning(obj)
    if isinstance(obj, ctypes.Array):
        return _rebuild_ctype, (obj._type_, block, obj._length_)
    return _rebuild_ctype, (type(obj), block, None)


def _check_spawning(obj: object) -> None:
    if get_spawning_popen() is None:
        raise RuntimeError(
            f"{type(obj).__name__} objects should only be shared between processes through "
            "inheritance: pass it as an argument of Process(...) (or to a Pool initializer)"
        )


@overload
def RawValue(typecode_or_type: type[_CT], *args: Any) -> _CT: ...
@overload
def RawValue(typecode_or_type: str, *args: Any) -> Any: ...
def RawValue(typecode_or_type: str | type[_CData], *args: Any) -> Any:
    """A ctypes object in shared memory, without a lock."""
    obj = _new_value(_ctype(typecode_or_type))
    obj.__init__(*args)
    return obj


@overload
def RawArray(
    typecode_or_type: type[_CT], size_or_initializer: int | Sequence[Any]
) -> ctypes.Array[_CT]: ...
@overload
def RawArray(typecode_or_type: str, size_or_initializer: int | Sequence[Any]) -> Any: ...
def RawArray(typecode_or_type: str | type[_CData], size_or_initializer: int | Sequence[Any]) -> Any:
    """A ctypes array in shared memory (zeroed, or filled from a sequence), without a lock."""
    type_ = _ctype(typecode_or_type)
    if isinstance(size_or_initializer, int):
        if size_or_initializer < 0:
            raise ValueError(f"array size must be >= 0 (got {size_or_initializer})")
        return _new_value(type_ * size_or_initializer)
    values = list(size_or_initializer)
    result = _new_value(type_ * len(values))
    result.__init__(*values)
    return result


def _lock_for(lock: Any, ctx: Any) -> Any:
    if lock in (True, None):
        # Our locks work under every start method, so the context does not matter.
        return synchronize.RLock(ctx=ctx)
    if not hasattr(lock, "acquire"):
        raise AttributeError(f"{lock!r} has no method 'acquire'")
    return lock


@overload
def Value(
    typecode_or_type: type[_CT], *args: Any, lock: Literal[False], ctx: BaseContext | None = None
) -> _CT: ...
@overload
def Value(
    typecode_or_type: type[_CT],
    *args: Any,
    lock: Literal[True] | _LockLike = True,
    ctx: BaseContext | None = None,
) -> SynchronizedBase[_CT]: ...
@overload
def Value(
    typecode_or_type: str,
    *args: Any,
    lock: Literal[True] | _LockLike = True,
    ctx: BaseContext | None = None,
) -> SynchronizedBase[Any]: ...
@overload
def Value(
    typecode_or_type: str | type[_CData],
    *args: Any,
    lock: bool | _LockLike = True,
    ctx: BaseContext | None = None,
) -> Any: ...
def Value(
    typecode_or_type: str | type[_CData],
    *args: Any,
    lock: bool | _LockLike = True,
    ctx: BaseContext | None = None,
) -> Any:
    """A synchronized shared ctypes object (``lock=False``: the raw object)."""
    obj = RawValue(typecode_or_type, *args)
    if lock is False:
        return obj
    return synchronized(obj, _lock_for(lock, ctx), ctx=ctx)


# typeshed says ``lock=False`` gives ``_CT``: it is the raw ``ctypes.Array[_CT]``.
@overload
def Array(
    typecode_or_type: type[_CT],
    size_or_initializer: int | Sequence[Any],
    *,
    lock: Literal[False],
    ctx: BaseContext | None = None,
) -> ctypes.Array[_CT]: ...
@overload
def Array(
    typecode_or_type: type[c_char],
    size_or_initializer: int | Sequence[Any],
    *,
    lock: Literal[True] | _LockLike = True,
    ctx: BaseContext | None = None,
) -> SynchronizedString: ...
@overload
def Array(
    typecode_or_type: type[_SimpleCData[_T]],
    size_or_initializer: int | Sequence[Any],
    *,
    lock: Literal[True] | _LockLike = True,
    ctx: BaseContext | None = None,
) -> SynchronizedArray[_T]: ...
@overload
def Array(  # "c" is c_char: a SynchronizedString (typeshed: SynchronizedArray[Any])
    typecode_or_type: Literal["c"],
    size_or_initializer: int | Sequence[Any],
    *,
    lock: Literal[True] | _LockLike = True,
    ctx: BaseContext | None = None,
) -> SynchronizedString: ...
@overload
def Array(
    typecode_or_type: str,
    size_or_initializer: int | Sequence[Any],
    *,
    lock: Literal[True] | _LockLike = True,
    ctx: BaseContext | None = None,
) -> SynchronizedArray[Any]: ...
@overload
def Array(
    typecode_or_type: str | type[_CData],
    size_or_initializer: int | Sequence[Any],
    *,
    lock: bool | _LockLike = True,
    ctx: BaseContext | None = None,
) -> Any: ...
def Array(
    typecode_or_type: str | type[_CData],
    size_or_initializer: int | Sequence[Any],
    *,
    lock: bool | _LockLike = True,
    ctx: BaseContext | None = None,
) -> Any:
    """A synchronized shared ctypes array (``lock=False``: the raw array)."""
    obj = RawArray(typecode_or_type, size_or_initializer)
    if lock is False:
        return obj
    return synchronized(obj, _lock_for(lock, ctx), ctx=ctx)


def copy(obj: _CT) -> _CT:
    """A new shared object with the same type and contents as ``obj``."""
    new_obj: _CT = _new_value(type(obj))
    ctypes.pointer(new_obj)[0] = obj
    return new_obj


@overload
def synchronized(
    obj: _SimpleCData[_T], lock: _LockLike | None = None, ctx: Any = None
) -> Synchronized[_T]: ...
@overload
def synchronized(
    obj: ctypes.Array[c_char], lock: _LockLike | None = None, ctx: Any = None
) -> SynchronizedString: ...
@overload
def synchronized(
    obj: ctypes.Array[_SimpleCData[_T]], lock: _LockLike | None = None, ctx: Any = None
) -> SynchronizedArray[_T]: ...
@overload
def synchronized(
    obj: _CT, lock: _LockLike | None = None, ctx: Any = None
) -> SynchronizedBase[_CT]: ...
def synchronized(obj: Any, lock: _LockLike | None = None, ctx: Any = None) -> Any:
    """Wrap a shared ctypes object so attribute and item access take ``lock``."""
    if isinstance(obj, SynchronizedBase):
        raise TypeError(f"object already synchronized: {obj!r}")
    if isinstance(obj, ctypes._SimpleCData):
        return Synchronized(obj, lock, ctx)
    if isinstance(obj, ctypes.Array):
        if obj._type_ is ctypes.c_char:
            return SynchronizedString(obj, lock, ctx)
        return SynchronizedArray(obj, lock, ctx)
    cls = type(obj)
    scls = _class_cache.get(cls)
    if scls is None:
        fields = {name: _locked_property(name) for name, *_ in cls._fields_}
        scls = type("Synchronized" + cls.__name__, (SynchronizedBase,), fields)
        _class_cache[cls] = scls
    return scls(obj, lock, ctx)


_class_cache: dict[type, type] = {}


# The accessors take the lock through the bound methods (C calls on the compiled
# path), not ``with self._lock``: its __enter__/__exit__ are two Python frames,
# which cost more than the lock itself.


def _locked_property(name: str) -> property:
    if name == "value":
        return _VALUE  # (the common one, written out: getattr() costs a call)

    def fget(self: SynchronizedBase[Any]) -> Any:
        self.acquire()
        try:
            return getattr(self._obj, name)
        finally:
            self.release()

    def fset(self: SynchronizedBase[Any], value: Any) -> None:
        self.acquire()
        try:
            setattr(self._obj, name, value)
        finally:
            self.release()

    return property(fget, fset, doc=f"``{name}`` of the wrapped object, under the lock")


def _get_value(self: SynchronizedBase[Any]) -> Any:
    self.acquire()
    try:
        return self._obj.value
    finally:
        self.release()


def _set_value(self: SynchronizedBase[Any], value: Any) -> None:
    self.acquire()
    try:
        self._obj.value = value
    finally:
        self.release()


_VALUE = property(_get_value, _set_value, doc="``value`` of the wrapped object, under the lock")


class SynchronizedBase(Generic[_CT]):
    """A shared ctypes object and the lock that guards it."""

    acquire: _AcquireFunc
    release: Callable[[], None]

    def __init__(self, obj: Any, lock: _LockLike | None = None, ctx: Any = None) -> None:
        self._obj: _CT = obj
        self._lock: _LockLike = lock if lock else _lock_for(True, ctx)
        self.acquire = self._lock.acquire
        self.release = self._lock.release

    def __enter__(self) -> bool:
        return bool(self._lock.__enter__())

    def __exit__(self, *args: object) -> None:
        self._lock.__exit__(*args)

    def __reduce__(
        self,
    ) -> tuple[Callable[[Any, _LockLike], SynchronizedBase[Any]], tuple[_CT, _LockLike]]:
        _check_spawning(self)
        return synchronized, (self._obj, self._lock)

    def get_obj(self) -> _CT:
        """The raw ctypes object (no locking)."""
        return self._obj

    def get_lock(self) -> _LockLike:
        """The lock used by this wrapper."""
        return self._lock

    def __repr__(self) -> str:
        return f"<{type(self).__name__} wrapper for {self._obj}>"


class Synchronized(SynchronizedBase["_SimpleCData[_T]"], Generic[_T]):
    if TYPE_CHECKING:
        value: _T
    else:
        value = _locked_property("value")


class SynchronizedArray(SynchronizedBase["ctypes.Array[_SimpleCData[_T]]"], Generic[_T]):
    def __len__(self) -> int:
        return len(self._obj)

    @overload
    def __getitem__(self, i: SupportsIndex) -> _T: ...
    @overload
    def __getitem__(self, i: slice) -> list[_T]: ...
    def __getitem__(self, i: Any) -> Any:
        self.acquire()
        try:
            return self._obj[i]
        finally:
            self.release()

    @overload
    def __setitem__(self, i: SupportsIndex, value: _T) -> None: ...
    @overload
    def __setitem__(self, i: slice, value: Sequence[_T]) -> None: ...
    def __setitem__(self, i: Any, value: Any) -> None:
        self.acquire()
        try:
            self._obj[i] = value
        finally:
            self.release()

    # Python 2's slice protocol, kept by the stdlib (and typeshed): only called explicitly.
    def __getslice__(self, start: SupportsIndex, stop: SupportsIndex) -> list[_T]:
        return self[start:stop]

    def __setslice__(self, start: SupportsIndex, stop: SupportsIndex, values: Sequence[_T]) -> None:
        self[start:stop] = values


class SynchronizedString(SynchronizedArray[bytes]):
    if TYPE_CHECKING:
        value: bytes
        raw: bytes

        # A c_char array gives bytes for an index and for a slice.
        def __getitem__(self, i: SupportsIndex | slice) -> bytes: ...  # type: ignore[override]
        def __setitem__(self, i: SupportsIndex | slice, value: bytes) -> None: ...  # type: ignore[override]
        def __getslice__(self, start: SupportsIndex, stop: SupportsIndex) -> bytes: ...  # type: ignore[override]
        def __setslice__(  # type: ignore[override]
            self, start: SupportsIndex, stop: SupportsIndex, values: bytes
        ) -> None: ...
    else:
        value = _locked_property("value")
        raw = _locked_property("raw")
