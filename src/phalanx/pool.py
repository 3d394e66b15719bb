"""Pools of workers, under the stdlib's ``multiprocessing.pool`` names.

``Pool`` has the stdlib's API and runs on a supervisor (``_pool.supervisor``)
that never leaves a caller waiting for a task a dead worker held.  Beyond the
stdlib, as keyword-only arguments:

* ``timeout=`` on ``apply``/``apply_async``/``map``/``map_async``/``imap``/
  ``imap_unordered``/``starmap``/``starmap_async``: a task running longer is
  stopped (its worker killed and replaced) and fails with ``TaskTimeoutError``.
  With ``chunksize`` > 1, a chunk of n tasks gets n times the timeout.
* ``progress=True`` on ``map``/``imap``/``imap_unordered``/``starmap``: a tqdm
  bar when tqdm is installed (``phalanx[progress]``), a plain one otherwise.
* ``Pool(retries=n)``: a task whose worker died runs again, up to n times
  (for idempotent work).

A worker that dies fails the task it was running with ``WorkerLostError``;
``imap``/``imap_unordered`` read their input lazily (an endless generator
works); Ctrl-C while waiting on the pool terminates it, leaving no workers.
"""

from __future__ import annotations

import itertools
import os
import threading
import types
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final, Self, TypeVar

from . import _runtime, _start
from ._pool.backend import cluster_backend
from ._pool.progress import make_bar
from ._pool.results import APPLY, MAP, STARMAP, Chunk
from ._pool.results import ApplyResult as ApplyResult
from ._pool.results import AsyncResult as AsyncResult
from ._pool.results import IMapIterator as IMapIterator
from ._pool.results import IMapUnorderedIterator as IMapUnorderedIterator
from ._pool.results import MapResult as MapResult
from ._pool.results import job_counter as job_counter
from ._pool.supervisor import ProcessBackend
from ._pool.threads import ThreadBackend
from .errors import ExceptionWithTraceback as ExceptionWithTraceback
from .errors import MaybeEncodingError as MaybeEncodingError
from .errors import PoolTerminatedError as PoolTerminatedError
from .errors import RemoteTraceback as RemoteTraceback
from .errors import TaskTimeoutError as TaskTimeoutError
from .errors import TimeoutError as TimeoutError
from .errors import WorkerLostError as WorkerLostError
from .errors import rebuild_exc as rebuild_exc

# As the stdlib's; the other public names (the result classes, the states,
# mapstar...) are there too, as in the stdlib, for code that uses them.
__all__ = ("Pool", "ThreadPool")

_S = TypeVar("_S")
_T = TypeVar("_T")

INIT: Final = "INIT"
RUN: Final = "RUN"
CLOSE: Final = "CLOSE"
TERMINATE: Final = "TERMINATE"

# imap reads its input ahead of the caller: this many chunks per worker, and
# at least _READAHEAD_ITEMS items.  Small tasks need a deep pipeline: its three
# threads here (feeder, supervisor, caller) share the GIL, which a waiting thread
# may get only after a switch interval (5 ms); 512 items of an identity map
# (~1.3 ms of work) let it run dry several times a window, and an
# imap_unordered of 20k small tasks took 1.3x as long as with 2048 (issue 16).
_READAHEAD = 4
_READAHEAD_ITEMS = 2048
_FEED_BATCH = 64  # chunks the feeder hands over at once

# Re-exported for code that imports them from here, as from the stdlib.
_reexported = (
    ApplyResult,
    AsyncResult,
    ExceptionWithTraceback,
    IMapIterator,
    IMapUnorderedIterator,
    MapResult,
    MaybeEncodingError,
    RemoteTraceback,
    job_counter,
    rebuild_exc,
    PoolTerminatedError,
    TaskTimeoutError,
    TimeoutError,
    WorkerLostError,
)


def mapstar(args: tuple[Callable[..., Any], Iterable[Any]]) -> list[Any]:
    """``list(map(func, items))`` for ``args = (func, items)`` (as the stdlib's)."""
    return list(map(*args))


def starmapstar(args: tuple[Callable[..., Any], Iterable[Any]]) -> list[Any]:
    """``list(itertools.starmap(func, items))`` for ``args = (func, items)``."""
    return list(itertools.starmap(args[0], args[1]))


def _check_timeout(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds or None (got {timeout!r})")
    return float(timeout)


class Pool:
    """A pool of worker processes that run the tasks given to it.

    Args:
        processes: How many workers (default: ``os.cpu_count()``).  On a cluster
            backend, how many engine tasks may run at once (default: the cluster's
            capacity).
        initializer: Called as ``initializer(*initargs)`` in each worker when it
            starts.  If it raises three times in a row, the pool breaks with
            ``PoolTerminatedError`` instead of starting workers forever.
        initargs: The initializer's arguments.
        maxtasksperchild: Replace a worker after it ran this many tasks (or
            chunks), to give back memory a library leaks.  None: never.
        context: The context whose start method starts the workers (default: the
            default context).
        retries: phalanx's: run a task whose worker *died* (not one that raised)
            up to this many more times, on other workers.  For idempotent work.
        backend: phalanx's: run the workers on a cluster engine instead of this
            machine: ``"dask"``, ``"ray"``, an address (``"dask://host:8786"``,
            ``"ray://host:10001"``) or a ``phalanx.cluster`` backend object.

    Raises:
        ValueError: ``processes`` is not a positive int, ``maxtasksperchild`` not a
            positive int or None, or ``retries`` not an int >= 0.
        TypeError: ``initializer`` is not callable.

    Use it in a ``with`` block (leaving it calls ``terminate()``), or call
    ``close()`` then ``join()``.  A worker that dies fails only the task it was
    running, with ``WorkerLostError``, and is replaced; Ctrl-C while waiting on the
    pool terminates it.

    Example::

        with Pool(4) as pool:
            squares = pool.map(square, range(100))
    """

    _wrap_exception = True

    @staticmethod
    def Process(ctx: Any, *args: Any, **kwds: Any) -> Any:
        """``ctx.Process(*args, **kwds)`` (the stdlib's hook; phalanx's workers do not use it)."""
        return ctx.Process(*args, **kwds)

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
        *,
        retries: int = 0,
        backend: Any = None,
    ) -> None:
        self._state = INIT
        self._backend: Any = None
        self._cache: dict[int, Any] = {}  # outstanding jobs by number (see _pool.results)
        follow_capacity = processes is None and backend is not None
        if processes is None:
            processes = os.cpu_count() or 1
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
            raise ValueError(f"Number of processes must be at least 1 (got {processes!r})")
        if maxtasksperchild is not None and (
            isinstance(maxtasksperchild, bool)
            or not isinstance(maxtasksperchild, int)
            or maxtasksperchild <= 0
        ):
            raise ValueError(
                f"maxtasksperchild must be a positive int or None (got {maxtasksperchild!r})"
            )
        if initializer is not None and not callable(initializer):
            raise TypeError(f"initializer must be a callable (got {initializer!r})")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an int >= 0 (got {retries!r})")
        self._processes = processes
        self._initializer = initializer
        self._initargs = tuple(initargs)
        self._maxtasksperchild = maxtasksperchild
        if backend is not None:
            size = None if follow_capacity else processes
            self._backend = cluster_backend(
                backend, size, initializer, self._initargs, retries, maxtasksperchild
            )
            self._processes = self._backend.size
            self._ctx = None
        else:
            self._backend = self._make_backend(context, retries)
        self._state = RUN
        # At exit, before the processes machinery joins children: stop the workers.
        self._terminate = _runtime.Finalize(
            self, _terminate_backend, (self._backend,), exitpriority=15
        )

    def _make_backend(self, context: Any, retries: int) -> Any:
        if context is None:
            context = _start.default  # the default start method, as it is when workers start
        self._ctx = context
        return ProcessBackend(
            context,
            self._processes,
            self._initializer,
            self._initargs,
            self._maxtasksperchild,
            retries,
        )

    # -- the stdlib's introspection points ----------------------------------------------

    @property
    def _pool(self) -> list[Any]:
        return [w.process if hasattr(w, "process") else w for w in self._backend.workers]

    def _repopulate_pool(self) -> None:
        self._backend.repopulate()

    def __repr__(self) -> str:
        cls = type(self)
        return (
            f"<{cls.__module__}.{cls.__qualname__} state={self._state} pool_size={self._processes}>"
        )

    def __reduce__(self) -> Any:
        raise NotImplementedError(
            "pool objects cannot be passed between processes or pickled: create the pool "
            "in the process that uses it"
        )

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if getattr(self, "_state", None) == RUN:
            _warn(f"unclosed running multiprocessing pool {self!r}", ResourceWarning, source=self)
            backend = getattr(self, "_backend", None)
            if backend is not None:
                backend.close()

    def _check_running(self) -> None:
        if self._state != RUN:
            raise ValueError(f"Pool not running (state {self._state}): it was closed or terminated")
        broken = self._backend.broken
        if broken is not None:
            raise broken

    # -- single calls ------------------------------------------------------------------

    def apply(
        self,
        func: Callable[..., _T],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] = {},
        *,
        timeout: float | None = None,
    ) -> _T:
        """Call ``func(*args, **kwds)`` in a worker and wait for its result.

        Args:
            func: A callable; lambdas and functions of ``__main__`` work under every
                start method (they travel by value).
            args: Positional arguments.
            kwds: Keyword arguments.
            timeout: phalanx's: seconds the call may run in its worker (counted
                from its start there); past that its worker is killed and the call
                fails with ``TaskTimeoutError``.

        Returns:
            What ``func`` returned.

        Raises:
            Exception: Whatever ``func`` raised, with the worker's traceback as its
                ``__cause__`` and a note naming the call.
            phalanx.errors.WorkerLostError: The worker died while running it.
            TaskTimeoutError: It ran past ``timeout``.
            ValueError: The pool is closed or terminated.
        """
        return self._wait(self.apply_async(func, args, kwds, timeout=timeout))

    def apply_async(
        self,
        func: Callable[..., _T],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] = {},
        callback: Callable[[_T], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        timeout: float | None = None,
    ) -> AsyncResult[_T]:
        """Start ``func(*args, **kwds)`` in a worker; return at once.

        Args:
            func: A callable (see ``apply``).
            args: Positional arguments.
            kwds: Keyword arguments.
            callback: Called with the result when it is ready, in the pool's
                supervisor thread (keep it short).
            error_callback: Called with the exception instead, if the call fails.
            timeout: phalanx's: as for ``apply``.

        Returns:
            An ``AsyncResult``: ``get(timeout)`` waits for the result (or raises
            the call's exception), ``ready()``, ``successful()`` and ``wait()``.

        Raises:
            ValueError: The pool is closed or terminated.
            TypeError: ``func`` is not callable.

        Example::

            results = [pool.apply_async(fetch, (url,)) for url in urls]
            pages = [r.get(timeout=60) for r in results]
        """
        # (The checks cost a call each only when they may fail: a loop of small
        # apply_async calls spends a good part of its time here.)
        if self._state != RUN or self._backend.broken is not None:
            self._check_running()
        if not callable(func):
            _check_func(func)
        limit = None if timeout is None else self._check_task_timeout(timeout)
        result: ApplyResult[_T] = ApplyResult(self, callback, error_callback)
        if type(args) is not tuple:
            args = tuple(args)
        # As the stdlib, the arguments go as given (a dict is not copied).
        kwds = kwds if type(kwds) is dict else dict(kwds)
        self._backend.submit([Chunk(result, 0, func, APPLY, (args, kwds), limit)])
        return result

    # -- map family ----------------------------------------------------------------------

    def map(
        self,
        func: Callable[[_S], _T],
        iterable: Iterable[_S],
        chunksize: int | None = None,
        *,
        timeout: float | None = None,
        progress: bool | str = False,
    ) -> list[_T]:
        """Apply ``func`` to every item of ``iterable``, in the workers; wait for all.

        The items are sent in chunks of ``chunksize`` (default: about eight chunks
        per worker; 1 with a ``timeout``).  The whole iterable is read first: use
        ``imap`` for a long or endless one.

        Args:
            func: A callable of one argument.
            iterable: The items.
            chunksize: Items per task sent to a worker.
            timeout: phalanx's: seconds each item may run (a chunk of n items gets
                n times that); an overdue chunk's worker is killed and the map fails
                with ``TaskTimeoutError``.
            progress: phalanx's: True, or a description, for a progress bar on
                stderr (tqdm's if installed).

        Returns:
            ``[func(x) for x in iterable]``, in order.

        Raises:
            Exception: The first exception ``func`` raised, with a note naming the
                item (``raised by item 3 of map(f) in a pool worker``).
            phalanx.errors.WorkerLostError: A worker died while running a chunk.
            TaskTimeoutError: A chunk ran past its timeout.
            ValueError: The pool is closed or terminated, or ``chunksize`` < 1.
        """
        result = self._map_async(func, iterable, MAP, chunksize, None, None, timeout, progress)
        values: list[_T] = self._wait(result)
        return values

    def starmap(
        self,
        func: Callable[..., _T],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        *,
        timeout: float | None = None,
        progress: bool | str = False,
    ) -> list[_T]:
        """Like ``map``, with each item unpacked as arguments: ``func(*args)``.

        Args:
            func: A callable.
            iterable: Tuples (or other iterables) of arguments.
            chunksize: As for ``map``.
            timeout: phalanx's: as for ``map``.
            progress: phalanx's: as for ``map``.

        Returns:
            ``[func(*args) for args in iterable]``, in order.

        Raises:
            Exception: As for ``map``.

        Example::

            pool.starmap(pow, [(2, 3), (3, 2)])  # [8, 9]
        """
        result = self._map_async(func, iterable, STARMAP, chunksize, None, None, timeout, progress)
        values: list[_T] = self._wait(result)
        return values

    def map_async(
        self,
        func: Callable[[_S], _T],
        iterable: Iterable[_S],
        chunksize: int | None = None,
        callback: Callable[[list[_T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        timeout: float | None = None,
    ) -> MapResult[_T]:
        """Start a ``map``; return at once.

        Args:
            func: A callable of one argument.
            iterable: The items (read at once).
            chunksize: As for ``map``.
            callback: Called with the list of results when all are ready, in the
                pool's supervisor thread.
            error_callback: Called with the first exception instead, if one fails.
            timeout: phalanx's: as for ``map``.

        Returns:
            A ``MapResult``, whose ``get(timeout)`` is the list of results (or
            raises the first exception).
        """
        return self._map_async(func, iterable, MAP, chunksize, callback, error_callback, timeout)

    def starmap_async(
        self,
        func: Callable[..., _T],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[list[_T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        timeout: float | None = None,
    ) -> AsyncResult[list[_T]]:
        """Start a ``starmap``; return at once.

        Args:
            func: A callable.
            iterable: Tuples of arguments (read at once).
            chunksize: As for ``map``.
            callback: As for ``map_async``.
            error_callback: As for ``map_async``.
            timeout: phalanx's: as for ``map``.

        Returns:
            An ``AsyncResult`` whose ``get(timeout)`` is the list of results.
        """
        return self._map_async(
            func, iterable, STARMAP, chunksize, callback, error_callback, timeout
        )

    def _map_async(
        self,
        func: Callable[..., _T],
        iterable: Iterable[Any],
        kind: int,
        chunksize: int | None,
        callback: Callable[[list[_T]], object] | None,
        error_callback: Callable[[BaseException], object] | None,
        timeout: float | None,
        progress: bool | str = False,
    ) -> MapResult[_T]:
        self._check_running()
        _check_func(func)
        limit = self._check_task_timeout(timeout)
        items = iterable if isinstance(iterable, (list, tuple)) else list(iterable)
        if chunksize is None:
            chunksize = 1 if limit is not None else self._auto_chunksize(len(items))
        _check_chunksize(chunksize)
        result: MapResult[_T] = MapResult(self, chunksize, len(items), callback, error_callback)
        if progress and items:
            result._progress = make_bar(len(items), _desc(progress, func))
        chunks = [
            Chunk(result, i, func, kind, list(items[start : start + chunksize]), limit)
            for i, start in enumerate(range(0, len(items), chunksize))
        ]
        if chunks:
            self._backend.submit(chunks)
        return result

    def _auto_chunksize(self, n: int) -> int:
        # Eight chunks per worker: few enough messages that per-task overhead
        # vanishes, enough that one slow chunk does not leave the others idle.
        chunksize, extra = divmod(n, self._processes * 8)
        return max(1, chunksize + bool(extra))

    def imap(
        self,
        func: Callable[[_S], _T],
        iterable: Iterable[_S],
        chunksize: int = 1,
        *,
        timeout: float | None = None,
        progress: bool | str = False,
    ) -> IMapIterator[_T]:
        """Apply ``func`` to the items of ``iterable``; yield the results in order.

        The input is read lazily, a bounded window ahead of the consumer, so an
        endless generator works and memory stays bounded.

        Args:
            func: A callable of one argument.
            iterable: The items; any iterable, read as the results are consumed.
            chunksize: Items per task (default 1; larger for many short items).
            timeout: phalanx's: seconds each item may run (see ``map``).
            progress: phalanx's: as for ``map`` (the bar has no total for an
                iterable without ``len``).

        Returns:
            An iterator of the results; its ``next(timeout)`` waits at most
            ``timeout`` seconds.  An item's exception is raised by the ``next()``
            that reaches it; the iterator goes on after it.

        Example::

            for line, words in zip(lines, pool.imap(count_words, lines, chunksize=64)):
                ...
        """
        return self._imap(IMapIterator, func, iterable, chunksize, timeout, progress)

    def imap_unordered(
        self,
        func: Callable[[_S], _T],
        iterable: Iterable[_S],
        chunksize: int = 1,
        *,
        timeout: float | None = None,
        progress: bool | str = False,
    ) -> IMapIterator[_T]:
        """Like ``imap``, but yield each result as soon as it is ready, in any order.

        Args:
            func: A callable of one argument.
            iterable: The items, read lazily.
            chunksize: Items per task (default 1).
            timeout: phalanx's: as for ``imap``.
            progress: phalanx's: as for ``imap``.

        Returns:
            An iterator of the results, in the order they finish.
        """
        return self._imap(IMapUnorderedIterator, func, iterable, chunksize, timeout, progress)

    def _imap(
        self,
        cls: type[IMapIterator[Any]],
        func: Callable[[_S], _T],
        iterable: Iterable[_S],
        chunksize: int,
        timeout: float | None,
        progress: bool | str,
    ) -> IMapIterator[_T]:
        self._check_running()
        _check_func(func)
        limit = self._check_task_timeout(timeout)
        _check_chunksize(chunksize)
        result: IMapIterator[_T] = cls(self, chunksize)
        if progress:
            total = len(iterable) if hasattr(iterable, "__len__") else None  # type: ignore[arg-type]
            result._progress = make_bar(total, _desc(progress, func))
        window = _Window(max(_READAHEAD * self._processes, -(-_READAHEAD_ITEMS // chunksize)))
        result._consumed_chunk = window.give
        backend = self._backend
        backend.feeder_started()
        try:
            feeder = threading.Thread(
                target=_feed,
                args=(backend, result, func, iter(iterable), chunksize, limit, window),
                name="phalanx-pool-imap-feeder",
                daemon=True,
            )
            feeder.start()
        except BaseException:
            backend.feeder_done()
            raise
        return result

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Accept no more tasks; the workers exit once every submitted task is done.

        Call ``join()`` afterwards to wait for them.
        """
        if self._state == RUN:
            self._state = CLOSE
        self._backend.close()

    def terminate(self) -> None:
        """Stop the workers now, and wait for them to exit.

        Tasks not finished fail with ``PoolTerminatedError`` (the stdlib leaves
        their ``get()`` waiting forever).  Leaving a ``with`` block calls this.
        """
        self._state = TERMINATE
        self._terminate()

    def join(self) -> None:
        """Wait for the workers to exit (after ``close()`` or ``terminate()``).

        Raises:
            ValueError: The pool is still running (call ``close()`` first).
        """
        if self._state == RUN:
            raise ValueError("Pool is still running: call close() or terminate() before join()")
        if self._state not in (CLOSE, TERMINATE):
            raise ValueError(f"In unknown state {self._state}")
        self._backend.join()

    def __enter__(self) -> Self:
        self._check_running()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: types.TracebackType | None,
    ) -> None:
        self.terminate()

    # -- helpers -------------------------------------------------------------------------

    def _check_task_timeout(self, timeout: float | None) -> float | None:
        return _check_timeout(timeout)

    def _wait(self, result: ApplyResult[_T]) -> _T:
        try:
            result.wait()
        except KeyboardInterrupt:
            self._interrupted()
            raise
        return result.get()

    def _interrupted(self) -> None:
        """Ctrl-C while the caller waits on us: stop everything, leave nothing running."""
        if self._state != TERMINATE:
            self.terminate()

    def __class_getitem__(cls, item: Any) -> types.GenericAlias:
        return types.GenericAlias(cls, item)


def _terminate_backend(backend: Any) -> None:
    backend.terminate()


def _check_func(func: object) -> None:
    # Here, not in the worker: the stdlib fails the task with a TypeError;
    # failing the call says which call was wrong, before anything is queued.
    if not callable(func):
        raise TypeError(f"func must be callable (got {func!r})")


def _check_chunksize(chunksize: Any) -> None:
    if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
        raise ValueError(f"Chunksize must be 1+, not {chunksize!r}")


def _desc(progress: bool | str, func: Any) -> str:
    if isinstance(progress, str):
        return progress
    return getattr(func, "__name__", None) or "tasks"


class _Window:
    """The read-ahead credit of an imap: chunks its feeder may submit before the caller takes them.

    A counter under one lock: the feeder takes all the credit there is in one
    go, the caller gives it back a batch at a time.
    """

    def __init__(self, size: int) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._free = size

    def take(self, most: int, timeout: float) -> int:
        """Up to ``most`` units; 0 if none came within ``timeout``."""
        with self._cond:
            if self._free <= 0:
                self._cond.wait(timeout)
                if self._free <= 0:
                    return 0
            got = min(most, self._free)
            self._free -= got
            return got

    def give(self, n: int) -> None:
        with self._cond:
            self._free += n
            if self._free == n:  # it was empty: the feeder may be waiting
                self._cond.notify()


def _feed(
    backend: Any,
    result: IMapIterator[Any],
    func: Callable[..., Any],
    source: Iterator[Any],
    chunksize: int,
    timeout: float | None,
    window: _Window,
) -> None:
    """Feed an imap's input to the pool a chunk at a time, ``window`` chunks ahead.

    Once the pool is closed, the rest of the input is read without waiting
    for the consumer (as the stdlib does), so that ``close(); join()`` ends.
    """
    index = 0
    try:
        while backend.state != "TERMINATE":
            credit = 0  # all the window allows now: fewer, bigger hand-overs
            while backend.state == "RUN" and not credit:
                credit = window.take(_FEED_BATCH, 0.1)
            if backend.state == "TERMINATE":
                return
            if backend.state != "RUN":
                credit = _FEED_BATCH  # closed: read the rest without waiting for the caller
            chunks: list[Chunk] = []
            error = None
            try:
                if chunksize == 1:  # (imap's default: an item a chunk, no slicing)
                    at = index
                    for item in itertools.islice(source, credit):
                        chunks.append(Chunk(result, at, func, MAP, [item], timeout))
                        at += 1
                else:
                    while len(chunks) < credit:
                        items = list(itertools.islice(source, chunksize))
                        if not items:
                            break
                        chunks.append(Chunk(result, index + len(chunks), func, MAP, items, timeout))
            except Exception as exc:  # the input itself failed: fail at that position
                error = exc
            if credit > len(chunks):
                window.give(credit - len(chunks))
            if chunks:
                backend.submit(chunks)
                index += len(chunks)
            if error is not None:
                # As the stdlib: the chunk being filled fails as a whole, at its
                # position (CPython's suite checks that the error comes right
                # after the previous full chunk).
                result._set(index, False, error)
                index += 1
                return
            if len(chunks) < credit:
                return  # the input is exhausted
    finally:
        result._set_length(index)
        backend.feeder_done()


class ThreadPool(Pool):
    """A ``Pool`` of threads in this process (same API; no pickling, no timeouts)."""

    _wrap_exception = False

    @staticmethod
    def Process(ctx: Any, *args: Any, **kwds: Any) -> Any:
        """``threading.Thread(*args, **kwds)`` (the stdlib's hook)."""
        return threading.Thread(*args, **kwds)

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
    ) -> None:
        super().__init__(processes, initializer, initargs)

    def _make_backend(self, context: Any, retries: int) -> Any:
        self._ctx = None
        return ThreadBackend(self._processes, self._initializer, self._initargs)

    def _check_task_timeout(self, timeout: float | None) -> float | None:
        if timeout is not None:
            raise ValueError(
                "timeout= needs a process pool: a thread cannot be stopped in the middle of "
                "a task (use Pool, or AsyncResult.get(timeout) to stop waiting)"
            )
        return None

    def _interrupted(self) -> None:
        pass  # threads cannot be stopped; Ctrl-C just stops the wait
