"""What a ``SyncManager`` serves, and the proxies its clients hold.

The served side: ``Namespace``, ``Value``, ``Array`` (held in the server) and
the objects ``RemoteManager`` shares by name.  The client side: the proxies of
the stdlib's ``multiprocessing.managers`` (``ListProxy``, ``DictProxy``,
``AcquirerProxy``, ...), generic for type checkers as in typeshed.  All are
documented, and pickled by reference, under ``phalanx.managers``, which
re-exports them.
"""

from __future__ import annotations

import array
import queue
import threading
import types
from collections.abc import Callable, Iterable
from typing import Any

from .. import _runtime
from .proxy import BaseProxy, MakeProxyType

TYPE_CHECKING = False
if TYPE_CHECKING:
    import builtins
    import sys
    from collections.abc import Iterator, MutableMapping, MutableSequence
    from typing import Generic, Self, SupportsIndex, TypeVar, overload

    from _typeshed import (
        SupportsKeysAndGetItem,
        SupportsRichComparison,
        SupportsRichComparisonT,
    )

    _T = TypeVar("_T")
    _T1 = TypeVar("_T1")
    _T2 = TypeVar("_T2")
    _KT = TypeVar("_KT")
    _VT = TypeVar("_VT")
    _S = TypeVar("_S")

__all__ = (
    "AcquirerProxy",
    "Array",
    "ArrayProxy",
    "BarrierProxy",
    "BaseListProxy",
    "BasePoolProxy",
    "ConditionProxy",
    "DictProxy",
    "EventProxy",
    "IteratorProxy",
    "ListProxy",
    "Namespace",
    "NamespaceProxy",
    "PoolProxy",
    "Value",
    "ValueProxy",
)


class Namespace:
    """A bag of attributes (its repr hides those starting with ``_``)."""

    def __init__(self, /, **kwds: Any) -> None:
        self.__dict__.update(kwds)

    def __repr__(self) -> str:
        shown = sorted(f"{k}={v!r}" for k, v in self.__dict__.items() if not k.startswith("_"))
        return f"{type(self).__name__}({', '.join(shown)})"

    if TYPE_CHECKING:
        # Any attribute can be set, then read.
        def __getattr__(self, name: str, /) -> Any: ...
        def __setattr__(self, name: str, value: Any, /) -> None: ...


class Value:
    """A value with ``get``/``set`` and a ``value`` property (``lock`` is ignored)."""

    def __init__(self, typecode: Any, value: Any, lock: bool = True) -> None:
        self._typecode = typecode
        self._value = value

    def get(self) -> Any:
        return self._value

    def set(self, value: Any) -> None:
        self._value = value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._typecode!r}, {self._value!r})"

    if TYPE_CHECKING:
        value: Any
    else:
        value = property(get, set)


def Array(typecode: str, sequence: Iterable[Any], lock: bool = True) -> array.array[Any]:
    return array.array(typecode, sequence)


class IteratorProxy(BaseProxy):
    _exposed_ = ("__next__", "send", "throw", "close")

    def __iter__(self) -> IteratorProxy:
        return self

    def __next__(self, *args: Any) -> Any:
        return self._callmethod("__next__", args)

    def send(self, *args: Any) -> Any:
        return self._callmethod("send", args)

    def throw(self, *args: Any) -> Any:
        return self._callmethod("throw", args)

    def close(self, *args: Any) -> Any:
        return self._callmethod("close", args)


class AcquirerProxy(BaseProxy):
    _exposed_: tuple[str, ...] = ("acquire", "release")

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> Any:
        args = (blocking,) if timeout is None else (blocking, timeout)
        return self._callmethod("acquire", args)

    def release(self) -> Any:
        return self._callmethod("release")

    def __enter__(self) -> Any:
        return self._callmethod("acquire")

    def __exit__(self, *exc: object) -> Any:
        return self._callmethod("release")


class ConditionProxy(AcquirerProxy):
    _exposed_ = ("acquire", "release", "wait", "notify", "notify_all")

    def wait(self, timeout: float | None = None) -> Any:
        return self._callmethod("wait", (timeout,))

    def notify(self, n: int = 1) -> Any:
        return self._callmethod("notify", (n,))

    def notify_all(self) -> Any:
        return self._callmethod("notify_all")

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        """Wait until ``predicate()`` is true or ``timeout`` passes; returns its last value."""
        return _runtime.wait_for(self.wait, predicate, timeout)


class EventProxy(BaseProxy):
    _exposed_ = ("is_set", "set", "clear", "wait")

    def is_set(self) -> Any:
        return self._callmethod("is_set")

    def set(self) -> Any:
        return self._callmethod("set")

    def clear(self) -> Any:
        return self._callmethod("clear")

    def wait(self, timeout: float | None = None) -> Any:
        return self._callmethod("wait", (timeout,))


class BarrierProxy(BaseProxy):
    _exposed_ = ("__getattribute__", "wait", "abort", "reset")

    def wait(self, timeout: float | None = None) -> Any:
        return self._callmethod("wait", (timeout,))

    def abort(self) -> Any:
        return self._callmethod("abort")

    def reset(self) -> Any:
        return self._callmethod("reset")

    @property
    def parties(self) -> Any:
        return self._callmethod("__getattribute__", ("parties",))

    @property
    def n_waiting(self) -> Any:
        return self._callmethod("__getattribute__", ("n_waiting",))

    @property
    def broken(self) -> Any:
        return self._callmethod("__getattribute__", ("broken",))


class NamespaceProxy(BaseProxy):
    _exposed_ = ("__getattribute__", "__setattr__", "__delattr__")

    def __getattr__(self, key: str) -> Any:
        if key[0] == "_":
            return object.__getattribute__(self, key)
        callmethod = object.__getattribute__(self, "_callmethod")
        return callmethod("__getattribute__", (key,))

    def __setattr__(self, key: str, value: Any) -> None:
        if key[0] == "_":
            object.__setattr__(self, key, value)
            return
        callmethod = object.__getattribute__(self, "_callmethod")
        callmethod("__setattr__", (key, value))

    def __delattr__(self, key: str) -> None:
        if key[0] == "_":
            object.__delattr__(self, key)
            return
        callmethod = object.__getattribute__(self, "_callmethod")
        callmethod("__delattr__", (key,))


# The proxies below are generic for type checkers only (as in typeshed): at run time
# they are the plain classes of the ``else`` branches (MakeProxyType builds some), and
# ``ValueProxy[int]``, ``ListProxy[int]``, ``DictProxy[str, int]`` are GenericAliases.
if TYPE_CHECKING:

    class ValueProxy(BaseProxy, Generic[_T]):
        def get(self) -> _T: ...
        def set(self, value: _T) -> None: ...

        value: _T

        def __class_getitem__(cls, item: Any, /) -> types.GenericAlias: ...

    class BaseListProxy(BaseProxy, MutableSequence[_T]):
        def __len__(self) -> int: ...
        def __add__(self, x: builtins.list[_T], /) -> builtins.list[_T]: ...
        def __delitem__(self, i: SupportsIndex | slice, /) -> None: ...
        @overload
        def __getitem__(self, i: SupportsIndex, /) -> _T: ...
        @overload
        def __getitem__(self, s: slice, /) -> builtins.list[_T]: ...
        def __getitem__(self, i: SupportsIndex | slice, /) -> _T | builtins.list[_T]: ...
        @overload
        def __setitem__(self, i: SupportsIndex, o: _T, /) -> None: ...
        @overload
        def __setitem__(self, s: slice, o: Iterable[_T], /) -> None: ...
        def __setitem__(self, i: SupportsIndex | slice, o: Any, /) -> None: ...
        def __mul__(self, n: SupportsIndex, /) -> builtins.list[_T]: ...
        def __rmul__(self, n: SupportsIndex, /) -> builtins.list[_T]: ...
        def __imul__(self, value: SupportsIndex, /) -> Self: ...
        def __reversed__(self) -> Iterator[_T]: ...
        def append(self, object: _T, /) -> None: ...
        def extend(self, iterable: Iterable[_T], /) -> None: ...
        def pop(self, index: SupportsIndex = -1, /) -> _T: ...
        def index(
            self, value: _T, start: SupportsIndex = 0, stop: SupportsIndex = sys.maxsize, /
        ) -> int: ...
        def count(self, value: _T, /) -> int: ...
        def insert(self, index: SupportsIndex, object: _T, /) -> None: ...
        def remove(self, value: _T, /) -> None: ...
        @overload
        def sort(
            self: BaseListProxy[SupportsRichComparisonT],
            *,
            key: None = None,
            reverse: bool = False,
        ) -> None: ...
        @overload
        def sort(
            self, *, key: Callable[[_T], SupportsRichComparison], reverse: bool = False
        ) -> None: ...
        def sort(self, *, key: Any = None, reverse: bool = False) -> None: ...

    class ListProxy(BaseListProxy[_T]):
        def __iadd__(self, value: Iterable[_T], /) -> Self: ...  # type: ignore[override]
        def __imul__(self, value: SupportsIndex, /) -> Self: ...  # type: ignore[override]
        def __class_getitem__(cls, item: Any, /) -> types.GenericAlias: ...

    class _BaseDictProxy(BaseProxy, MutableMapping[_KT, _VT]):
        def __len__(self) -> int: ...
        def __getitem__(self, key: _KT, /) -> _VT: ...
        def __setitem__(self, key: _KT, value: _VT, /) -> None: ...
        def __delitem__(self, key: _KT, /) -> None: ...
        def __iter__(self) -> Iterator[_KT]: ...
        def copy(self) -> builtins.dict[_KT, _VT]: ...
        @overload
        def get(self, key: _KT, /) -> _VT | None: ...
        @overload
        def get(self, key: _KT, default: _VT, /) -> _VT: ...
        @overload
        def get(self, key: _KT, default: _T, /) -> _VT | _T: ...
        def get(self, key: _KT, default: Any = None, /) -> Any: ...
        @overload
        def pop(self, key: _KT, /) -> _VT: ...
        @overload
        def pop(self, key: _KT, default: _VT, /) -> _VT: ...
        @overload
        def pop(self, key: _KT, default: _T, /) -> _VT | _T: ...
        def pop(self, key: _KT, /, *default: Any) -> Any: ...
        def keys(self) -> builtins.list[_KT]: ...  # type: ignore[override]
        def items(self) -> builtins.list[tuple[_KT, _VT]]: ...  # type: ignore[override]
        def values(self) -> builtins.list[_VT]: ...  # type: ignore[override]
        # Beyond typeshed before 3.14 (these are proxied on every version here):
        @overload
        def fromkeys(
            self, iterable: Iterable[_T], value: None = None, /
        ) -> builtins.dict[_T, Any | None]: ...
        @overload
        def fromkeys(self, iterable: Iterable[_T], value: _S, /) -> builtins.dict[_T, _S]: ...
        def fromkeys(self, iterable: Iterable[Any], value: Any = None, /) -> Any: ...
        @overload
        def __or__(self, value: builtins.dict[_KT, _VT], /) -> builtins.dict[_KT, _VT]: ...
        @overload
        def __or__(
            self, value: builtins.dict[_T1, _T2], /
        ) -> builtins.dict[_KT | _T1, _VT | _T2]: ...
        def __or__(self, value: Any, /) -> Any: ...
        @overload
        def __ror__(self, value: builtins.dict[_KT, _VT], /) -> builtins.dict[_KT, _VT]: ...
        @overload
        def __ror__(
            self, value: builtins.dict[_T1, _T2], /
        ) -> builtins.dict[_KT | _T1, _VT | _T2]: ...
        def __ror__(self, value: Any, /) -> Any: ...

    class DictProxy(_BaseDictProxy[_KT, _VT]):
        @overload  # type: ignore[override,misc]
        def __ior__(self, value: SupportsKeysAndGetItem[_KT, _VT], /) -> Self: ...
        @overload
        def __ior__(self, value: Iterable[tuple[_KT, _VT]], /) -> Self: ...
        def __ior__(self, value: Any, /) -> Self: ...  # type: ignore[misc]
        def __class_getitem__(cls, item: Any, /) -> types.GenericAlias: ...

    class ArrayProxy(BaseProxy):
        def __len__(self) -> int: ...
        def __getitem__(self, key: Any, /) -> Any: ...
        def __setitem__(self, key: Any, value: Any, /) -> None: ...

    class BasePoolProxy(BaseProxy):
        # A pool's methods, called in the server (the *_async and imap* ones return proxies).
        def apply(self, *args: Any, **kwds: Any) -> Any: ...
        def apply_async(self, *args: Any, **kwds: Any) -> Any: ...
        def close(self) -> None: ...
        def imap(self, *args: Any, **kwds: Any) -> Any: ...
        def imap_unordered(self, *args: Any, **kwds: Any) -> Any: ...
        def join(self) -> None: ...
        def map(self, *args: Any, **kwds: Any) -> Any: ...
        def map_async(self, *args: Any, **kwds: Any) -> Any: ...
        def starmap(self, *args: Any, **kwds: Any) -> Any: ...
        def starmap_async(self, *args: Any, **kwds: Any) -> Any: ...
        def terminate(self) -> None: ...

    class PoolProxy(BasePoolProxy):
        def __enter__(self) -> Self: ...
        def __exit__(self, *exc: object) -> None: ...

else:

    class ValueProxy(BaseProxy):
        _exposed_ = ("get", "set")

        def get(self) -> Any:
            return self._callmethod("get")

        def set(self, value: Any) -> Any:
            return self._callmethod("set", (value,))

        value = property(get, set)

        __class_getitem__: Any = classmethod(types.GenericAlias)

    BaseListProxy = MakeProxyType(
        "BaseListProxy",
        (
            "__add__",
            "__contains__",
            "__delitem__",
            "__getitem__",
            "__len__",
            "__mul__",
            "__reversed__",
            "__rmul__",
            "__setitem__",
            "append",
            "count",
            "extend",
            "index",
            "insert",
            "pop",
            "remove",
            "reverse",
            "sort",
            "__imul__",
        ),
    )

    class ListProxy(BaseListProxy):
        def __iadd__(self, value: Any) -> ListProxy:
            self._callmethod("extend", (value,))
            return self

        def __imul__(self, value: Any) -> ListProxy:
            self._callmethod("__imul__", (value,))
            return self

        __class_getitem__: Any = classmethod(types.GenericAlias)

    _BaseDictProxy = MakeProxyType(
        "_BaseDictProxy",
        (
            "__contains__",
            "__delitem__",
            "__getitem__",
            "__ior__",
            "__iter__",
            "__len__",
            "__or__",
            "__reversed__",
            "__ror__",
            "__setitem__",
            "clear",
            "copy",
            "fromkeys",
            "get",
            "items",
            "keys",
            "pop",
            "popitem",
            "setdefault",
            "update",
            "values",
        ),
    )
    _BaseDictProxy._method_to_typeid_ = {"__iter__": "Iterator"}

    class DictProxy(_BaseDictProxy):
        def __ior__(self, value: Any) -> DictProxy:
            self._callmethod("__ior__", (value,))
            return self

        __class_getitem__: Any = classmethod(types.GenericAlias)

    ArrayProxy = MakeProxyType("ArrayProxy", ("__len__", "__getitem__", "__setitem__"))

    BasePoolProxy = MakeProxyType(
        "PoolProxy",
        (
            "apply",
            "apply_async",
            "close",
            "imap",
            "imap_unordered",
            "join",
            "map",
            "map_async",
            "starmap",
            "starmap_async",
            "terminate",
        ),
    )
    BasePoolProxy._method_to_typeid_ = {
        "apply_async": "AsyncResult",
        "map_async": "AsyncResult",
        "starmap_async": "AsyncResult",
        "imap": "Iterator",
        "imap_unordered": "Iterator",
    }

    class PoolProxy(BasePoolProxy):
        def __enter__(self) -> PoolProxy:
            return self

        def __exit__(self, *exc: object) -> None:
            self.terminate()


# -- RemoteManager's objects shared by name ---------------------------------------------

_named: dict[tuple[str, str], Any] = {}
_named_lock = threading.Lock()


def _get_named(kind: str, factory: Callable[[], Any], name: str) -> Any:
    with _named_lock:
        obj = _named.get((kind, name))
        if obj is None:
            obj = _named[(kind, name)] = factory()
        return obj


def _named_dict(name: str) -> dict[Any, Any]:
    return _get_named("dict", dict, name)  # type: ignore[no-any-return]


def _named_list(name: str) -> list[Any]:
    return _get_named("list", list, name)  # type: ignore[no-any-return]


def _named_queue(name: str) -> queue.Queue[Any]:
    return _get_named("queue", queue.Queue, name)  # type: ignore[no-any-return]


def _named_namespace(name: str) -> Namespace:
    return _get_named("namespace", Namespace, name)  # type: ignore[no-any-return]


def _named_lock_(name: str) -> Any:
    return _get_named("lock", threading.Lock, name)


for _public in (
    AcquirerProxy,
    Array,
    ArrayProxy,
    BarrierProxy,
    BaseListProxy,
    BasePoolProxy,
    ConditionProxy,
    DictProxy,
    EventProxy,
    IteratorProxy,
    ListProxy,
    Namespace,
    NamespaceProxy,
    PoolProxy,
    Value,
    ValueProxy,
    _BaseDictProxy,
):
    _public.__module__ = "phalanx.managers"
