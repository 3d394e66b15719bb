"""Managers: Python objects held by a server process, used from others through proxies.

Names and behaviour follow the stdlib's ``multiprocessing.managers``.  The
protocol, the proxies and the server are phalanx's own (see
``_managers.proxy`` and ``_managers.server``): a phalanx client talks to a
phalanx manager, locally over AF_UNIX or remotely over TCP, with the same
mutual HMAC-SHA256 handshake as ``Listener``/``Client`` (nothing is
unpickled before it succeeds).

Beyond the stdlib: a proxy whose server died raises ``ServerGoneError`` (a
``ConnectionError``) instead of hanging or failing obscurely; proxy calls
reuse one connection per thread and server; proxy classes are built without
``exec``.

(Over 800 lines since the proxies gained their type-checker declarations: the
typed proxies and the shared-memory server move out of this module with the
``_managers/`` package, the next step of issue 17.)
"""

from __future__ import annotations

import array
import os
import queue
import signal
import threading
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from . import _start
from . import _util as util
from ._managers.proxy import AutoProxy as AutoProxy
from ._managers.proxy import BaseProxy, Token, _adopt, _channels, dispatch
from ._managers.proxy import MakeProxyType as MakeProxyType
from ._managers.proxy import RebuildProxy as RebuildProxy
from ._managers.proxy import listener_client as listener_client
from ._managers.server import Server as Server
from ._managers.server import public_methods as public_methods
from .errors import ProcessError, ProcessStateError, RemoteError
from .errors import ServerGoneError as ServerGoneError
from .process import AuthenticationString, current_process

TYPE_CHECKING = False
if TYPE_CHECKING:
    import builtins
    import sys
    from collections.abc import Iterator, MutableMapping, MutableSequence
    from typing import Generic, Self, SupportsIndex, TypeAlias, TypeVar, overload

    from _typeshed import (
        SupportsKeysAndGetItem,
        SupportsRichComparison,
        SupportsRichComparisonT,
    )

    from . import pool
    from ._managers.proxy import _Address
    from ._start import Starter
    from .context import BaseContext
    from .shared_memory import ShareableList as _ShareableList
    from .shared_memory import SharedMemory as _SharedMemory

    _T = TypeVar("_T")
    _T1 = TypeVar("_T1")
    _T2 = TypeVar("_T2")
    _KT = TypeVar("_KT")
    _VT = TypeVar("_VT")
    _S = TypeVar("_S")
    # What a ShareableList holds (as typeshed's multiprocessing.shared_memory._SLT).
    _SLT = TypeVar("_SLT", int, float, bool, str, bytes, None)

__all__ = (
    "BaseManager",
    "BaseProxy",
    "RemoteError",
    "SharedMemoryManager",
    "SyncManager",
    "Token",
)

_reexported = (
    AutoProxy,
    MakeProxyType,
    RebuildProxy,
    ServerGoneError,
    listener_client,
    public_methods,
)


def all_methods(obj: Any) -> list[str]:
    """Names of every callable attribute of ``obj``."""
    return [name for name in dir(obj) if callable(getattr(obj, name, None))]


class State:
    __slots__ = ("value",)
    INITIAL = 0
    STARTED = 1
    SHUTDOWN = 2

    value: int

    def __init__(self) -> None:
        self.value = State.INITIAL


class BaseManager:
    """Starts (or connects to) a server process and makes proxies to objects it holds."""

    _registry: dict[str, tuple[Any, Any, Any, Any]] = {}
    _Server: type[Server] = Server
    shutdown: util.Finalize  # set by start(): stops the server process

    def __init__(
        self,
        address: _Address | None = None,
        authkey: bytes | None = None,
        serializer: str = "pickle",
        ctx: BaseContext | None = None,
        *,
        shutdown_timeout: float = 1.0,
    ) -> None:
        if serializer not in listener_client:
            raise ValueError(
                f"unknown serializer {serializer!r}: use one of {sorted(listener_client)}"
            )
        if authkey is None:
            authkey = current_process().authkey
        self._address = address
        self._authkey = AuthenticationString(authkey)
        self._state = State()
        self._serializer = serializer
        self._Listener, self._Client = listener_client[serializer]
        self._ctx: Starter = _start.default.concrete() if ctx is None else ctx
        self._shutdown_timeout = shutdown_timeout
        self._process: Any = None

    def _server_registry(self) -> dict[str, tuple[Any, Any, Any]]:
        # What the server needs: no proxy types (they live on the client side).
        return {typeid: entry[:3] for typeid, entry in self._registry.items()}

    def get_server(self) -> Server:
        """A server object for this manager, to run in this process (``serve_forever``)."""
        self._check_initial()
        return self._Server(
            self._server_registry(), self._address, bytes(self._authkey), self._serializer
        )

    def connect(self) -> None:
        """Use a server that is already running at ``address`` (another process or machine)."""
        dispatch(self._address, self._serializer, bytes(self._authkey), "dummy")
        self._state.value = State.STARTED

    def _check_initial(self) -> None:
        if self._state.value == State.STARTED:
            raise ProcessError(f"Already started server (manager at {self._address!r})")
        if self._state.value == State.SHUTDOWN:
            raise ProcessError("Manager has shut down")
        if self._state.value != State.INITIAL:
            raise ProcessError(f"Unknown state {self._state.value!r}")

    def start(
        self, initializer: Callable[..., object] | None = None, initargs: Iterable[Any] = ()
    ) -> None:
        """Start the server process; returns once it listens."""
        self._check_initial()
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        from ._connection import Pipe

        reader, writer = Pipe(duplex=False)
        self._process = self._ctx.Process(
            target=type(self)._run_server,
            args=(
                self._server_registry(),
                self._address,
                bytes(self._authkey),
                self._serializer,
                writer,
                initializer,
                tuple(initargs),
            ),
        )
        ident = ":".join(str(i) for i in self._process._identity)
        self._process.name = f"{type(self).__name__}-{ident}"
        self._process._ends_with_parent = True  # a server nobody can shut down is an orphan
        self._process.start()
        writer.close()
        try:
            if not reader.poll(60):
                raise ProcessError("the manager's server did not start within 60 s")
            self._address = reader.recv()
        except EOFError:
            self._process.join(5)
            raise ProcessError(
                f"the manager's server process exited during start-up "
                f"(exit code {self._process.exitcode}); see its traceback above"
            ) from None
        finally:
            reader.close()
        self._state.value = State.STARTED
        self.shutdown = util.Finalize(
            self,
            type(self)._finalize_manager,
            args=(
                self._process,
                self._address,
                bytes(self._authkey),
                self._state,
                self._serializer,
                self._shutdown_timeout,
            ),
            exitpriority=0,
        )

    @classmethod
    def _run_server(
        cls,
        registry: Mapping[str, Any],
        address: _Address | None,
        authkey: bytes,
        serializer: str,
        writer: Any,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        # Ctrl-C reaches the whole process group: the manager's owner decides
        # when its server stops (shutdown at exit), not the signal.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        current_process().authkey = authkey  # its own proxies connect back with it
        if initializer is not None:
            initializer(*initargs)
        server = cls._Server(registry, address, authkey, serializer)
        writer.send(server.address)
        writer.close()
        util.info("manager serving at %r", server.address)
        server.serve_forever()

    def _create(self, typeid: str, /, *args: Any, **kwds: Any) -> tuple[Token, tuple[str, ...]]:
        if self._state.value != State.STARTED:
            raise ProcessError(
                f"server not yet started: call start() or connect() before {typeid}()"
            )
        ident, exposed = dispatch(
            self._address, self._serializer, bytes(self._authkey), "create", (typeid, args, kwds)
        )
        return Token(typeid, self._address, ident), tuple(exposed)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the server process to exit."""
        if self._process is not None:
            self._process.join(timeout)
            if not self._process.is_alive():
                self._process = self._process if self._process.exitcode is not None else None

    def _debug_info(self) -> str:
        return str(dispatch(self._address, self._serializer, bytes(self._authkey), "info"))

    def _number_of_objects(self) -> int:
        return int(dispatch(self._address, self._serializer, bytes(self._authkey), "count"))

    def __enter__(self) -> Self:
        if self._state.value == State.INITIAL:
            self.start()
        if self._state.value != State.STARTED:
            raise ProcessError(f"Unable to start server (state {self._state.value})")
        return self

    def __exit__(self, *exc: object) -> None:
        shutdown = getattr(self, "shutdown", None)
        if shutdown is not None:
            shutdown()

    @staticmethod
    def _finalize_manager(
        process: Any,
        address: Any,
        authkey: bytes,
        state: State,
        serializer: str,
        shutdown_timeout: float,
    ) -> None:
        if process.is_alive():
            util.info("sending shutdown message to manager")
            try:
                dispatch(address, serializer, authkey, "shutdown")
            except Exception:
                pass
            process.join(timeout=shutdown_timeout)
            if process.is_alive():
                util.info("manager still alive: terminating it")
                process.terminate()
                process.join(timeout=shutdown_timeout)
                if process.is_alive():
                    process.kill()
                    process.join()
        _channels.drop(address)
        state.value = State.SHUTDOWN

    @property
    def address(self) -> _Address | None:
        """Where the server listens (None before ``start()`` when none was given)."""
        return self._address

    @classmethod
    def register(
        cls,
        typeid: str,
        callable: Callable[..., object] | None = None,
        proxytype: Any = None,
        exposed: Sequence[str] | None = None,
        method_to_typeid: Mapping[str, str] | None = None,
        create_method: bool = True,
    ) -> None:
        """Make ``typeid`` a type this manager can create (``manager.<typeid>(...)``)."""
        if "_registry" not in cls.__dict__:
            cls._registry = cls._registry.copy()
        if proxytype is None:
            proxytype = AutoProxy
        exposed = exposed or getattr(proxytype, "_exposed_", None)
        method_to_typeid = method_to_typeid or getattr(proxytype, "_method_to_typeid_", None)
        if method_to_typeid:
            for key, value in method_to_typeid.items():
                if not isinstance(key, str) or not isinstance(value, str):
                    raise TypeError(
                        f"method_to_typeid must map str to str (got {key!r}: {value!r})"
                    )
        cls._registry[typeid] = (callable, exposed, method_to_typeid, proxytype)
        if create_method:
            setattr(cls, typeid, _creator(typeid, proxytype))


def _creator(typeid: str, proxytype: Any) -> Callable[..., Any]:
    def create(self: BaseManager, /, *args: Any, **kwds: Any) -> Any:
        token, exposed = self._create(typeid, *args, **kwds)
        # The server counted one reference for us at creation: the proxy
        # takes it over instead of adding one.
        proxy = proxytype(
            token,
            self._serializer,
            manager=self,
            authkey=self._authkey,
            exposed=exposed,
            incref=False,
        )
        _adopt(proxy, token.address, token.id)
        return proxy

    create.__name__ = typeid
    create.__qualname__ = f"BaseManager.{typeid}"
    return create


# -- types a SyncManager serves ---------------------------------------------------------


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


if TYPE_CHECKING:
    # SyncManager.Namespace() returns one (the method's name hides the class there).
    _Namespace: TypeAlias = Namespace


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
        return util.wait_for(self.wait, predicate, timeout)


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


def _pool(*args: Any, **kwds: Any) -> Any:
    from .pool import Pool

    return Pool(*args, **kwds)


class SyncManager(BaseManager):
    """A manager serving queues, locks, events, lists, dicts, namespaces, values and pools."""

    if TYPE_CHECKING:
        # Added by register() below.  The types are typeshed's for the stdlib's
        # SyncManager: a lock or a queue is a proxy at run time, used as the real thing.
        def Barrier(
            self,
            parties: int,
            action: Callable[[], None] | None = None,
            timeout: float | None = None,
        ) -> threading.Barrier: ...
        def BoundedSemaphore(self, value: int = 1) -> threading.BoundedSemaphore: ...
        def Condition(
            self, lock: threading.Lock | threading.RLock | threading._RLock | None = None
        ) -> threading.Condition: ...
        def Event(self) -> threading.Event: ...
        def Lock(self) -> threading.Lock: ...
        def Namespace(self, **kwds: Any) -> _Namespace: ...
        def Pool(
            self,
            processes: int | None = None,
            initializer: Callable[..., object] | None = None,
            initargs: Iterable[Any] = (),
            maxtasksperchild: int | None = None,
            context: Any | None = None,
            *,
            retries: int = 0,
            backend: Any = None,
        ) -> pool.Pool: ...
        def Queue(self, maxsize: int = 0) -> queue.Queue[Any]: ...
        def JoinableQueue(self, maxsize: int = 0) -> queue.Queue[Any]: ...
        def RLock(self) -> threading.RLock: ...
        def Semaphore(self, value: int = 1) -> threading.Semaphore: ...
        def Array(
            self, typecode: Any, sequence: Sequence[_T], lock: bool = True
        ) -> Sequence[_T]: ...
        def Value(self, typecode: Any, value: _T, lock: bool = True) -> ValueProxy[_T]: ...

        # As builtins.dict.__init__ (self is positional-only: m.dict(self=1) is {'self': 1})
        @overload
        def dict(self, /) -> DictProxy[Any, Any]: ...
        @overload
        def dict(self, /, **kwargs: _VT) -> DictProxy[str, _VT]: ...
        @overload
        def dict(self, map: SupportsKeysAndGetItem[_KT, _VT], /) -> DictProxy[_KT, _VT]: ...
        @overload
        def dict(
            self, map: SupportsKeysAndGetItem[str, _VT], /, **kwargs: _VT
        ) -> DictProxy[str, _VT]: ...
        @overload
        def dict(self, iterable: Iterable[tuple[_KT, _VT]], /) -> DictProxy[_KT, _VT]: ...
        @overload
        def dict(
            self, iterable: Iterable[tuple[str, _VT]], /, **kwargs: _VT
        ) -> DictProxy[str, _VT]: ...
        @overload
        def dict(self, iterable: Iterable[builtins.list[str]], /) -> DictProxy[str, str]: ...
        @overload
        def dict(self, iterable: Iterable[builtins.list[bytes]], /) -> DictProxy[bytes, bytes]: ...
        def dict(self, /, *args: Any, **kwargs: Any) -> DictProxy[Any, Any]: ...

        # As builtins.list.__init__
        @overload
        def list(self, iterable: Iterable[_T], /) -> ListProxy[_T]: ...
        @overload
        def list(self, /) -> ListProxy[Any]: ...
        def list(self, /, *args: Any) -> ListProxy[Any]: ...


SyncManager.register("Queue", queue.Queue)
SyncManager.register("JoinableQueue", queue.Queue)
SyncManager.register("Event", threading.Event, EventProxy)
SyncManager.register("Lock", threading.Lock, AcquirerProxy)
SyncManager.register("RLock", threading.RLock, AcquirerProxy)
SyncManager.register("Semaphore", threading.Semaphore, AcquirerProxy)
SyncManager.register("BoundedSemaphore", threading.BoundedSemaphore, AcquirerProxy)
SyncManager.register("Condition", threading.Condition, ConditionProxy)
SyncManager.register("Barrier", threading.Barrier, BarrierProxy)
SyncManager.register("Pool", _pool, PoolProxy)
SyncManager.register("list", list, ListProxy)
SyncManager.register("dict", dict, DictProxy)
SyncManager.register("Value", Value, ValueProxy)
SyncManager.register("Array", Array, ArrayProxy)
SyncManager.register("Namespace", Namespace, NamespaceProxy)
SyncManager.register("Iterator", proxytype=IteratorProxy, create_method=False)
SyncManager.register("AsyncResult", create_method=False)


# -- a standalone server: objects shared by name ---------------------------------------

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


class RemoteManager(SyncManager):
    """A ``SyncManager`` whose objects can also be shared by name between clients.

    ``phalanx manager serve --address HOST:PORT`` runs one; clients use
    ``RemoteManager(address=(HOST, PORT), authkey=KEY)``, ``connect()``, and
    ``get_dict(name)``, ``get_list(name)``, ``get_queue(name)``,
    ``get_namespace(name)`` or ``get_lock(name)``: every client asking for the
    same name gets a proxy to the same object.
    """

    if TYPE_CHECKING:
        # Added by register() below (typed as SyncManager's creators are).
        def get_dict(self, name: str) -> DictProxy[Any, Any]: ...
        def get_list(self, name: str) -> ListProxy[Any]: ...
        def get_queue(self, name: str) -> queue.Queue[Any]: ...
        def get_namespace(self, name: str) -> _Namespace: ...
        def get_lock(self, name: str) -> threading.Lock: ...

    def __init__(
        self,
        address: _Address | None = None,
        authkey: bytes | None = None,
        serializer: str = "pickle",
        ctx: BaseContext | None = None,
        *,
        shutdown_timeout: float = 1.0,
    ) -> None:
        """As ``SyncManager``; ``authkey`` defaults to ``$PHALANX_AUTHKEY`` when that is set
        (as ``phalanx manager serve`` reads it: tasks on a cluster's workers need no key in
        their arguments)."""
        if authkey is None:
            authkey = os.environb.get(b"PHALANX_AUTHKEY") or None
        super().__init__(address, authkey, serializer, ctx, shutdown_timeout=shutdown_timeout)


RemoteManager.register("get_dict", _named_dict, DictProxy)
RemoteManager.register("get_list", _named_list, ListProxy)
RemoteManager.register("get_queue", _named_queue)
RemoteManager.register("get_namespace", _named_namespace, NamespaceProxy)
RemoteManager.register("get_lock", _named_lock_, AcquirerProxy)


# -- shared memory ----------------------------------------------------------------------


class SharedMemoryServer(Server):
    """A server that also unlinks, at shutdown, the segments its clients created."""

    segments: list[str]
    _segments_lock: threading.Lock

    if TYPE_CHECKING:
        # Server's parameters, which the run-time *args, **kwargs pass on.
        def __init__(
            self,
            registry: Mapping[str, tuple[Any, ...]],
            address: _Address | None,
            authkey: bytes,
            serializer: str,
        ) -> None: ...

    else:

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.segments = []
            self._segments_lock = threading.Lock()

    def _track(self, name: str) -> tuple[str, Any]:
        with self._segments_lock:
            self.segments.append(name)
        return "#RETURN", None

    def _release(self, name: str) -> tuple[str, Any]:
        with self._segments_lock:
            if name in self.segments:
                self.segments.remove(name)
        _unlink_segment(name)
        return "#RETURN", None

    def _list(self) -> tuple[str, Any]:
        with self._segments_lock:
            return "#RETURN", list(self.segments)

    def _shutdown(self) -> tuple[str, Any]:
        with self._segments_lock:
            names, self.segments = self.segments, []
        for name in names:
            _unlink_segment(name)
        return super()._shutdown()

    _ops = {
        **Server._ops,
        "track_segment": _track,
        "release_segment": _release,
        "list_segments": _list,
        "shutdown": _shutdown,
    }


def _unlink_segment(name: str) -> None:
    from .shared_memory import SharedMemory

    try:
        segment = SharedMemory(name, track=False)
    except FileNotFoundError:
        return
    segment.close()
    segment.unlink()


class SharedMemoryManager(BaseManager):
    """Creates ``SharedMemory``/``ShareableList`` segments that its server frees at shutdown."""

    _Server = SharedMemoryServer

    if TYPE_CHECKING:
        # Checkers see BaseManager's __init__ (the run-time one passes *args, **kwargs on,
        # with the stdlib's signature); get_server() makes a SharedMemoryServer (_Server).
        def get_server(self) -> SharedMemoryServer: ...

    else:

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)

    def SharedMemory(self, size: int) -> _SharedMemory:
        """A new ``SharedMemory`` of ``size`` bytes, unlinked when the manager shuts down."""
        from .shared_memory import SharedMemory

        self._check_started()
        segment = SharedMemory(None, create=True, size=size)
        self._track(segment.name, segment)
        return segment

    def ShareableList(self, sequence: Iterable[_SLT] | None) -> _ShareableList[_SLT]:
        """A new ``ShareableList``, unlinked when the manager shuts down."""
        from .shared_memory import ShareableList

        self._check_started()
        shared: _ShareableList[_SLT] = ShareableList(sequence)
        self._track(shared.shm.name, shared.shm)
        return shared

    def _check_started(self) -> None:
        if self._state.value != State.STARTED:
            raise ProcessStateError(
                f"{type(self).__name__} not started: call start() (or use it in a with block) "
                "before creating segments"
            )

    def _track(self, name: str, segment: Any) -> None:
        try:
            dispatch(
                self._address, self._serializer, bytes(self._authkey), "track_segment", (name,)
            )
        except BaseException:
            segment.close()
            segment.unlink()
            raise
