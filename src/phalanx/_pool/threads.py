"""The thread pool's engine: the same chunks, run by threads of this process.

Threads cannot die under a task or be killed, so this is the simple case: a
shared queue of chunks and ``processes`` threads taking from it.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any

from ..errors import PoolTerminatedError
from .results import APPLY, MAP, Chunk, fail_all, refuse

__all__ = ("ThreadBackend",)

RUN, CLOSE, TERMINATE = "RUN", "CLOSE", "TERMINATE"


class _Thread:
    """What ``Pool._pool`` lists for a thread pool: a thread with a process-like face."""

    def __init__(self, thread: threading.Thread) -> None:
        self.thread = thread
        self.pid: int | None = None
        self.name = thread.name

    def is_alive(self) -> bool:
        return self.thread.is_alive()


class ThreadBackend:
    def __init__(
        self,
        processes: int,
        initializer: Callable[..., object] | None,
        initargs: tuple[Any, ...],
    ) -> None:
        self.size = processes
        self.state = RUN
        self.broken: BaseException | None = None
        self._initializer = initializer
        self._initargs = initargs
        self._cond = threading.Condition()
        self._pending: collections.deque[Chunk] = collections.deque()
        self._feeders = 0
        self.workers: list[_Thread] = []
        for i in range(processes):
            thread = threading.Thread(
                target=self._work, name=f"ThreadPoolWorker-{i + 1}", daemon=True
            )
            thread.start()
            self.workers.append(_Thread(thread))

    def submit(self, chunks: list[Chunk]) -> None:
        with self._cond:
            if self.state != TERMINATE:
                self._pending.extend(chunks)
                self._cond.notify(len(chunks))
                return
            broken = self.broken
        refuse(chunks, broken)

    def feeder_started(self) -> None:
        with self._cond:
            self._feeders += 1

    def feeder_done(self) -> None:
        with self._cond:
            self._feeders -= 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            if self.state == RUN:
                self.state = CLOSE
            self._cond.notify_all()

    def terminate(self) -> None:
        with self._cond:
            self.state = TERMINATE
            pending = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        fail_all(pending, "the pool was terminated")
        self.join()

    def join(self, timeout: float | None = None) -> None:
        me = threading.current_thread()
        for worker in self.workers:
            if worker.thread is not me:
                worker.thread.join(timeout)

    def repopulate(self) -> None:
        pass

    def _break(self, exc: BaseException) -> None:
        """The initializer failed: the pool cannot run tasks; fail them, now and later."""
        error = PoolTerminatedError(f"the pool's initializer failed: {type(exc).__name__}: {exc}")
        error.__cause__ = exc
        with self._cond:
            self.broken = error
            self.state = TERMINATE
            pending = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        for chunk in pending:
            chunk.job._set(chunk.index, False, error)
            chunk.release()

    def _work(self) -> None:
        if self._initializer is not None:
            try:
                self._initializer(*self._initargs)
            except BaseException as exc:
                self._break(exc)
                return
        while True:
            with self._cond:
                while not self._pending:
                    if self.state == TERMINATE or (self.state == CLOSE and not self._feeders):
                        return
                    self._cond.wait()
                chunk = self._pending.popleft()
            if not chunk.dispatching():
                continue
            try:
                if chunk.kind == APPLY:
                    args, kwds = chunk.payload
                    result: Any = chunk.func(*args, **kwds)
                elif chunk.kind == MAP:
                    result = [chunk.func(x) for x in chunk.payload]
                else:
                    result = [chunk.func(*a) for a in chunk.payload]
            except BaseException as exc:  # SystemExit too: the task fails, the thread goes on
                chunk.job._set(chunk.index, False, exc)
                del exc
            else:
                chunk.job._set(chunk.index, True, result)
                del result  # the caller alone decides how long results live
            chunk.release()
            del chunk
