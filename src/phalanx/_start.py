"""Start methods below the contexts (layer 1): each method's Process class, and the
default start method, chosen once.

Pools, managers and executors start their processes through what this module
gives (an object with a ``Process`` class and ``get_start_method()``, which
every context also is), so they never import ``context`` (layer 5), which is
built on them.  ``context.DefaultContext`` keeps its start method here.
"""

from __future__ import annotations

import sys

from . import _platform, process

TYPE_CHECKING = False  # typing is not imported at run time: see context.py
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any, Protocol

    class Starter(Protocol):
        """What starting processes needs of a context: the class, and which method."""

        @property
        def Process(self) -> type[process.BaseProcess]: ...

        def get_start_method(self) -> str | None: ...


__all__ = (
    "PROCESS_CLASSES",
    "DefaultStart",
    "ForkProcess",
    "ForkServerProcess",
    "MethodStart",
    "Process",
    "SpawnProcess",
    "check_method",
    "default",
    "load_module",
    "method",
    "popen_class",
)

_POPEN_MODULES = {"fork": "fork", "spawn": "spawn", "forkserver": "forkserver"}


def load_module(name: str) -> ModuleType:
    """The module ``name``, imported if need be (without loading ``importlib``)."""
    __import__(name)
    return sys.modules[name]


def popen_class(method: str) -> Any:
    # Start methods are imported on first use: a forking program never loads
    # the spawn or forkserver code.  Remembered: __import__ of a loaded module
    # still takes the import lock, on every process start.
    cls = _popen_classes.get(method)
    if cls is None:
        cls = _popen_classes[method] = load_module(f"phalanx._popen.{_POPEN_MODULES[method]}").Popen
    return cls


_popen_classes: dict[str, Any] = {}


class Process(process.BaseProcess):
    """A process started with the default start method (as it is when it starts)."""

    _start_method = None

    @staticmethod
    def _Popen(process_obj: process.BaseProcess) -> Any:
        return default.concrete().Process._Popen(process_obj)


class ForkProcess(process.BaseProcess):
    """A ``Process`` started by forking this one (``get_context("fork").Process``)."""

    _start_method = "fork"

    @staticmethod
    def _Popen(process_obj: process.BaseProcess) -> Any:
        return popen_class("fork")(process_obj)


class SpawnProcess(process.BaseProcess):
    """A ``Process`` started in a fresh interpreter (``get_context("spawn").Process``)."""

    _start_method = "spawn"

    @staticmethod
    def _Popen(process_obj: process.BaseProcess) -> Any:
        return popen_class("spawn")(process_obj)


class ForkServerProcess(process.BaseProcess):
    """A ``Process`` forked by the fork server (``get_context("forkserver").Process``)."""

    _start_method = "forkserver"

    @staticmethod
    def _Popen(process_obj: process.BaseProcess) -> Any:
        return popen_class("forkserver")(process_obj)


PROCESS_CLASSES: dict[str, type[process.BaseProcess]] = {
    "fork": ForkProcess,
    "spawn": SpawnProcess,
    "forkserver": ForkServerProcess,
}

# Documented (and pickled by reference) under the public module that re-exports them.
for _public in (Process, ForkProcess, SpawnProcess, ForkServerProcess):
    _public.__module__ = "phalanx.context"


def check_method(method: object) -> str:
    """``method`` if it names a start method usable here, else a ValueError naming them."""
    if not isinstance(method, str) or method not in _platform.START_METHODS:
        raise ValueError(
            f"cannot find context for {method!r}; "
            f"available start methods: {', '.join(_platform.START_METHODS)}"
        )
    return method


class MethodStart:
    """One start method, as pools and managers use it (a concrete context is one too)."""

    __slots__ = ("Process", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self.Process = PROCESS_CLASSES[name]

    def get_start_method(self, allow_none: bool = False) -> str:
        return self._name


_methods = {name: MethodStart(name) for name in PROCESS_CLASSES}


def method(name: str) -> MethodStart:
    """The start method ``name`` (ValueError if it is not usable here)."""
    return _methods[check_method(name)]


class DefaultStart:
    """The default start method: fixed at its first use, unless set before."""

    Process = Process

    def __init__(self, fallback: str) -> None:
        self._fallback = fallback
        self.actual: str | None = None

    def get_start_method(self, allow_none: bool = False) -> str | None:
        if self.actual is None:
            if allow_none:
                return None
            self.actual = self._fallback
        return self.actual

    def set_start_method(self, method: str | None, force: bool = False) -> None:
        """Choose the default start method; once only unless ``force=True``."""
        if self.actual is not None and not force:
            raise RuntimeError(
                f"context has already been set (start method {self.actual!r}); "
                "pass force=True to change it"
            )
        if method is None and force:
            self.actual = None
            return
        self.actual = check_method(method)

    def concrete(self) -> MethodStart:
        """The start method in use (fixing the default if none was chosen)."""
        return _methods[self.get_start_method() or self._fallback]


default = DefaultStart(_platform.DEFAULT_START_METHOD)


def _inherit_start_method(process_obj: process.BaseProcess) -> None:
    # A child's default start method is the one that started it, like the stdlib.
    if process_obj._start_method is not None:
        default.actual = process_obj._start_method


process._bootstrap_hooks.append(_inherit_start_method)
