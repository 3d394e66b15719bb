"""What a pool hands back: the result objects and the task bookkeeping behind them.

A call on a pool becomes one *job* (an ``ApplyResult``, ``MapResult`` or an
``IMapIterator``) split into *chunks*; a chunk is the unit a worker runs and
reports on.  Backends (processes, threads, clusters) only ever see chunks and
report each one exactly once through ``chunk.job._set(chunk.index, ok, value)``.

Names follow ``multiprocessing.pool`` so that code catching or type-checking
them keeps working.
"""

from __future__ import annotations

import collections
import itertools
import sys
import threading
import traceback
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

from .. import _platform
from ..errors import PoolTerminatedError, TimeoutError

if TYPE_CHECKING:
    from ..pool import Pool

__all__ = (
    "APPLY",
    "MAP",
    "STARMAP",
    "ApplyResult",
    "AsyncResult",
    "Chunk",
    "IMapIterator",
    "IMapUnorderedIterator",
    "MapResult",
    "deliver",
    "fail_all",
    "refuse",
)

# How a chunk's payload calls the function.
APPLY = 0  # payload = (args, kwds): one call
MAP = 1  # payload = [x, ...]: func(x) for each
STARMAP = 2  # payload = [args, ...]: func(*args) for each

job_counter: itertools.count[int] = itertools.count()

_T = TypeVar("_T")


_ITEM = "_phalanx_item"  # set on a task's exception by the worker, taken off by add_item_note


def mark_item(exc: BaseException, position: int) -> None:
    """Record (on the exception, which carries it back) which item of its chunk raised it."""
    try:
        setattr(exc, _ITEM, position)
    except Exception:  # an exception type that takes no attributes: no note then
        pass


def add_item_note(exc: BaseException, chunk: Chunk) -> None:
    """Name the task that raised ``exc`` in a note (PEP 678): ``raised by item 3 of map(f)``."""
    position = exc.__dict__.pop(_ITEM, 0) if hasattr(exc, "__dict__") else 0
    name = getattr(chunk.func, "__qualname__", None) or repr(chunk.func)
    call = "starmap" if chunk.kind == STARMAP else chunk.job._call
    if chunk.kind == APPLY:
        note = f"raised by {call}({name}) in a pool worker"
    else:
        first = chunk.job._chunk_start(chunk.index)
        note = f"raised by item {first + position} of {call}({name}) in a pool worker"
    try:
        exc.add_note(note)
    except Exception:
        pass


class Chunk:
    """Consecutive tasks of one job, run by one worker in one go."""

    __slots__ = (
        "attempts",
        "batch",
        "batch_size",
        "func",
        "index",
        "job",
        "kind",
        "payload",
        "segment",
        "seq",
        "size",
        "solo",
        "suspect",
        "timeout",
    )

    def __init__(
        self,
        job: _Job,
        index: int,
        func: Callable[..., Any],
        kind: int,
        payload: Any,
        timeout: float | None = None,
    ) -> None:
        self.job = job
        self.index = index
        self.func = func
        self.kind = kind
        self.payload = payload
        self.size = 1 if kind == APPLY else len(payload)
        self.timeout = timeout
        self.attempts = 0
        self.segment: Any = None  # the shared memory its message travels in, if large
        self.batch = -1  # the datagram it went in (several small chunks may share one)
        self.batch_size = 1
        self.seq = 0  # its number among the chunks given to its worker
        self.solo = False  # travels alone (a batch it was in could not be unpickled)
        self.suspect = False  # a worker died unpickling a datagram that carried it

    def describe(self) -> str:
        """A short human description for error messages: ``sqr(5)`` or ``sqr over items 10..19``."""
        name = getattr(self.func, "__qualname__", None) or repr(self.func)
        if self.kind == APPLY:
            args, kwds = self.payload
            parts = [_short(a) for a in args] + [f"{k}={_short(v)}" for k, v in kwds.items()]
            return f"{name}({', '.join(parts)})"
        first = self.job._chunk_start(self.index)
        if self.size == 1:
            return f"{name}({_short(self.payload[0])}) [item {first}]"
        return f"{name} over items {first}..{first + self.size - 1}"

    def dispatching(self) -> bool:
        """Called as the chunk goes to a worker; False drops it (its job was cancelled)."""
        return self.job._dispatching(self)

    def release(self) -> None:
        """Forget the tasks' arguments (they may be large) once the chunk is over."""
        self.payload = None


def _short(value: Any, limit: int = 40) -> str:
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the real error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# A wait with no timeout blocks this long at most before it looks again: the
# longest a Ctrl-C can go unnoticed by a waiting caller.
INTERRUPT_CHECK = _platform.INTERRUPT_CHECK


_CREDIT_BATCH = 16


class _Job:
    """Common state of the result objects."""

    _pool: Any
    _call = "apply"  # the Pool method that made it (for notes on its tasks' exceptions)
    # Whether _dispatching may drop a chunk (a cancelled future's): if not, the
    # supervisor does not ask, chunk by chunk.
    _cancellable = False

    def __init__(
        self,
        pool: Any,
        callback: Callable[[Any], Any] | None,
        error_callback: Callable[[BaseException], Any] | None,
    ) -> None:
        self._pool = pool
        self._job = next(job_counter)
        # The pool's outstanding jobs, by number, as the stdlib keeps them
        # (code reads ``pool._cache``: the documentation's own example does).
        self._cache: dict[int, Any] | None = getattr(pool, "_cache", None)
        if self._cache is not None:
            self._cache[self._job] = self
        self._callback = callback
        self._error_callback = error_callback
        self._progress: Any = None

    def _chunk_start(self, index: int) -> int:
        return index

    def _dispatching(self, chunk: Chunk) -> bool:
        return True

    def _forget(self) -> None:
        """Every outcome is in: the pool no longer counts this job as outstanding."""
        cache, self._cache = self._cache, None
        if cache is not None:
            cache.pop(self._job, None)
        self._pool = None

    def _set(self, index: int, ok: bool, value: Any) -> None:
        raise NotImplementedError

    def _set_many(self, outcomes: list[tuple[int, bool, Any]]) -> None:
        """Several chunks' outcomes at once (``_set`` for each, in order)."""
        for index, ok, value in outcomes:
            self._set(index, ok, value)

    def _run_callback(self, func: Callable[[Any], Any] | None, value: Any) -> None:
        if func is None:
            return
        try:
            func(value)
        except Exception:
            # A failing callback must not take the pool's machinery down with it.
            print(f"phalanx: exception in pool callback {func!r}:", file=sys.stderr)
            traceback.print_exc()

    def _tick(self, n: int) -> None:
        if self._progress is not None:
            self._progress.update(n)

    def _end_progress(self) -> None:
        bar, self._progress = self._progress, None
        if bar is not None:
            bar.close()

    def _interrupted(self) -> None:
        """Ctrl-C while waiting on this result: let the pool stop its workers."""
        pool = self._pool
        if pool is not None:
            pool._interrupted()


class ApplyResult(_Job, Generic[_T]):
    """The future result of ``apply_async`` (and the base of ``MapResult``).

    Ready is a one-shot latch kept here, not a ``threading.Event`` (which is
    three objects with a condition): a lock taken at birth and released once
    (``_set_ready``); waiters take it and give it straight back, so all pass.
    """

    # (Generic adds no __new__/__init__: creating one costs what it did.)

    def __init__(
        self,
        pool: Pool,
        callback: Callable[[_T], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> None:
        super().__init__(pool, callback, error_callback)
        self._success = True
        self._value: Any = None
        self._done = False
        self._done_lock = threading.Lock()
        self._done_lock.acquire()

    def _set_ready(self) -> None:
        if not self._done:
            self._done = True
            self._done_lock.release()

    def _wait_ready(self, timeout: float | None) -> bool:
        if self._done:
            return True
        lock = self._done_lock
        if timeout is None:
            # In slices, not one blocking acquire: a Ctrl-C that lands just
            # before the acquire blocks would otherwise wait for the result
            # (CPython runs the handler only when the main thread wakes).
            while not lock.acquire(timeout=INTERRUPT_CHECK):
                pass
            got = True
        elif timeout > 0:
            got = lock.acquire(timeout=timeout)
        else:
            got = lock.acquire(False)
        if got:
            lock.release()
        return self._done

    def ready(self) -> bool:
        """Whether the call is over (result or exception in)."""
        return self._done

    def successful(self) -> bool:
        """Whether the call returned without raising; ``ValueError`` if not ready yet."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready: call successful() once ready() is true")
        return self._success

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the result is ready, or ``timeout`` seconds at most."""
        self._wait_ready(timeout)

    def get(self, timeout: float | None = None) -> _T:
        """The result; re-raises the task's exception; ``TimeoutError`` if not ready in time."""
        try:
            ready = self._wait_ready(timeout)
        except KeyboardInterrupt:
            self._interrupted()
            raise
        if not ready:
            raise TimeoutError(f"result not ready after {timeout} s")
        if self._success:
            return self._value  # type: ignore[no-any-return]
        raise self._value

    def _set(self, index: int, ok: bool, value: Any) -> None:
        # (Once per apply_async: the steps written out, no call where nothing is to do.)
        self._success, self._value = ok, value
        if self._progress is not None:
            self._tick(1)
            self._end_progress()
        callback = self._callback if ok else self._error_callback
        if callback is not None:
            self._run_callback(callback, value)
        self._forget()  # before waking anyone: a woken caller sees the pool's cache without it
        self._set_ready()

    def __class_getitem__(cls, item: Any) -> types.GenericAlias:
        # As the stdlib's (a types.GenericAlias), not Generic's.
        return types.GenericAlias(cls, item)


AsyncResult = ApplyResult


class MapResult(ApplyResult[list[_T]]):
    """The future list of ``map_async``/``starmap_async``: ready once every chunk is."""

    _call = "map"

    def __init__(
        self,
        pool: Pool,
        chunksize: int,
        length: int,
        callback: Callable[[list[_T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> None:
        super().__init__(pool, callback, error_callback)
        self._lock = threading.Lock()
        self._chunksize = chunksize
        self._value = [None] * length
        self._number_left = -(-length // chunksize) if length else 0
        if self._number_left == 0:
            self._set_ready()
            self._forget()

    def _chunk_start(self, index: int) -> int:
        return index * self._chunksize

    def _set(self, index: int, ok: bool, value: Any) -> None:
        self._set_many([(index, ok, value)])

    def _set_many(self, outcomes: list[tuple[int, bool, Any]]) -> None:
        items = 0
        with self._lock:
            for index, ok, value in outcomes:
                self._number_left -= 1
                if ok:
                    items += len(value)
                    if self._success:
                        start = index * self._chunksize
                        self._value[start : start + len(value)] = value
                elif self._success:
                    self._success, self._value = False, value  # the first error wins
            done = self._number_left == 0
        if items:
            self._tick(items)
        if done:
            self._end_progress()
            # Ready only when every chunk is over, as the stdlib (no fail-fast).
            self._run_callback(
                self._callback if self._success else self._error_callback, self._value
            )
            self._forget()
            self._set_ready()


class IMapIterator(_Job, Generic[_T]):
    """The iterator of ``imap``: results in input order, as they come.

    (An ``Iterator[_T]`` for type checkers, by its ``__iter__``/``__next__``.)
    """

    _call = "imap"  # (for notes on the exceptions of its tasks)

    def __init__(self, pool: Pool, chunksize: int = 1) -> None:
        super().__init__(pool, None, None)
        self._cond = threading.Condition(threading.Lock())
        self._chunksize = chunksize
        # (ok, value, last item of its chunk)
        self._items: collections.deque[tuple[bool, Any, bool]] = collections.deque()
        self._index = 0  # next position to hand to the caller
        self._unsorted: dict[int, tuple[bool, list[Any] | BaseException]] = {}
        self._next_chunk = 0
        self._length: int | None = None  # chunk count, once the input is exhausted
        self._consumed_chunk: Callable[[int], None] | None = None  # read-ahead credit
        # The caller's side: results taken from _items in bulk (one lock per
        # batch, not per result), and chunks finished but not yet credited.
        self._local: collections.deque[tuple[bool, Any, bool]] = collections.deque()
        self._credit_due = 0

    def _chunk_start(self, index: int) -> int:
        return index * self._chunksize

    def __iter__(self) -> Self:
        return self

    def next(self, timeout: float | None = None) -> _T:
        """The next result; ``TimeoutError`` if none comes within ``timeout`` seconds."""
        local = self._local
        if local:  # the hot path: results already taken over, in this thread
            ok, value, last = local.popleft()
            if last:
                self._credit_due += 1
                if self._credit_due >= _CREDIT_BATCH:
                    self._give_credit()
            if ok:
                return value  # type: ignore[no-any-return]
            raise value
        try:
            ok, value = self._next_result(timeout)
        except KeyboardInterrupt:
            self._interrupted()  # outside our lock: the pool fails chunks as it stops
            raise
        if ok:
            return value  # type: ignore[no-any-return]
        raise value

    def _next_result(self, timeout: float | None) -> tuple[bool, Any]:
        try:
            ok, value, last = self._local.popleft()
        except IndexError:
            self._give_credit()  # before waiting: let the input be read ahead
            with self._cond:
                while not self._items:
                    if self._length is not None and self._next_chunk >= self._length:
                        self._forget()
                        self._end_progress()
                        raise StopIteration from None
                    if timeout is None:  # in slices: see ApplyResult._wait_ready
                        self._cond.wait(INTERRUPT_CHECK)
                    elif not self._cond.wait(timeout) and not self._items:
                        raise TimeoutError(f"no result within {timeout} s") from None
                batch, self._items = self._items, collections.deque()
            ok, value, last = batch.popleft()
            self._local.extend(batch)
        if last:  # the caller is done with a chunk: one more may be read ahead
            self._credit_due += 1
            if self._credit_due >= _CREDIT_BATCH:
                self._give_credit()
        return ok, value

    def _give_credit(self) -> None:
        due, self._credit_due = self._credit_due, 0
        if due and self._consumed_chunk is not None:
            self._consumed_chunk(due)

    __next__ = next

    def _set(self, index: int, ok: bool, value: Any) -> None:
        self._set_many([(index, ok, value)])

    def _set_many(self, outcomes: list[tuple[int, bool, Any]]) -> None:
        with self._cond:
            was_empty = not self._items
            for index, ok, value in outcomes:
                self._unsorted[index] = (ok, value)
            while self._next_chunk in self._unsorted:
                self._deliver(*self._unsorted.pop(self._next_chunk))
            if was_empty:  # nobody waits while there are items
                self._cond.notify()
            self._forget_if_complete()
        self._tick_outcomes(outcomes)

    def _tick_outcomes(self, outcomes: list[tuple[int, bool, Any]]) -> None:
        if self._progress is not None:
            self._tick(sum(len(v) for _i, ok, v in outcomes if ok and isinstance(v, list)))

    def _deliver(self, ok: bool, value: Any) -> None:
        # Lock held.
        self._next_chunk += 1
        if ok:
            last = len(value) - 1
            if last == 0:  # (chunksize 1: the common case of imap)
                self._items.append((True, value[0], True))
            else:
                self._items.extend((True, v, i == last) for i, v in enumerate(value))
        else:
            self._items.append((False, value, True))

    def _set_length(self, chunks: int) -> None:
        with self._cond:
            self._length = chunks
            self._cond.notify_all()
            self._forget_if_complete()

    def _forget_if_complete(self) -> None:
        # (Lock held.)  Every chunk is in, though perhaps not yet consumed.
        if self._length is not None and self._next_chunk >= self._length:
            cache, self._cache = self._cache, None
            if cache is not None:
                cache.pop(self._job, None)


class IMapUnorderedIterator(IMapIterator[_T]):
    """The iterator of ``imap_unordered``: results as soon as they are ready."""

    _call = "imap_unordered"

    def _set_many(self, outcomes: list[tuple[int, bool, Any]]) -> None:
        with self._cond:
            items = self._items
            was_empty = not items
            for _index, ok, value in outcomes:
                if ok and len(value) == 1:  # (_deliver's common case, written out)
                    self._next_chunk += 1
                    items.append((True, value[0], True))
                else:
                    self._deliver(ok, value)
            if was_empty:  # nobody waits while there are items
                self._cond.notify()
            self._forget_if_complete()
        self._tick_outcomes(outcomes)


def deliver(outcomes: list[tuple[Chunk, bool, Any]]) -> None:
    """Report outcomes to their jobs, those of one job together (one lock round for a run)."""
    start = 0
    while start < len(outcomes):
        job = outcomes[start][0].job
        end = start + 1
        while end < len(outcomes) and outcomes[end][0].job is job:
            end += 1
        if end - start == 1:
            chunk, ok, value = outcomes[start]
            job._set(chunk.index, ok, value)
        else:
            job._set_many([(chunk.index, ok, value) for chunk, ok, value in outcomes[start:end]])
        for chunk, _ok, _value in outcomes[start:end]:
            chunk.payload = None  # (Chunk.release, written out: once per task)
        start = end


def refuse(chunks: list[Chunk], broken: BaseException | None) -> None:
    """Fail chunks handed to a backend that is over: with its error if it broke."""
    if broken is None:
        fail_all(chunks, "pool terminated")
        return
    for chunk in chunks:
        chunk.job._set(chunk.index, False, broken)
        chunk.release()


def fail_all(chunks: list[Chunk], why: str) -> None:
    """Fail chunks that will never run (pool terminated or broken)."""
    for chunk in chunks:
        chunk.job._set(chunk.index, False, PoolTerminatedError(f"{why}: {chunk.describe()}"))
        chunk.release()


# Documented under the module that re-exports them (reprs, tracebacks, annotations).
for _public in (ApplyResult, AsyncResult, MapResult, IMapIterator, IMapUnorderedIterator):
    _public.__module__ = "phalanx.pool"
