"""Managers: Python objects held by a server process, used from others through proxies.

Names and behaviour follow the stdlib's ``multiprocessing.managers``.  The
protocol, the proxies and the server are phalanx's own (in ``_managers/``:
``proxy`` the client side and the protocol, ``server`` the server,
``base`` ``BaseManager``, ``served`` what a ``SyncManager`` serves and its
proxies, ``shared_memory`` ``SharedMemoryManager``); this module is the
public face, and ``SyncManager`` and ``RemoteManager``.  A phalanx client
talks to a phalanx manager, locally over AF_UNIX or remotely over TCP, with
the same mutual HMAC-SHA256 handshake as ``Listener``/``Client`` (nothing is
unpickled before it succeeds).

Beyond the stdlib: a proxy whose server died raises ``ServerGoneError`` (a
``ConnectionError``) instead of hanging or failing obscurely; proxy calls
reuse one connection per thread and server; proxy classes are built without
``exec``; ``RemoteManager`` shares objects by name between clients.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Any

from ._managers.base import BaseManager as BaseManager
from ._managers.base import State as State
from ._managers.proxy import AutoProxy as AutoProxy
from ._managers.proxy import BaseProxy as BaseProxy
from ._managers.proxy import MakeProxyType as MakeProxyType
from ._managers.proxy import RebuildProxy as RebuildProxy
from ._managers.proxy import Token as Token
from ._managers.proxy import dispatch as dispatch
from ._managers.proxy import listener_client as listener_client
from ._managers.served import AcquirerProxy as AcquirerProxy
from ._managers.served import Array as Array
from ._managers.served import ArrayProxy as ArrayProxy
from ._managers.served import BarrierProxy as BarrierProxy
from ._managers.served import BaseListProxy as BaseListProxy
from ._managers.served import BasePoolProxy as BasePoolProxy
from ._managers.served import ConditionProxy as ConditionProxy
from ._managers.served import DictProxy as DictProxy
from ._managers.served import EventProxy as EventProxy
from ._managers.served import IteratorProxy as IteratorProxy
from ._managers.served import ListProxy as ListProxy
from ._managers.served import Namespace as Namespace
from ._managers.served import NamespaceProxy as NamespaceProxy
from ._managers.served import PoolProxy as PoolProxy
from ._managers.served import Value as Value
from ._managers.served import ValueProxy as ValueProxy
from ._managers.served import _BaseDictProxy as _BaseDictProxy
from ._managers.served import (
    _named_dict,
    _named_list,
    _named_lock_,
    _named_namespace,
    _named_queue,
)
from ._managers.server import Server as Server
from ._managers.server import all_methods as all_methods
from ._managers.server import public_methods as public_methods
from ._managers.shared_memory import SharedMemoryManager as SharedMemoryManager
from ._managers.shared_memory import SharedMemoryServer as SharedMemoryServer
from .errors import ProcessError as ProcessError
from .errors import RemoteError as RemoteError
from .errors import ServerGoneError as ServerGoneError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import builtins
    from collections.abc import Callable, Iterable, Sequence
    from typing import TypeAlias, TypeVar, overload

    from _typeshed import SupportsKeysAndGetItem

    from . import pool
    from ._managers.proxy import _Address
    from .context import BaseContext

    _T = TypeVar("_T")
    _KT = TypeVar("_KT")
    _VT = TypeVar("_VT")
    # SyncManager.Namespace() returns one (the method's name hides the class there).
    _Namespace: TypeAlias = Namespace

__all__ = (
    "BaseManager",
    "BaseProxy",
    "RemoteError",
    "SharedMemoryManager",
    "SyncManager",
    "Token",
)


HAS_SHMEM = True  # as the stdlib's: SharedMemoryManager is available


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
