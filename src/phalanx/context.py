"""Contexts: one object per start method bundling the whole API (layer 5).

``get_context(method)`` returns the concrete context of a start method; the
module-level functions of :mod:`phalanx` are the bound methods of the default
context, whose start method can be chosen once with ``set_start_method``.
"""

from __future__ import annotations

import sys

from . import _platform, _runtime, _start, process
from ._start import ForkProcess as ForkProcess
from ._start import ForkServerProcess as ForkServerProcess
from ._start import Process as Process
from ._start import SpawnProcess as SpawnProcess
from ._start import load_module as _module
from .errors import AuthenticationError, BufferTooShort, ProcessError, TimeoutError

# The parts of the API are imported when first used, as the stdlib does: a
# program (or a spawned child) that only starts processes never loads the
# queues, locks or shared memory, and ``import phalanx`` stays as light as
# ``import multiprocessing``.  ``tests/test_import.py`` holds this.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import ctypes
    import logging
    from _ctypes import _CData
    from collections.abc import Callable, Iterable, Sequence
    from ctypes import _SimpleCData, c_char
    from typing import Any, ClassVar, Final, Literal, overload

    from . import _connection, managers, pool, queues, synchronize
    from .sharedctypes import (
        _CT,
        _T,
        Synchronized,
        SynchronizedArray,
        SynchronizedBase,
        SynchronizedString,
        _LockLike,
    )
else:

    def overload(func: object) -> object:  # the last definition is the one that runs
        return func


__all__ = (
    "AuthenticationError",
    "BaseContext",
    "BufferTooShort",
    "DefaultContext",
    "ForkContext",
    "ForkProcess",
    "ForkServerContext",
    "ForkServerProcess",
    "Process",
    "ProcessError",
    "SpawnContext",
    "SpawnProcess",
    "TimeoutError",
)


class BaseContext:
    """The API shared by every context; ``_name`` is the start method (None: default)."""

    _name: ClassVar[str | None] = None
    Process: ClassVar[type[process.BaseProcess]]

    ProcessError = ProcessError
    BufferTooShort = BufferTooShort
    TimeoutError = TimeoutError
    AuthenticationError = AuthenticationError

    if TYPE_CHECKING:

        @staticmethod
        def current_process() -> process.BaseProcess: ...

        @staticmethod
        def parent_process() -> process.BaseProcess | None: ...

        @staticmethod
        def active_children() -> list[process.BaseProcess]: ...

    else:  # the functions themselves, as the stdlib's (no extra frame, same identity)
        current_process = staticmethod(process.current_process)
        parent_process = staticmethod(process.parent_process)
        active_children = staticmethod(process.active_children)

    def Pipe(
        self, duplex: bool = True
    ) -> tuple[_connection.Connection[Any, Any], _connection.Connection[Any, Any]]:
        """Two connected ``Connection`` objects (see :func:`phalanx.connection.Pipe`)."""
        from ._connection import Pipe

        return Pipe(duplex)

    def Lock(self) -> synchronize.Lock:
        """A non-recursive lock shared between processes."""
        from .synchronize import Lock

        return Lock(ctx=self.get_context())

    def RLock(self) -> synchronize.RLock:
        """A recursive lock shared between processes."""
        from .synchronize import RLock

        return RLock(ctx=self.get_context())

    def Condition(self, lock: Any = None) -> synchronize.Condition:
        """A condition variable (on ``lock``, default a new ``RLock``)."""
        from .synchronize import Condition

        return Condition(lock, ctx=self.get_context())

    def Semaphore(self, value: int = 1) -> synchronize.Semaphore:
        """A semaphore shared between processes."""
        from .synchronize import Semaphore

        return Semaphore(value, ctx=self.get_context())

    def BoundedSemaphore(self, value: int = 1) -> synchronize.BoundedSemaphore:
        """A bounded semaphore shared between processes."""
        from .synchronize import BoundedSemaphore

        return BoundedSemaphore(value, ctx=self.get_context())

    def Event(self) -> synchronize.Event:
        """An event shared between processes."""
        from .synchronize import Event

        return Event(ctx=self.get_context())

    def Barrier(
        self, parties: int, action: Callable[[], object] | None = None, timeout: float | None = None
    ) -> synchronize.Barrier:
        """A barrier for ``parties`` processes."""
        from .synchronize import Barrier

        return Barrier(parties, action, timeout, ctx=self.get_context())

    def Queue(self, maxsize: int = 0) -> queues.Queue[Any]:
        """A FIFO queue between processes (see :mod:`phalanx.queues`)."""
        from .queues import Queue

        return Queue(maxsize, ctx=self.get_context())

    def JoinableQueue(self, maxsize: int = 0) -> queues.JoinableQueue[Any]:
        """A queue with ``task_done()`` and ``join()``."""
        from .queues import JoinableQueue

        return JoinableQueue(maxsize, ctx=self.get_context())

    def SimpleQueue(self) -> queues.SimpleQueue[Any]:
        """A simplified unbounded queue."""
        from .queues import SimpleQueue

        return SimpleQueue(ctx=self.get_context())

    def Manager(self) -> managers.SyncManager:
        """A started ``SyncManager``: a server process holding shared objects."""
        from .managers import SyncManager

        manager = SyncManager(ctx=self.get_context())
        manager.start()
        return manager

    def allow_connection_pickling(self) -> None:
        """Kept for compatibility: connections and sockets always pickle in phalanx."""

    def Pool(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        *,
        retries: int = 0,
        backend: Any = None,
    ) -> pool.Pool:
        """A pool of worker processes (see :mod:`phalanx.pool`).

        ``retries`` and ``backend`` are phalanx's: ``backend="dask"``, ``"ray"``,
        ``"dask://HOST:PORT"``, ``"ray://HOST:PORT"`` or a :mod:`phalanx.cluster`
        object runs the same pool on a cluster engine.
        """
        from .pool import Pool

        return Pool(
            processes,
            initializer,
            initargs,
            maxtasksperchild,
            self.get_context(),
            retries=retries,
            backend=backend,
        )

    @overload
    def RawValue(self, typecode_or_type: type[_CT], *args: Any) -> _CT: ...
    @overload
    def RawValue(self, typecode_or_type: str, *args: Any) -> Any: ...
    def RawValue(self, typecode_or_type: str | type[_CData], *args: Any) -> Any:
        """A shared ctypes object without a lock."""
        from .sharedctypes import RawValue

        return RawValue(typecode_or_type, *args)

    @overload
    def RawArray(
        self, typecode_or_type: type[_CT], size_or_initializer: int | Sequence[Any]
    ) -> ctypes.Array[_CT]: ...
    @overload
    def RawArray(self, typecode_or_type: str, size_or_initializer: int | Sequence[Any]) -> Any: ...
    def RawArray(
        self, typecode_or_type: str | type[_CData], size_or_initializer: int | Sequence[Any]
    ) -> Any:
        """A shared ctypes array without a lock."""
        from .sharedctypes import RawArray

        return RawArray(typecode_or_type, size_or_initializer)

    @overload
    def Value(
        self,
        typecode_or_type: type[_SimpleCData[_T]],
        *args: Any,
        lock: Literal[True] | _LockLike = True,
    ) -> Synchronized[_T]: ...
    @overload  # typeshed says Synchronized[_CT]: it is the raw object
    def Value(self, typecode_or_type: type[_CT], *args: Any, lock: Literal[False]) -> _CT: ...
    @overload  # typeshed says Synchronized[_CT]: a Structure's wrapper has no .value
    def Value(
        self, typecode_or_type: type[_CT], *args: Any, lock: Literal[True] | _LockLike = True
    ) -> SynchronizedBase[_CT]: ...
    @overload
    def Value(
        self, typecode_or_type: str, *args: Any, lock: Literal[True] | _LockLike = True
    ) -> Synchronized[Any]: ...
    @overload
    def Value(
        self, typecode_or_type: str | type[_CData], *args: Any, lock: bool | _LockLike = True
    ) -> Any: ...
    def Value(
        self, typecode_or_type: str | type[_CData], *args: Any, lock: bool | _LockLike = True
    ) -> Any:
        """A shared ctypes object, synchronized by a lock unless ``lock=False``."""
        from .sharedctypes import Value

        return Value(typecode_or_type, *args, lock=lock, ctx=self.get_context())

    @overload  # typeshed says SynchronizedArray[_T]: it is the raw ctypes array
    def Array(
        self,
        typecode_or_type: type[_CT],
        size_or_initializer: int | Sequence[Any],
        *,
        lock: Literal[False],
    ) -> ctypes.Array[_CT]: ...
    @overload
    def Array(
        self,
        typecode_or_type: type[c_char],
        size_or_initializer: int | Sequence[Any],
        *,
        lock: Literal[True] | _LockLike = True,
    ) -> SynchronizedString: ...
    @overload
    def Array(
        self,
        typecode_or_type: type[_SimpleCData[_T]],
        size_or_initializer: int | Sequence[Any],
        *,
        lock: Literal[True] | _LockLike = True,
    ) -> SynchronizedArray[_T]: ...
    @overload  # "c" is c_char (typeshed: SynchronizedArray[Any])
    def Array(
        self,
        typecode_or_type: Literal["c"],
        size_or_initializer: int | Sequence[Any],
        *,
        lock: Literal[True] | _LockLike = True,
    ) -> SynchronizedString: ...
    @overload
    def Array(
        self,
        typecode_or_type: str,
        size_or_initializer: int | Sequence[Any],
        *,
        lock: Literal[True] | _LockLike = True,
    ) -> SynchronizedArray[Any]: ...
    @overload
    def Array(
        self,
        typecode_or_type: str | type[_CData],
        size_or_initializer: int | Sequence[Any],
        *,
        lock: bool | _LockLike = True,
    ) -> Any: ...
    def Array(
        self,
        typecode_or_type: str | type[_CData],
        size_or_initializer: int | Sequence[Any],
        *,
        lock: bool | _LockLike = True,
    ) -> Any:
        """A shared ctypes array, synchronized by a lock unless ``lock=False``."""
        from .sharedctypes import Array

        return Array(typecode_or_type, size_or_initializer, lock=lock, ctx=self.get_context())

    def cpu_count(self) -> int:
        """Number of CPUs in the system (``NotImplementedError`` if unknown)."""
        return _platform.cpu_count()

    def freeze_support(self) -> None:
        """In a frozen executable started as a child, run the child and exit.

        A no-op everywhere else, so it is always safe to call first thing under
        ``if __name__ == "__main__":``.
        """
        if not getattr(sys, "frozen", False):
            return
        from ._spawn import FORK_MARKER

        if FORK_MARKER in sys.argv:
            raise SystemExit(
                "phalanx cannot yet start children from a frozen executable; "
                "run the program with a Python interpreter"
            )

    def get_logger(self) -> logging.Logger:
        """The logger phalanx logs to, named ``"multiprocessing"`` as the stdlib's."""
        return _runtime.get_logger()

    def log_to_stderr(self, level: int | str | None = None) -> logging.Logger:
        """Send phalanx's log to stderr (at ``level`` if given); children started later too."""
        return _runtime.log_to_stderr(level)

    def set_executable(self, executable: Any) -> None:
        """Interpreter used to start children with spawn (default: ``sys.executable``)."""
        _module("phalanx._spawn").set_executable(executable)

    def set_forkserver_preload(self, module_names: Sequence[str]) -> None:
        """Modules the fork server imports once, so its children start with them loaded."""
        _module("phalanx._forkserver").set_forkserver_preload(module_names)

    @overload
    def get_context(self, method: None = None) -> BaseContext: ...
    @overload
    def get_context(self, method: Literal["spawn"]) -> SpawnContext: ...
    @overload
    def get_context(self, method: Literal["fork"]) -> ForkContext: ...
    @overload
    def get_context(self, method: Literal["forkserver"]) -> ForkServerContext: ...
    @overload
    def get_context(self, method: str) -> BaseContext: ...

    def get_context(self, method: str | None = None) -> BaseContext:
        """The context of start method ``method`` (this one if None)."""
        if method is None:
            return self._current()
        return _concrete_contexts[_start.check_method(method)]

    def _current(self) -> BaseContext:
        """What ``get_context()`` gives: a concrete context is its own."""
        return self

    @overload
    def get_start_method(self, allow_none: Literal[False] = False) -> str: ...
    @overload
    def get_start_method(self, allow_none: bool) -> str | None: ...

    def get_start_method(self, allow_none: bool = False) -> str | None:
        """This context's start method."""
        return self._name

    def set_start_method(self, method: str | None, force: bool = False) -> None:
        """Refused: a concrete context's method is fixed (``ValueError``)."""
        raise ValueError(
            f"cannot set the start method of a concrete context ({self._name!r}); "
            "use phalanx.set_start_method() or get_context(method)"
        )

    def get_all_start_methods(self) -> list[str]:
        """Start methods usable here, the default first."""
        methods = list(_platform.START_METHODS)
        methods.remove(_platform.DEFAULT_START_METHOD)
        return [_platform.DEFAULT_START_METHOD, *methods]

    @property
    def reducer(self) -> Any:
        """The module that pickles objects for other processes (``phalanx.reduction``)."""
        return _module("phalanx.reduction")

    def _check_available(self) -> None:
        pass


class ForkContext(BaseContext):
    _name = "fork"
    Process: ClassVar[type[ForkProcess]] = ForkProcess


class SpawnContext(BaseContext):
    _name = "spawn"
    Process: ClassVar[type[SpawnProcess]] = SpawnProcess


class ForkServerContext(BaseContext):
    _name = "forkserver"
    Process: ClassVar[type[ForkServerProcess]] = ForkServerProcess


class DefaultContext(BaseContext):
    """The context behind the module-level API: its start method is chosen once."""

    Process: ClassVar[type[Process]] = Process

    def __init__(self, context: BaseContext) -> None:
        self._default_context = context
        # The start method chosen; the module-level default context's is
        # phalanx._start.default, which pools and managers below us read.
        self._start = _start.DefaultStart(context.get_start_method())

    @property
    def _actual_context(self) -> BaseContext | None:
        """The context of the start method chosen so far (the stdlib's attribute)."""
        name = self._start.get_start_method(allow_none=True)
        return None if name is None else _concrete_contexts[name]

    def _current(self) -> BaseContext:
        """The context of the default start method (fixing it if none was chosen)."""
        return _concrete_contexts[self._start.concrete().get_start_method()]

    def set_start_method(self, method: str | None, force: bool = False) -> None:
        """Choose the default start method; once only unless ``force=True``."""
        self._start.set_start_method(method, force)

    @overload
    def get_start_method(self, allow_none: Literal[False] = False) -> str: ...
    @overload
    def get_start_method(self, allow_none: bool) -> str | None: ...

    def get_start_method(self, allow_none: bool = False) -> str | None:
        """The default start method (fixes it, unless ``allow_none`` and none is set)."""
        return self._start.get_start_method(allow_none)


_concrete_contexts: dict[str, BaseContext] = {
    "fork": ForkContext(),
    "spawn": SpawnContext(),
    "forkserver": ForkServerContext(),
}
_default_context = DefaultContext(_concrete_contexts[_platform.DEFAULT_START_METHOD])
_default_context._start = _start.default  # the one state, shared with the layers below

get_context: Final = _default_context.get_context
get_start_method: Final = _default_context.get_start_method
set_start_method: Final = _default_context.set_start_method
get_all_start_methods: Final = _default_context.get_all_start_methods
