"""This process's run-time bookkeeping: logging, finalizers, after-fork hooks, the
exiting flag (layer 0, the bottom of the package).

The public names are re-exported by ``phalanx.util`` (the stdlib's
``multiprocessing.util``); inside the package this module is always imported
as ``_runtime``, never as ``util``, so that ``util`` means the public module.

Finalizers registered with :class:`Finalize` run when their object is collected,
or at process exit in decreasing ``exitpriority`` order.  Objects registered
with :func:`register_after_fork` get ``func(obj)`` called in a child right
after it is forked.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
from _weakref import ref as _weak_ref
from collections.abc import Callable, Mapping, Sequence

TYPE_CHECKING = False  # typing is not imported at run time: see context.py
if TYPE_CHECKING:
    import logging
    from typing import Any, TypeVar
    from weakref import ReferenceType, WeakValueDictionary

    _T = TypeVar("_T")

__all__ = (
    "DEBUG",
    "INFO",
    "NOTSET",
    "SUBDEBUG",
    "SUBWARNING",
    "Finalize",
    "debug",
    "get_logger",
    "info",
    "is_exiting",
    "log_to_stderr",
    "register_after_fork",
    "sub_debug",
    "sub_warning",
    "wait_for",
)

NOTSET = 0
SUBDEBUG = 5
DEBUG = 10
INFO = 20
SUBWARNING = 25

LOGGER_NAME = "multiprocessing"  # the stdlib's: existing logging config keeps working
DEFAULT_LOGGING_FORMAT = "[%(levelname)s/%(processName)s] %(message)s"

_logger: logging.Logger | None = None
_log_to_stderr = False
_exiting = False


def sub_debug(msg: str, *args: Any) -> None:
    if _logger:
        _logger.log(SUBDEBUG, msg, *args, stacklevel=2)


def debug(msg: str, *args: Any) -> None:
    if _logger:
        _logger.log(DEBUG, msg, *args, stacklevel=2)


def info(msg: str, *args: Any) -> None:
    if _logger:
        _logger.log(INFO, msg, *args, stacklevel=2)


def sub_warning(msg: str, *args: Any) -> None:
    if _logger:
        _logger.log(SUBWARNING, msg, *args, stacklevel=2)


def get_logger() -> logging.Logger:
    """Return the package logger, named ``'multiprocessing'`` like the stdlib's."""
    global _logger
    # logging is imported on first use: it is a tenth of a spawned child's
    # startup time, and most programs never ask for the logger.
    import logging

    with _lock:
        if _logger is None:
            logging.addLevelName(SUBDEBUG, "SUBDEBUG")
            logging.addLevelName(SUBWARNING, "SUBWARNING")
            _logger = logging.getLogger(LOGGER_NAME)
            _logger.propagate = False
    return _logger


def log_to_stderr(level: int | str | None = None) -> logging.Logger:
    """Attach a stderr handler to phalanx's logger; children started later inherit it."""
    global _log_to_stderr
    import logging

    logger = get_logger()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(DEFAULT_LOGGING_FORMAT))
    logger.addHandler(handler)
    if level:
        logger.setLevel(level)
    _log_to_stderr = True
    return logger


def logging_settings() -> tuple[bool, int | None]:
    """(log_to_stderr called, logger level) to reproduce in a spawned child."""
    # The effective level, as the stdlib: a child sees what the parent's logger
    # would do, even when that comes from the root logger.
    return _log_to_stderr, (_logger.getEffectiveLevel() if _logger is not None else None)


def is_exiting() -> bool:
    """True once this process has started its exit sequence."""
    return _exiting


def set_exiting() -> None:
    global _exiting
    _exiting = True


_lock = threading.Lock()

# --- after-fork hooks ---------------------------------------------------------------

# Made on first use: ``weakref`` is not imported by ``import phalanx``.
_after_fork: WeakValueDictionary[tuple[int, int, Callable[[Any], None]], Any] | None = None
_after_fork_counter = itertools.count()
_after_fork_box: dict[str, WeakValueDictionary[tuple[int, int, Callable[[Any], None]], Any]] = {}


def register_after_fork(obj: Any, func: Callable[[Any], None]) -> None:
    """Call ``func(obj)`` in every child forked while ``obj`` is alive."""
    global _after_fork
    hooks = _after_fork
    if hooks is None:
        from weakref import WeakValueDictionary

        # Two threads may get here at once: the first dictionary made is kept
        # (setdefault is atomic), so neither registration is lost.
        hooks = _after_fork = _after_fork_box.setdefault("hooks", WeakValueDictionary())
    hooks[(next(_after_fork_counter), id(obj), func)] = obj


def run_after_forkers() -> None:
    if _after_fork is None:
        return
    for (_, _, func), obj in sorted(_after_fork.items(), key=lambda kv: kv[0][0]):
        try:
            func(obj)
        except Exception as exc:  # one broken hook must not stop the child
            info("after forker raised exception %s", exc)


# --- finalizers -----------------------------------------------------------------------

_registry: dict[tuple[int | None, int], Finalize] = {}
_counter = itertools.count()


class Finalize:
    """Call ``callback(*args, **kwargs)`` once: when ``obj`` dies, on demand, or at exit.

    With ``exitpriority`` set, the finalizer also runs at process exit, highest
    priority first (same priority: newest first).  ``obj`` may be None only
    with an exit priority.
    """

    def __init__(
        self,
        obj: Any,
        callback: Callable[..., Any],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        exitpriority: int | None = None,
    ) -> None:
        if exitpriority is not None and not isinstance(exitpriority, int):
            raise TypeError(f"exitpriority must be an int or None (got {exitpriority!r})")
        if obj is not None:
            self._weakref: ReferenceType[Any] | None = _weak_ref(obj, self)
        elif exitpriority is None:
            raise ValueError("a Finalize without an object needs an exitpriority")
        else:
            self._weakref = None
        self._callback: Callable[..., Any] | None = callback
        self._args = tuple(args)
        self._kwargs = dict(kwargs or {})
        self._key: tuple[int | None, int] | None = (exitpriority, next(_counter))
        self._pid = os.getpid()
        _registry[self._key] = self

    def __call__(self, wr: Any = None) -> Any:
        """Run the callback if it has not run yet (only in the process that made it)."""
        key, callback = self._key, self._callback
        if key is None or _registry.pop(key, None) is None or callback is None:
            return None
        try:
            if self._pid != os.getpid():
                return None  # inherited through fork: not ours to run
            return callback(*self._args, **self._kwargs)
        finally:
            self._weakref = self._callback = self._key = None
            self._args, self._kwargs = (), {}

    def cancel(self) -> None:
        """Forget the callback without running it."""
        if self._key is not None:
            _registry.pop(self._key, None)
        self._weakref = self._callback = self._key = None

    def still_active(self) -> bool:
        return self._key in _registry

    def __repr__(self) -> str:
        obj = self._weakref() if self._weakref is not None else None
        name = getattr(self._callback, "__name__", repr(self._callback))
        state = f"callback={name}" if self._key is not None else "dead"
        prio = f", exitpriority={self._key[0]}" if self._key and self._key[0] is not None else ""
        return f"<{type(self).__name__} object, {state}, obj={type(obj).__name__}{prio}>"


def run_finalizers(minpriority: int | None = None) -> None:
    """Run finalizers whose exit priority is >= ``minpriority`` (any priority if None).

    With None this is the last pass at exit: the registry is emptied afterwards.
    """
    floor = -sys.maxsize if minpriority is None else minpriority
    keys = [k for k in list(_registry) if k[0] is not None and k[0] >= floor]
    keys.sort(reverse=True)
    for key in keys:
        finalizer = _registry.get(key)
        if finalizer is None:
            continue
        try:
            finalizer()
        except Exception:
            import traceback

            traceback.print_exc()
    if minpriority is None:
        _registry.clear()


def clear_finalizers() -> None:
    """Drop every finalizer (a freshly forked child must not run its parent's)."""
    _registry.clear()


# The stdin of this process's forked children: /dev/null as a text stream,
# made once here, before a fork (``ready_null_stdin``), or by ``close_stdin``.
_null_stdin: Any = None


def ready_null_stdin() -> None:
    """Make the stdin that forked children will adopt, before forking one.

    After a fork, each page a child touches is copied: building a text stream
    over a fresh /dev/null descriptor in every child cost it ~0.1 ms, a tenth
    of a trivial fork start.  The children share this one (reading /dev/null
    has no position to share).
    """
    global _null_stdin
    if _null_stdin is None:
        try:
            fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return  # each child opens its own, or does without
        # closefd=False, as the stdlib's children have theirs: the descriptor
        # lives as long as the process (no ResourceWarning at exit).
        _null_stdin = open(fd, encoding="utf-8", closefd=False)  # noqa: SIM115


def close_stdin() -> None:
    """Replace stdin with /dev/null in a child so it never competes for the terminal."""
    global _null_stdin
    if sys.stdin is None or sys.stdin is _null_stdin:
        return
    try:
        sys.stdin.close()
    except (OSError, ValueError):
        pass
    if _null_stdin is not None and not _null_stdin.closed:
        sys.stdin = _null_stdin
        return
    try:
        fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _null_stdin = sys.stdin = open(fd, encoding="utf-8", closefd=False)  # noqa: SIM115
        except BaseException:
            os.close(fd)
            raise
    except (OSError, ValueError):
        pass


def wait_for(
    wait: Callable[[float | None], Any], predicate: Callable[[], _T], timeout: float | None
) -> _T:
    """``Condition.wait_for`` on any ``wait(timeout)``: until ``predicate()`` is true or time is up.

    Returns the predicate's last value.
    """
    result = predicate()
    if result:
        return result
    endtime = None if timeout is None else time.monotonic() + timeout
    waittime = timeout
    while not result:
        if endtime is not None:
            waittime = endtime - time.monotonic()
            if waittime <= 0:
                break
        wait(waittime)
        result = predicate()
    return result


# Documented (and pickled by reference) under the public module that re-exports them.
for _public in (
    Finalize,
    debug,
    get_logger,
    info,
    is_exiting,
    log_to_stderr,
    register_after_fork,
    sub_debug,
    sub_warning,
):
    _public.__module__ = "phalanx.util"
