"""``ProcessPoolExecutor``: the ``concurrent.futures`` interface on phalanx's pool engine.

It returns standard ``concurrent.futures.Future`` objects, so ``as_completed``,
``wait`` and asyncio's ``loop.run_in_executor`` work as with the stdlib's.
It runs on the same supervisor as ``phalanx.Pool``, so:

* a worker that dies fails only the task it was running, with a
  ``WorkerLostError`` that is also a ``BrokenProcessPool``; the executor
  replaces the worker and stays usable (the stdlib's breaks for good);
* lambdas, closures and functions of ``__main__``/notebooks can be submitted;
* ``submit(..., timeout=...)`` is not offered (``fn`` may take a ``timeout``
  argument of its own); use ``phalanx.Pool.apply_async(timeout=)`` for that.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import BrokenExecutor, Executor, Future
from typing import Any

from . import _runtime, _start
from . import errors as _errors
from ._pool.backend import PoolBackend, cluster_backend
from ._pool.results import APPLY, Chunk, _Job
from ._pool.supervisor import ProcessBackend

__all__ = ("BrokenProcessPool", "ProcessPoolExecutor", "WorkerLostError")


class BrokenProcessPool(BrokenExecutor):
    """A worker of the executor died (phalanx raises ``WorkerLostError``, a subclass)."""


class WorkerLostError(_errors.WorkerLostError, BrokenProcessPool):
    """The worker running this future's call died; the executor itself goes on."""


class _FutureJob(_Job):
    """Connects one submitted call to its ``Future``."""

    _call = "submit"
    _cancellable = True

    def __init__(self, future: Future[Any]) -> None:
        super().__init__(None, None, None)
        self.future = future

    def _dispatching(self, chunk: Chunk) -> bool:
        # False if the future was cancelled while it waited: it never runs.
        # (A call requeued after its worker died is already running.)
        return self.future.running() or self.future.set_running_or_notify_cancel()

    def _set(self, index: int, ok: bool, value: Any) -> None:
        if ok:
            self.future.set_result(value)
            return
        if isinstance(value, _errors.WorkerLostError) and not isinstance(value, WorkerLostError):
            lost = WorkerLostError(
                value.args[0], value.pid, value.exitcode, value.signal, value.task
            )
            lost.__cause__ = value.__cause__
            value = lost
        # Failed before it ran (pool terminated)? It must go through RUNNING first.
        if not self.future.running() and not self.future.set_running_or_notify_cancel():
            return  # cancelled meanwhile
        self.future.set_exception(value)


def _forget(jobs: set[_FutureJob], job: _FutureJob, _future: Future[Any]) -> None:
    jobs.discard(job)


def _process_chunk(fn: Callable[..., Any], chunk: list[tuple[Any, ...]]) -> list[Any]:
    return [fn(*args) for args in chunk]


def _chunks(
    iterables: tuple[Iterable[Any], ...], chunksize: int
) -> Iterator[list[tuple[Any, ...]]]:
    it = zip(*iterables, strict=False)
    while chunk := list(itertools.islice(it, chunksize)):
        yield chunk


def _terminate(backend: PoolBackend) -> None:
    backend.terminate()


class ProcessPoolExecutor(Executor):
    """An ``Executor`` running calls in worker processes (see the module docstring)."""

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: Any = None,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        max_tasks_per_child: int | None = None,
        backend: Any = None,
    ) -> None:
        follow_capacity = max_workers is None and backend is not None
        if max_workers is None:
            max_workers = os.cpu_count() or 1
        elif max_workers <= 0:
            raise ValueError(f"max_workers must be greater than 0 (got {max_workers!r})")
        if initializer is not None and not callable(initializer):
            raise TypeError(f"initializer must be a callable (got {initializer!r})")
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int):
                raise TypeError(
                    f"max_tasks_per_child must be an integer (got {max_tasks_per_child!r})"
                )
            if max_tasks_per_child <= 0:
                raise ValueError(f"max_tasks_per_child must be >= 1 (got {max_tasks_per_child})")
        if mp_context is None:
            mp_context = _start.default
        self._max_workers = max_workers
        self._mp_context = mp_context
        self._shutdown_lock = threading.Lock()
        self._shutdown = False
        self._jobs: set[_FutureJob] = set()
        self._backend: PoolBackend
        if backend is not None:
            self._backend = cluster_backend(
                backend,
                None if follow_capacity else max_workers,
                initializer,
                tuple(initargs),
                0,
                max_tasks_per_child,
            )
            self._max_workers = self._backend.size
        else:
            self._backend = ProcessBackend(
                mp_context, max_workers, initializer, tuple(initargs), max_tasks_per_child
            )
        self._finalizer = _runtime.Finalize(self, _terminate, (self._backend,), exitpriority=15)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Schedule ``fn(*args, **kwargs)``; returns its ``Future``."""
        if not callable(fn):  # (the stdlib fails the future; we fail the call)
            raise TypeError(f"fn must be callable (got {fn!r})")
        with self._shutdown_lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if self._backend.broken is not None:
                raise BrokenProcessPool(str(self._backend.broken))
            future: Future[Any] = Future()
            job = _FutureJob(future)
            self._jobs.add(job)
            future.add_done_callback(functools.partial(_forget, self._jobs, job))
            self._backend.submit([Chunk(job, 0, fn, APPLY, (args, kwargs))])
            return future

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[Any]:
        """Like ``map(fn, *iterables)``; ``chunksize`` > 1 sends that many calls per task."""
        if chunksize < 1:
            raise ValueError(f"chunksize must be >= 1 (got {chunksize!r})")
        if chunksize == 1:
            return super().map(fn, *iterables, timeout=timeout)
        batches = super().map(
            _process_chunk, itertools.repeat(fn), _chunks(iterables, chunksize), timeout=timeout
        )
        return itertools.chain.from_iterable(batches)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more submissions; ``cancel_futures`` cancels those not started yet."""
        with self._shutdown_lock:
            self._shutdown = True
            if cancel_futures:
                for job in list(self._jobs):
                    job.future.cancel()  # a running one refuses; a waiting one never runs
        self._backend.close()
        if wait:
            self._backend.join()
