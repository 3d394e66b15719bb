"""How the supervisor hands out chunks: pure bookkeeping, no I/O (tested by tables).

* ``FunctionTable`` numbers the functions a pool runs, and ``remember``
  keeps, per worker, which of them it holds: a function (a lambda pickled by
  value, say) travels to a worker once and is then named by its number; a
  worker keeps the ``FUNCS_PER_WORKER`` it used last.
* ``Pacing`` decides how many chunks a worker may hold at once, from the
  running average of how long this function's chunks take.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable
from typing import Any

__all__ = ("CREDIT", "FUNCS_PER_WORKER", "FunctionTable", "Pacing", "remember")

CREDIT = 2  # chunks a worker holds at least: one running, one waiting (no idle gap)
MAX_INFLIGHT = 1024  # ... and at most, when chunks are short
QUEUED_WORK = 0.02  # seconds of work a worker may have queued behind its running chunk
FUNCS_PER_WORKER = 16  # functions a worker keeps unpickled
FUNC_TABLE = 256  # functions the table numbers before it starts over


class FunctionTable:
    """A number for each function a pool runs (the same function, the same number)."""

    def __init__(self) -> None:
        # id(func) -> (number, func): holding func keeps its id from being reused.
        self._entries: dict[int, tuple[int, Callable[..., Any]]] = {}
        self._numbers = itertools.count()

    def number(self, func: Callable[..., Any]) -> int:
        entry = self._entries.get(id(func))
        if entry is None or entry[1] is not func:
            if len(self._entries) >= FUNC_TABLE:
                # Start over: fresh numbers, so no worker confuses an old one.
                self._entries.clear()
            entry = (next(self._numbers), func)
            self._entries[id(func)] = entry
        return entry[0]

    def lookup(self, func: Callable[..., Any]) -> int | None:
        """``func``'s number, if it has one (gives it none)."""
        entry = self._entries.get(id(func))
        return entry[0] if entry is not None and entry[1] is func else None

    def clear(self) -> None:
        self._entries.clear()


def remember(known: collections.OrderedDict[int, None], fid: int) -> tuple[bool, int | None]:
    """A worker that holds ``known`` (oldest first) is about to run function ``fid``.

    Returns whether the function must travel with the task, and the number the
    worker is to forget to make room (or None); updates ``known`` to match.
    """
    if fid in known:
        known.move_to_end(fid)
        return False, None
    forget = None
    if len(known) >= FUNCS_PER_WORKER:
        forget = known.popitem(last=False)[0]
    known[fid] = None
    return True, forget


class Pacing:
    """How many chunks a worker may hold: a few milliseconds of work, going by recent chunks.

    Long chunks: ``CREDIT`` (one running, one ready), so a slow chunk never
    holds up much else.  Short chunks: more, sent together, so that
    per-message costs vanish.
    """

    __slots__ = ("average", "func")

    def __init__(self) -> None:
        self.average: float | None = None  # running average of a chunk's duration
        self.func: Any = None  # ... of chunks of this function

    def limit(self, next_func: Any) -> int:
        """Chunks a worker may hold, when ``next_func``'s chunks are next."""
        average = self.average
        if average is None or next_func is not self.func:
            # Another function: the average says nothing about it (short tasks
            # followed by long ones would otherwise be handed out many at a
            # time, in shares fixed before anyone knows their length).
            return CREDIT
        return max(CREDIT, min(MAX_INFLIGHT, int(QUEUED_WORK / max(average, 1e-7))))

    def record(self, func: Any, took: float, count: int = 1) -> None:
        """``count`` chunks of ``func`` ran ``took`` seconds each."""
        average = self.average
        if average is None or func is not self.func:
            self.average, self.func = took, func
        elif count == 1:
            self.average = 0.8 * average + 0.2 * took
        else:  # the one-step average applied count times
            self.average = took + (average - took) * 0.8**count
