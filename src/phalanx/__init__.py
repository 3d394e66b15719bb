"""phalanx: process-based parallelism, a drop-in for ``multiprocessing``.

``import phalanx as multiprocessing`` and programs written for the stdlib run
unchanged.  The module-level functions are bound methods of the default
context (see :mod:`phalanx.context`).
"""

from __future__ import annotations

import sys as _sys

from . import context as _context
from ._util import SUBDEBUG as SUBDEBUG  # module attributes, not in __all__ (as the stdlib)
from ._util import SUBWARNING as SUBWARNING
from .context import Process
from .errors import AuthenticationError, BufferTooShort, ProcessError, TimeoutError

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

__version__ = "0.1.0"

_default = _context._default_context

Array = _default.Array
Barrier = _default.Barrier
BoundedSemaphore = _default.BoundedSemaphore
Condition = _default.Condition
Event = _default.Event
JoinableQueue = _default.JoinableQueue
Lock = _default.Lock
Manager = _default.Manager
Pipe = _default.Pipe
Pool = _default.Pool
Queue = _default.Queue
RLock = _default.RLock
RawArray = _default.RawArray
RawValue = _default.RawValue
Semaphore = _default.Semaphore
SimpleQueue = _default.SimpleQueue
Value = _default.Value
active_children = _default.active_children
allow_connection_pickling = _default.allow_connection_pickling
cpu_count = _default.cpu_count
current_process = _default.current_process
freeze_support = _default.freeze_support
get_all_start_methods = _default.get_all_start_methods
get_context = _default.get_context
get_logger = _default.get_logger
get_start_method = _default.get_start_method
log_to_stderr = _default.log_to_stderr
parent_process = _default.parent_process
set_executable = _default.set_executable
set_forkserver_preload = _default.set_forkserver_preload
set_start_method = _default.set_start_method


# Imported when first named, like the rest of the API (``import phalanx`` loads
# only what starting a process needs): ``reducer`` is the module
# ``phalanx.reduction``, and these submodules were attributes of the package
# right after ``import phalanx`` before (``multiprocessing.reduction`` is one).
_LAZY_SUBMODULES = frozenset({"queues", "reduction", "sharedctypes", "synchronize", "util"})


TYPE_CHECKING = False
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
