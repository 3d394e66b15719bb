"""phalanx: process-based parallelism, a drop-in for ``multiprocessing``.

``import phalanx as multiprocessing`` and programs written for the stdlib run
unchanged.  The module-level functions are bound methods of the default
context (see :mod:`phalanx.context`).
"""

from __future__ import annotations

import sys as _sys

from . import context as _context
from ._runtime import SUBDEBUG as SUBDEBUG  # module attributes, not in __all__ (as the stdlib)
from ._runtime import SUBWARNING as SUBWARNING
from ._version import __version__ as __version__
from .context import Process
from .errors import AuthenticationError, BufferTooShort, ProcessError, TimeoutError

TYPE_CHECKING = False  # typing is not imported at run time: see context.py
if TYPE_CHECKING:
    from typing import Final

__all__ = (
    "Array",
    "AuthenticationError",
    "Barrier",
    "BoundedSemaphore",
    "BufferTooShort",
    "Condition",
    "Event",
    "JoinableQueue",
    "Lock",
    "Manager",
    "Pipe",
    "Pool",
    "Process",
    "ProcessError",
    "Queue",
    "RLock",
    "RawArray",
    "RawValue",
    "Semaphore",
    "SimpleQueue",
    "TimeoutError",
    "Value",
    "active_children",
    "allow_connection_pickling",
    "cpu_count",
    "current_process",
    "freeze_support",
    "get_all_start_methods",
    "get_context",
    "get_logger",
    "get_start_method",
    "log_to_stderr",
    "parent_process",
    "reducer",
    "set_executable",
    "set_forkserver_preload",
    "set_start_method",
)


_default = _context._default_context

# For type checkers the queue names are the classes (as typeshed has them), so that
# ``multiprocessing.Queue[int]`` annotates; at run time they are the context's methods.
if TYPE_CHECKING:
    from .queues import JoinableQueue as JoinableQueue
    from .queues import Queue as Queue
    from .queues import SimpleQueue as SimpleQueue
else:
    JoinableQueue = _default.JoinableQueue
    Queue = _default.Queue
    SimpleQueue = _default.SimpleQueue
Array: Final = _default.Array
Barrier: Final = _default.Barrier
BoundedSemaphore: Final = _default.BoundedSemaphore
Condition: Final = _default.Condition
Event: Final = _default.Event
Lock: Final = _default.Lock
Manager: Final = _default.Manager
Pipe: Final = _default.Pipe
Pool: Final = _default.Pool
RLock: Final = _default.RLock
RawArray: Final = _default.RawArray
RawValue: Final = _default.RawValue
Semaphore: Final = _default.Semaphore
Value: Final = _default.Value
active_children: Final = _default.active_children
allow_connection_pickling: Final = _default.allow_connection_pickling
cpu_count: Final = _default.cpu_count
current_process: Final = _default.current_process
freeze_support: Final = _default.freeze_support
get_all_start_methods: Final = _default.get_all_start_methods
get_context: Final = _default.get_context
get_logger: Final = _default.get_logger
get_start_method: Final = _default.get_start_method
log_to_stderr: Final = _default.log_to_stderr
parent_process: Final = _default.parent_process
set_executable: Final = _default.set_executable
set_forkserver_preload: Final = _default.set_forkserver_preload
set_start_method: Final = _default.set_start_method


# Imported when first named, like the rest of the API (``import phalanx`` loads
# only what starting a process needs): ``reducer`` is the module
# ``phalanx.reduction``, and these submodules were attributes of the package
# right after ``import phalanx`` before (``multiprocessing.reduction`` is one).
_LAZY_SUBMODULES = frozenset({"queues", "reduction", "sharedctypes", "synchronize", "util"})


if TYPE_CHECKING:
    from . import reduction as reducer
else:  # hidden from type checkers: a module ``__getattr__`` would hide typos from them

    def __getattr__(name: str) -> object:
        if name == "reducer":
            return _default.reducer
        if name in _LAZY_SUBMODULES:
            __import__(f"{__name__}.{name}")
            return _sys.modules[f"{__name__}.{name}"]
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Objects pickled by reference from a spawned child's ``__mp_main__`` must
# resolve in the parent too.
if "__main__" in _sys.modules:
    _sys.modules.setdefault("__mp_main__", _sys.modules["__main__"])
