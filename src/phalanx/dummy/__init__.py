"""The phalanx API on threads: ``multiprocessing.dummy``.

Same names as the process API, backed by ``threading`` and ``queue``, for code
that wants to switch between processes and threads by changing an import.
"""

from __future__ import annotations

import array
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from queue import Queue
from threading import Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore
from typing import Any, Final

from .connection import Pipe

__all__ = (
    "Barrier",
    "BoundedSemaphore",
    "Condition",
    "Event",
    "JoinableQueue",
    "Lock",
    "Manager",
    "Pipe",
    "Pool",
    "Process",
    "Queue",
    "RLock",
    "Semaphore",
    "active_children",
    "current_process",
    "freeze_support",
)


class DummyProcess(threading.Thread):
    """A thread with the parts of the ``Process`` API that make sense for one."""

    def __init__(
        self,
        group: None = None,
        target: Callable[..., object] | None = None,
        name: str | None = None,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] = {},  # the stdlib's signature; never mutated
    ) -> None:
        threading.Thread.__init__(self, group, target, name, args, kwargs)
        self._pid = None
        self._children: weakref.WeakKeyDictionary[DummyProcess, None] = weakref.WeakKeyDictionary()
        self._start_called = False
        self._parent = current_process()

    def start(self) -> None:
        if self._parent is not current_process():
            raise RuntimeError(
                f"Parent is {self._parent!r} but current_process is {current_process()!r}"
            )
        self._start_called = True
        children = getattr(self._parent, "_children", None)
        if children is not None:
            children[self] = None
        threading.Thread.start(self)

    @property
    def exitcode(self) -> int | None:
        """0 once the thread has run and finished, else None."""
        if self._start_called and not self.is_alive():
            return 0
        return None


Process = DummyProcess
current_process: Final = threading.current_thread
current_process()._children = weakref.WeakKeyDictionary()  # type: ignore[attr-defined]


def active_children() -> list[threading.Thread]:
    children = current_process()._children  # type: ignore[attr-defined]
    for p in list(children):
        if not p.is_alive():
            children.pop(p, None)
    return list(children)


def freeze_support() -> None:
    pass


class Namespace:
    """A plain attribute bag (what a manager's ``Namespace`` is, minus the server)."""

    def __init__(self, /, **kwds: Any) -> None:
        self.__dict__.update(kwds)

    def __repr__(self) -> str:
        items = [f"{k}={v!r}" for k, v in self.__dict__.items() if not k.startswith("_")]
        return f"{type(self).__name__}({', '.join(sorted(items))})"


dict = dict
list = list


def Array(typecode: str, sequence: Iterable[Any], lock: bool = True) -> array.array[Any]:
    return array.array(typecode, sequence)


class Value:
    """A plain holder with a ``value`` attribute."""

    def __init__(self, typecode: str, value: Any, lock: bool = True) -> None:
        self._typecode = typecode
        self._value = value

    @property
    def value(self) -> Any:
        return self._value

    @value.setter
    def value(self, value: Any) -> None:
        self._value = value

    def __repr__(self) -> str:
        return f"<{type(self).__name__}({self._typecode!r}, {self._value!r})>"


def Manager() -> Any:
    """This module stands in for a manager: its ``list``, ``dict``, ``Namespace``..."""
    return sys.modules[__name__]


def shutdown() -> None:
    pass


JoinableQueue = Queue


def Pool(
    processes: int | None = None,
    initializer: Callable[..., object] | None = None,
    initargs: Iterable[Any] = (),
) -> Any:
    """A pool of threads with the ``Pool`` API (``phalanx.pool.ThreadPool``)."""
    from ..pool import ThreadPool

    return ThreadPool(processes, initializer, initargs)
