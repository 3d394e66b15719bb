"""An engine for tests: "workers" are threads of this process, each posing as a process.

It runs ``runner.run_task`` exactly as a real engine would, over the real hub
connection, so everything the backend decides is exercised; only the
engine's own behaviour is scripted:

* ``die()``, called by a task's function, makes its worker "die" on the spot
  (its hub connection closes, as a killed process's would; the worker comes
  back as a new "process", a new pid);
* ``kill(host, pid)`` does the same from outside, as a SIGKILL would;
* ``can_kill=False`` makes it an engine that cannot stop a running task
  (as Dask with threads); ``rerun_lost=True`` reruns a task whose worker died
  elsewhere (as Dask does), ``lose_ends`` drops the engine's word that a task
  ended (the backend must not depend on it);
* ``fail_before_start`` makes each engine task raise before the runner runs
  (a worker without phalanx, say);
* ``strand_queued()`` loses a host with the tasks queued for it, as Ray does
  with a task leased to a node that died: they never start nor end.
"""

from __future__ import annotations

import itertools
import queue
import threading
from typing import Any

from . import runner
from .engine import Done, TaskEnd

__all__ = ("FakeEngine", "FakeWorkerDied", "die")

_local = threading.local()
_pids = itertools.count(50_000)


class FakeWorkerDied(BaseException):
    """Raised in a fake worker whose "process" died under it."""


def die() -> None:
    """Called by a task's function: the fake worker running it dies now."""
    engine, worker = _local.current
    engine._die(worker)
    raise FakeWorkerDied("killed")


class _Handle:
    def __init__(self, spec: Any, task_id: int, done: Done, refs: list[Any]) -> None:
        self.refs = refs
        self.spec = spec
        self.task_id = task_id
        self.done = done
        self.state = "queued"  # running, over
        self.lock = threading.Lock()
        self.runs = 0

    def end(self, end: TaskEnd, lose: bool) -> None:
        with self.lock:
            if self.state == "over":
                return
            self.state = "over"
        if not lose:
            self.done(self, end)


class _Stored:
    """A buffer in the fake engine's store (``lose_stored()`` loses them all)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.lost = False


class _Worker:
    def __init__(self, host: str, number: int) -> None:
        self.host = host
        self.number = number
        self.pid = next(_pids)
        self.dead = False
        self.pools: set[str] = set()
        self.handle: _Handle | None = None


class FakeEngine:
    name = "fake"

    def __init__(
        self,
        workers: int = 2,
        *,
        host: str = "fakehost",
        can_kill: bool = True,
        rerun_lost: bool = False,
        lose_ends: bool = False,
        fail_before_start: BaseException | None = None,
        hub_host: str = "127.0.0.1",
    ) -> None:
        self._hub_host = hub_host
        self.can_kill = can_kill
        self.rerun_lost = rerun_lost
        self.lose_ends = lose_ends
        self.fail_before_start = fail_before_start
        self.closed = False
        self.lost_reason: str | None = None  # set by a test: the engine is gone
        self.doubt = False  # set by a test: the engine's head is not answering
        self.submitted = 0
        self.puts = 0
        self.lost_hosts = 0
        self._stored: list[_Stored] = []
        self._queue: queue.Queue[_Handle | None] = queue.Queue()
        self._lock = threading.Lock()
        self._workers = [_Worker(host, i) for i in range(workers)]
        self._threads = [
            threading.Thread(target=self._work, args=(w,), name=f"fake-worker-{i}", daemon=True)
            for i, w in enumerate(self._workers)
        ]
        for thread in self._threads:
            thread.start()

    # -- the Engine protocol ----------------------------------------------------------

    def capacity(self) -> int:
        return len(self._workers)

    def hub_host(self) -> str:
        return self._hub_host

    def put(self, data: memoryview) -> _Stored:
        self.puts += 1
        stored = _Stored(bytes(data))
        self._stored.append(stored)
        return stored

    def stored_lost(self, ref: Any) -> bool:
        return bool(ref.lost)

    def submit(self, spec: Any, task_id: int, done: Done, refs: list[Any]) -> _Handle:
        if self.closed:
            raise RuntimeError("the fake engine is closed")
        handle = _Handle(spec, task_id, done, refs)
        self.submitted += 1
        self._queue.put(handle)
        return handle

    def cancel(self, handle: Any, force: bool) -> bool:
        with handle.lock:
            if handle.state == "queued":
                handle.state = "cancelled"
            elif handle.state != "running":
                return True
        if handle.state == "cancelled":
            handle.state = "queued"  # so that end() reports it
            handle.end(TaskEnd(False, cancelled=True), self.lose_ends)
            return True
        return False  # a thread cannot be stopped; kill() its "process" instead

    def hosts_lost(self) -> int:
        return self.lost_hosts

    def head_answered_since(self, since: float) -> bool:
        return not self.doubt

    def lost(self) -> str | None:
        return self.lost_reason

    def kill(self, host: str, pid: int) -> bool:
        if not self.can_kill:
            return False
        for worker in self._workers:
            if worker.pid == pid:
                self._die(worker)
                return True
        return False

    def close(self) -> None:
        self.closed = True
        for _ in self._threads:
            self._queue.put(None)

    # -- for tests ----------------------------------------------------------------------

    def running(self) -> list[int]:
        """The numbers of the workers running an engine task now."""
        return [i for i, w in enumerate(self._workers) if w.handle is not None]

    def pids(self) -> list[int]:
        return [w.pid for w in self._workers]

    def lose_stored(self) -> None:
        """Lose everything put so far, as Dask does when the workers holding scattered
        data die: a task that needs it ends, cancelled, before it starts."""
        for stored in self._stored:
            stored.lost = True

    def strand_queued(self) -> int:
        """Lose a host together with every task queued now: they never start nor end
        (the engine forgets them), and ``hosts_lost()`` says a host was lost.  Returns
        how many tasks were stranded."""
        stranded = 0
        while True:
            try:
                handle = self._queue.get_nowait()
            except queue.Empty:
                break
            if handle is None:
                self._queue.put(None)
                break
            with handle.lock:
                if handle.state == "queued":
                    handle.state = "stranded"
                    stranded += 1
        self.lost_hosts += 1
        return stranded

    def kill_worker(self, number: int) -> int:
        """Kill worker ``number`` from outside (as SIGKILL would); returns the pid killed."""
        worker = self._workers[number]
        pid = worker.pid
        self._die(worker)
        return pid

    # -- inside -------------------------------------------------------------------------

    def _die(self, worker: _Worker) -> None:
        with self._lock:
            if worker.dead:
                return
            worker.dead = True
            pools = list(worker.pools)
        for pool in pools:
            runner.forget(pool, (worker.host, worker.pid))

    def _work(self, worker: _Worker) -> None:
        while True:
            handle = self._queue.get()
            if handle is None:
                return
            with handle.lock:
                if handle.state != "queued":
                    continue
                handle.state = "running"
                handle.runs += 1
            with self._lock:
                if worker.dead:  # the "process" died: a new one takes its place
                    worker.dead = False
                    worker.pid = next(_pids)
                    worker.pools.clear()
                worker.pools.add(handle.spec.pool)
                identity = (worker.host, worker.pid)
            _local.current = (self, worker)
            worker.handle = handle
            try:
                if self.fail_before_start is not None:
                    raise self.fail_before_start
                if any(ref.lost for ref in handle.refs):
                    handle.end(TaskEnd(False, cancelled=True), self.lose_ends)
                    continue
                stored = [ref.data for ref in handle.refs]
                runner.run_task(handle.spec, handle.task_id, *stored, identity=identity)
            except BaseException as exc:
                lost = worker.dead
                if lost and self.rerun_lost:
                    with handle.lock:
                        handle.state = "queued"
                    self._queue.put(handle)
                    continue
                handle.end(TaskEnd(False, error=exc, lost=lost), self.lose_ends)
            else:
                handle.end(TaskEnd(True), self.lose_ends)
            finally:
                _local.current = None
                worker.handle = None
