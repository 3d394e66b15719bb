"""Cooperation with the stdlib's ``multiprocessing``, when the program has imported it.

phalanx never imports ``multiprocessing``.  But a program (or a library it
uses: ``concurrent.futures``, ``logging``, joblib, pebble) may have, and may
hand stdlib objects a phalanx context or look phalanx's processes up through
the stdlib module.  This module keeps the stdlib's bookkeeping consistent
with phalanx's, and touches it only where it must:

* while phalanx pickles for a child being started, the stdlib's "spawning"
  state says so too, and the stdlib's reducers are phalanx's, so stdlib
  objects built on a phalanx context (a ``multiprocessing.queues.Queue``, a
  stdlib ``Connection``) can go to a phalanx child; phalanx's Popen objects
  speak the stdlib's fd protocol (``duplicate_for_child``/``DupFd``) for them;
* a phalanx child started while the stdlib is loaded appears in the stdlib's
  ``active_children()``;
* in a phalanx child, the stdlib's ``current_process()``/``parent_process()``
  are phalanx's, its after-fork hooks and its exit handler run (as in its
  own children), and ``logging`` records carry the child's ``processName``.

Every function here is a no-op when ``multiprocessing`` is not in
``sys.modules``.  Layer 0: it imports nothing of phalanx.
"""

from __future__ import annotations

import itertools
import sys

TYPE_CHECKING = False  # typing is not imported at run time: see phalanx/context.py
if TYPE_CHECKING:
    from typing import Any

__all__ = (
    "adopt_child",
    "child_ended",
    "child_exiting",
    "child_started",
    "defer_exit",
    "reducers",
    "set_spawning_popen",
    "spawning",
)


def _module(name: str) -> Any:
    """A submodule of the stdlib's multiprocessing, if the program has loaded it."""
    return sys.modules.get(f"multiprocessing.{name}")


def set_spawning_popen(popen: Any) -> None:
    """Mirror phalanx's "pickling for a child" state into the stdlib's (or clear it)."""
    context = _module("context")
    if context is not None:
        try:
            context.set_spawning_popen(popen)
        except Exception:  # a stdlib that changed its internals: do without
            pass


def spawning() -> bool:
    """Whether the stdlib is pickling for a child it starts (in this thread)."""
    context = _module("context")
    try:
        return context is not None and context.get_spawning_popen() is not None
    except Exception:
        return False


def reducers() -> dict[Any, Any] | None:
    """The stdlib's own reducers (its ``Connection``, ...), if it is loaded.

    Its objects register them with its ``ForkingPickler``, not with copyreg:
    phalanx's pickler adds them when it pickles for a child (see
    ``_wire.pickling.spawning``).
    """
    reduction = _module("reduction")
    table = getattr(getattr(reduction, "ForkingPickler", None), "_extra_reducers", None)
    return table if isinstance(table, dict) else None


def child_started(process: Any) -> None:
    """A phalanx child started: the stdlib's ``active_children()`` sees it too.

    (Exit handlers of libraries that stop the stdlib's children, pebble's
    among them, then stop phalanx's as well.)
    """
    stdlib_process = _module("process")
    children = getattr(stdlib_process, "_children", None)
    if isinstance(children, set):
        children.add(process)


def child_ended(process: Any) -> None:
    """A phalanx child was reaped: the stdlib must not hold on to it (nor its pidfd)."""
    children = getattr(_module("process"), "_children", None)
    if isinstance(children, set):
        children.discard(process)


def adopt_child(process: Any, parent: Any, after_fork: bool) -> None:
    """In a new phalanx child: the stdlib's view of "this process" is phalanx's.

    ``after_fork``: the child is a fork of its parent, whose stdlib state it
    inherited: clear it as the stdlib's own fork children do, and run the
    stdlib's after-fork hooks (a stdlib ``Queue`` resets its feeder there).
    """
    stdlib_process = _module("process")
    if stdlib_process is not None:
        try:
            stdlib_process._current_process = process
            stdlib_process._parent_process = parent
            stdlib_process._children = set()
            stdlib_process._process_counter = itertools.count(1)
        except Exception:
            pass
    util = _module("util")
    if after_fork and util is not None:
        try:
            util._finalizer_registry.clear()
            util._run_after_forkers()
        except Exception:
            pass
    _name_log_records(process)


def child_exiting() -> None:
    """A phalanx child is done: run the stdlib's exit handler, as its own children do.

    (Its finalizers flush the feeder of a stdlib ``Queue`` the child put to;
    a forked child lost the parent's atexit registration of it.)
    """
    util = _module("util")
    exit_function = getattr(util, "_exit_function", None)
    if exit_function is not None:
        try:
            exit_function()
        except Exception:
            pass


def defer_exit(exit_function: Any) -> bool:
    """At exit, before the stdlib's exit handler has run: run ``exit_function`` within it.

    True if deferred (the caller returns and is called again from the
    stdlib's handler, among its first finalizers).  A library that imported
    the stdlib before the program imported phalanx (pebble) registered its
    own exit hook after the stdlib's and before phalanx's: it stops its
    workers *before* the stdlib joins children, and phalanx must not join
    them earlier than the stdlib would (it would wait for them forever).
    """
    util = _module("util")
    if util is None or getattr(util, "_exiting", True):
        return False
    try:
        util.Finalize(None, exit_function, exitpriority=0)
    except Exception:
        return False
    return True


def _name_log_records(process: Any) -> None:
    """``%(processName)s`` is the child's name, not "MainProcess".

    ``logging`` asks ``sys.modules["multiprocessing"].current_process()``,
    which does not exist unless the program imported the stdlib: then wrap
    the record factory, in this child only, to ask phalanx.
    """
    logging = sys.modules.get("logging")
    if logging is None or "multiprocessing" in sys.modules:
        return
    previous = logging.getLogRecordFactory()

    def record(*args: Any, **kwargs: Any) -> Any:
        made = previous(*args, **kwargs)
        if getattr(made, "processName", None) == "MainProcess":
            made.processName = process.name
        return made

    logging.setLogRecordFactory(record)
