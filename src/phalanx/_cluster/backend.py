"""The pool's backend on a cluster engine: every policy, whatever the engine.

``Pool`` hands this backend chunks, as it hands them to the local process
backend.  One supervisor thread here:

* combines queued chunks into *engine tasks* of about ``TARGET_TASK_SECONDS``
  of measured work (``k`` chunks each, following the per-chunk times the
  runners report), keeps at most ``IN_FLIGHT_PER_SLOT`` tasks per slot in
  flight, and splits the tail evenly between the slots;
* serves the *hub*: a phalanx ``Listener`` (mutual HMAC-SHA256 with a key of
  this pool's own) to which every runner connects (``runner`` has the
  protocol); it ships the pool's function once per worker process, hands out
  a task's chunks when the task starts, and takes each chunk's outcome as
  it ends;
* blames exactly: a runner's connection that ends means its process died,
  and only the chunk it had begun and not finished fails
  (``WorkerLostError`` naming the engine, host, pid and item) or runs again
  (``retries``); the chunks of its task it had not begun run elsewhere, and
  the engine's own rerun of that task finds nothing left to do;
* times tasks from the moment they begin (``timeout=``): an overdue one fails
  on time and is stopped where the engine can stop it (``Engine.cancel`` with
  force, else ``Engine.kill`` of its process), or a ``ClusterSemanticsWarning``
  says it runs on.

The engine itself is reached only through an ``engine.Engine`` adapter.

(Over 800 lines: its records, ``_Entry``, ``_Task``, ``_Peer``, are to move to a
module of their own; a first try made ``ray://`` pools fail to connect, for a
reason not found yet, so they stay here until it is.)
"""

from __future__ import annotations

import collections
import errno
import functools
import itertools
import math
import os
import secrets
import selectors
import threading
import time
import warnings
from typing import Any

from .._pool.results import Chunk, add_item_note, deliver, fail_all, refuse
from .._wire import pickling
from ..errors import (
    ClusterSemanticsWarning,
    PoolTerminatedError,
    TaskTimeoutError,
    WorkerLostError,
)
from .engine import Engine, TaskEnd
from .records import ASSIGNED, BEGUN, DONE, QUEUED, Entry, Peer, Task, is_loopback
from .runner import PEER_SILENT_AFTER, HubSpec, tune_link
from .store import Store, encode

__all__ = ("ClusterBackend",)

RUN, CLOSE, TERMINATE = "RUN", "CLOSE", "TERMINATE"

TARGET_TASK_SECONDS = 0.1
IN_FLIGHT_PER_SLOT = 2
MAX_CHUNKS_PER_TASK = 4096
START_FAILURES = 3  # engine tasks failing before they start, in a row, that break the pool
GRACE = 1.0  # after an engine says a started task failed, wait this long for its runner's news
# A chunk whose engine tasks keep ending before they start (an engine that cancels
# them, say) fails after this many, rather than being resubmitted forever.
UNSTARTED_LIMIT = 20
# How long a lost worker's blame waits for the verdict on an engine head in doubt
# (lost() gives up on a head after net.LOST_AFTER, 5 s).
DOUBT_LIMIT = 15.0
CAPACITY_EVERY = 1.0  # how often the engine's capacity is asked again


class ClusterBackend:
    """The ``Pool``/``ProcessPoolExecutor`` backend that runs chunks on ``engine``."""

    def __init__(
        self,
        engine: Engine,
        processes: int | None,
        initializer: Any,
        initargs: tuple[Any, ...],
        retries: int,
        maxtasks: int | None = None,
    ) -> None:
        from .._listener import Listener
        from .._version import __version__

        self.engine = engine
        self._cap = processes
        self.size = processes or max(1, engine.capacity())
        self.state = RUN
        self.broken: BaseException | None = None
        self.workers: list[Any] = []
        self._retries = retries
        self._one_chunk_per_task = maxtasks is not None  # tasks are counted as the local pool does
        self._init = pickling.dumps((initializer, initargs)) if initializer is not None else None
        authkey = secrets.token_bytes(32)
        self._listener = Listener((engine.hub_host(), 0), authkey=authkey)
        self._spec = HubSpec(
            self._listener.address, authkey, f"pool-{secrets.token_hex(8)}", __version__
        )
        self._lock = threading.Lock()
        self._incoming: collections.deque[Chunk] = collections.deque()
        self._ends: collections.deque[tuple[int, TaskEnd]] = collections.deque()
        self._new_peers: collections.deque[Any] = collections.deque()
        self._feeders = 0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._wake_lock = threading.Lock()
        # The supervisor's own state (only its thread touches it).
        self._ids = itertools.count()
        self._entries: dict[int, Entry] = {}
        self._queue: collections.deque[int] = collections.deque()
        self._tasks: dict[int, Task] = {}
        self._peers: dict[int, Peer] = {}
        self._timed: set[int] = set()
        # Blame put off until the engine's head is known to answer: cid -> (why, pid, since).
        self._doubtful: dict[int, tuple[str, int | None, float]] = {}
        self._functions: dict[int, tuple[int, Any, bytes]] = {}
        self._fids = itertools.count()
        self._per_chunk: float | None = None  # EWMA of the seconds a chunk takes
        self._k = 1
        self._last_fid = -1
        self._capacity = self.size
        self._capacity_at = 0.0
        self._start_failures = 0
        self._hosts_lost = engine.hosts_lost()
        self.tasks_submitted = 0  # engine tasks so far (benchmarks compare against it)
        self._refused: str | None = None
        self._warned = False
        self.store = Store(engine)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._acceptor = threading.Thread(
            target=self._accept, name="phalanx-cluster-hub", daemon=True
        )
        self._thread = threading.Thread(
            target=self._run, name="phalanx-cluster-supervisor", daemon=True
        )
        self._acceptor.start()
        self._thread.start()

    # -- the Pool's side -------------------------------------------------------------------

    def submit(self, chunks: list[Chunk]) -> None:
        with self._lock:
            if self.state != TERMINATE:
                self._incoming.extend(chunks)
                self._wake()
                return
            broken = self.broken
        refuse(chunks, broken)

    def feeder_started(self) -> None:
        with self._lock:
            self._feeders += 1

    def feeder_done(self) -> None:
        with self._lock:
            self._feeders -= 1
        self._wake()

    def close(self) -> None:
        with self._lock:
            if self.state == RUN:
                self.state = CLOSE
        self._wake()

    def terminate(self) -> None:
        with self._lock:
            self.state = TERMINATE
        self._wake()
        self.join()

    def join(self, timeout: float | None = None) -> None:
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def repopulate(self) -> None:
        pass

    # -- threads ----------------------------------------------------------------------------

    def _wake(self) -> None:
        with self._wake_lock:
            if self._wake_w < 0:
                return
            try:
                os.write(self._wake_w, b"x")
            except OSError:  # full: the supervisor has been woken already
                pass

    def _accept(self) -> None:
        while True:
            try:
                conn = self._listener.accept()
            except OSError:
                if self._listener._socket is None:  # closed: the pool is over
                    return
                continue
            except Exception:  # a client that failed the handshake
                continue
            self._new_peers.append(conn)
            self._wake()

    def _run(self) -> None:
        pickling.pickle_for_cluster_in_this_thread(
            pickling.LOCAL_CLUSTER
            if is_loopback(self._spec.address[0])
            else pickling.REMOTE_CLUSTER
        )
        try:
            while self._step():
                pass
        except BaseException as exc:  # a bug here must not leave callers waiting forever
            error = PoolTerminatedError(f"the cluster pool's supervisor failed: {exc!r}")
            error.__cause__ = exc
            self._break(error)
            self._stop_everything(self.broken)
        finally:
            self._shutdown()

    def _step(self) -> bool:
        """One round of the supervisor; False once the pool is over."""
        timeout = self._next_deadline()
        for key, _events in self._selector.select(timeout):
            if key.fd == self._wake_r:
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
            else:
                self._read_peer(key.data)
        while self._new_peers:
            conn = self._new_peers.popleft()
            tune_link(conn)
            peer = Peer(conn)
            self._peers[conn.fileno()] = peer
            self._selector.register(conn.fileno(), selectors.EVENT_READ, peer)
        with self._lock:
            incoming = list(self._incoming)
            self._incoming.clear()
            state, feeders = self.state, self._feeders
        for chunk in incoming:
            entry = Entry(chunk)
            cid = next(self._ids)
            self._entries[cid] = entry
            self._queue.append(cid)
        while self._ends:
            task_id, end = self._ends.popleft()
            self._on_end(task_id, end)
        if state == TERMINATE:
            self._stop_everything(self.broken)
            return False
        now = time.monotonic()
        self._slots(now)  # (asks the engine, once a second, whether it is still there)
        self._check_timeouts(now)
        self._check_failed_tasks(now)
        self._check_doubtful(now)
        self._dispatch(now, feeders)
        return not (state == CLOSE and not feeders and not self._entries and not self._incoming)

    def _next_deadline(self) -> float:
        if not self._timed and not any(t.engine_failed for t in self._tasks.values()):
            return 0.25
        return 0.02

    # -- the hub ------------------------------------------------------------------------------

    def _read_peer(self, peer: Peer) -> None:
        conn = peer.conn
        try:
            while True:
                message = conn.recv()
                self._on_message(peer, message)
                if not conn.poll(0):
                    return
        except EOFError:
            self._on_peer_lost(peer)
        except OSError as exc:
            self._on_peer_lost(peer, silent=exc.errno == errno.ETIMEDOUT)

    def _on_message(self, peer: Peer, message: tuple[Any, ...]) -> None:
        tag = message[0]
        if tag == "begun":
            entry = self._entries.get(message[1])
            if entry is not None and entry.state == ASSIGNED:
                entry.state = BEGUN
                entry.peer = peer
                entry.begun_at = time.monotonic()
                if entry.chunk.timeout is not None:
                    self._timed.add(message[1])
        elif tag == "done":
            _tag, cid, ok, value, elapsed = message
            entry = self._entries.get(cid)
            if entry is None or entry.state == DONE:
                return  # failed on time already, or a duplicate
            self._learn(entry.chunk, elapsed)
            self._finish(cid, entry, ok, value)
        elif tag == "start":
            self._on_start(peer, message[1], message[2])
        elif tag == "by-value":
            self._send_by_value(peer, message[1])
        elif tag == "items-by-value":
            self._send_items_by_value(peer, message[1], message[2])
        elif tag == "end":
            task = self._tasks.pop(message[1], None)
            peer.task = None
            if task is not None:
                self._requeue_unbegun(task)
        elif tag == "hello":
            _tag, host, pid, version = message
            peer.host, peer.pid = host, pid
            if version != self._spec.version:
                why = (
                    f"the {self.engine.name} worker on {host} (pid {pid}) runs phalanx {version}, "
                    f"this pool phalanx {self._spec.version}: install the same version of "
                    "phalanx on the workers"
                )
                self._refused = why
                peer.conn.send(("refuse", why))
            else:
                peer.conn.send(("welcome", self._init))
        elif tag == "init-failed":
            self._start_failures += 1
            if self._start_failures >= START_FAILURES:
                exc = message[1]
                error = PoolTerminatedError(
                    f"the pool's initializer failed on the {self.engine.name} workers "
                    f"{self._start_failures} times in a row: {type(exc).__name__}: {exc}"
                )
                error.__cause__ = exc
                self._break(error)

    def _on_start(self, peer: Peer, task_id: int, held: list[int]) -> None:
        task = self._tasks.get(task_id)
        chunks: list[tuple[int, int, int, Any, list[int]]] = []
        shipped: dict[int, bytes] = {}
        if task is not None:
            task.started = True
            task.peer = peer
            peer.task = task
            self._start_failures = 0
            have = set(held)
            for cid in task.chunks:
                entry = self._entries.get(cid)
                if entry is None or entry.state != ASSIGNED or entry.task is not task:
                    continue
                fid, data = self._function(entry.chunk.func)
                if fid not in have:
                    shipped[fid] = data
                    have.add(fid)
                where = [task.refs.index(ref) for ref in entry.big]
                chunks.append((cid, fid, entry.chunk.kind, entry.data, where))
        try:
            peer.conn.send(("run", chunks, shipped))
        except (OSError, EOFError):
            self._on_peer_lost(peer)

    def _send_by_value(self, peer: Peer, fid: int) -> None:
        """A worker cannot import a function's module (the user's own): send it by value.

        From then on the module's functions and classes (in arguments too)
        travel by value to this pool's workers.
        """
        entry = next((e for e in self._functions.values() if e[0] == fid), None)
        if entry is None:
            return
        func = entry[1]
        module = getattr(func, "__module__", None)
        if module is not None:
            pickling.by_value_in_this_thread(module)
        data = pickling.dumps_by_value(func)
        self._functions[id(func)] = (fid, func, data)
        try:
            peer.conn.send(("function", fid, data))
        except (OSError, EOFError):
            self._on_peer_lost(peer)

    def _send_items_by_value(self, peer: Peer, cid: int, module: str | None) -> None:
        entry = self._entries.get(cid)
        data = b""
        if entry is not None and module is not None:
            pickling.by_value_in_this_thread(module)
            try:
                entry.data, _big = encode(entry.chunk.payload)
                data = entry.data
            except Exception:
                pass  # the runner fails the chunk with what unpickling raises
        try:
            peer.conn.send(("items", cid, data))
        except (OSError, EOFError):
            self._on_peer_lost(peer)

    def _function(self, func: Any) -> tuple[int, bytes]:
        """The pool's functions are pickled once (and kept, so their ids stay theirs)."""
        known = self._functions.get(id(func))
        if known is None or known[1] is not func:
            known = (next(self._fids), func, pickling.dumps(func))
            self._functions[id(func)] = known
        return known[0], known[2]

    def _on_peer_lost(self, peer: Peer, silent: bool = False) -> None:
        """A runner's connection ended: its process died (or the engine stopped it), or
        (``silent``) its host stopped answering: down, or cut off the network."""
        fd = next((fd for fd, p in self._peers.items() if p is peer), None)
        if fd is None:
            return
        del self._peers[fd]
        try:
            self._selector.unregister(fd)
        except (KeyError, ValueError):
            pass
        peer.conn.close()
        task = peer.task
        if task is None or self._tasks.get(task.id) is not task:
            return
        del self._tasks[task.id]
        where = f"host {peer.where}, pid {peer.pid}"
        for cid in task.chunks:
            entry = self._entries.get(cid)
            if entry is None or entry.task is not task:
                continue
            if entry.state == BEGUN and entry.peer is peer:
                why = (
                    f"its host stopped answering for {PEER_SILENT_AFTER:.0f} s ({where})"
                    if silent
                    else f"its process ({where}) died"
                )
                self._blame(cid, entry, why, peer.pid)
            elif entry.state in (ASSIGNED, BEGUN):
                self._requeue(cid, entry)
        if task.handle is not None:
            self.engine.cancel(task.handle, force=False)  # the engine need not rerun it

    # -- engine events ------------------------------------------------------------------

    def _task_ended(self, task_id: int, _handle: Any, end: TaskEnd) -> None:
        """Called by the engine adapter, from any thread."""
        self._ends.append((task_id, end))
        self._wake()

    def _on_end(self, task_id: int, end: TaskEnd) -> None:
        task = self._tasks.get(task_id)
        if task is None or end.ok:
            return  # over already (its runner said "end"), or its "end" is on its way
        if task.started:
            # Its runner will tell (its connection ends if its process died);
            # if it does not within GRACE, the engine's word is taken.
            task.engine_failed = (time.monotonic(), end)
            return
        del self._tasks[task_id]
        lost_data = [ref for ref in task.refs if self.engine.stored_lost(ref)]
        if lost_data:  # the workers holding stored data died: put it again
            self.store.drop(lost_data)
            for waiting in self._entries.values():
                if waiting.state in (QUEUED, ASSIGNED) and any(
                    ref is gone for ref in waiting.big for gone in lost_data
                ):
                    waiting.data, waiting.big = None, []
        for cid in task.chunks:
            entry = self._entries.get(cid)
            if entry is not None and entry.task is task and entry.state == ASSIGNED:
                entry.unstarted += 1
                if entry.unstarted >= UNSTARTED_LIMIT:
                    self._finish(cid, entry, False, self._never_started(entry, end))
                else:
                    self._requeue(cid, entry)
        if end.cancelled or end.lost:
            return  # the engine lost a worker before the task began: nobody to blame
        self._start_failures += 1
        if self._refused is not None or self._start_failures >= START_FAILURES:
            why = self._refused or (
                f"engine tasks fail on the {self.engine.name} workers before they start: "
                f"{type(end.error).__name__}: {end.error} (is phalanx installed on the workers, "
                "at the same version as here?)"
            )
            error = PoolTerminatedError(why)
            error.__cause__ = end.error
            self._break(error)

    def _never_started(self, entry: Entry, end: TaskEnd) -> WorkerLostError:
        how = (
            "cancelled by the engine"
            if end.cancelled
            else f"{type(end.error).__name__}: {end.error}"
        )
        return WorkerLostError(
            f"{entry.chunk.describe()} never began: the {self.engine.name} tasks carrying it "
            f"ended {entry.unstarted} times before they started (the last: {how})",
            task=entry.chunk.describe(),
        )

    def _check_failed_tasks(self, now: float) -> None:
        for task in [t for t in self._tasks.values() if t.engine_failed]:
            failed_at, end = task.engine_failed  # type: ignore[misc]
            if now - failed_at < GRACE:
                continue
            del self._tasks[task.id]
            peer = task.peer
            for cid in task.chunks:
                entry = self._entries.get(cid)
                if entry is None or entry.task is not task:
                    continue
                if entry.state == BEGUN:
                    error = end.error
                    why = f"the {self.engine.name} task failed: {type(error).__name__}: {error}"
                    self._blame(cid, entry, why, peer.pid if peer else None)
                elif entry.state == ASSIGNED:
                    self._requeue(cid, entry)

    # -- outcomes -------------------------------------------------------------------------

    def _finish(self, cid: int, entry: Entry, ok: bool, value: Any) -> None:
        entry.state = DONE
        del self._entries[cid]
        self._timed.discard(cid)
        if not ok and isinstance(value, BaseException):
            add_item_note(value, entry.chunk)
        deliver([(entry.chunk, ok, value)])

    def _blame(self, cid: int, entry: Entry, why: str, pid: int | None) -> None:
        now = time.monotonic()
        if not self.engine.head_answered_since(now):
            # Not known yet whether the engine's head is there: this worker may be
            # lost because it is not, and then the chunk fails with the pool
            # (PoolTerminatedError, the cause), not with a WorkerLostError that
            # points at one worker.
            self._doubtful.setdefault(cid, (why, pid, now))
            return
        self._blame_now(cid, entry, why, pid)

    def _check_doubtful(self, now: float) -> None:
        """Blame put off: the head answered since (or is silent too long to wait more)."""
        if not self._doubtful:
            return
        for cid, (why, pid, since) in list(self._doubtful.items()):
            entry = self._entries.get(cid)
            if entry is None or entry.state != BEGUN:
                del self._doubtful[cid]
            elif self.engine.head_answered_since(since) or now - since > DOUBT_LIMIT:
                del self._doubtful[cid]
                self._blame_now(cid, entry, why, pid)

    def _blame_now(self, cid: int, entry: Entry, why: str, pid: int | None) -> None:
        chunk = entry.chunk
        chunk.attempts += 1
        if chunk.attempts <= self._retries:
            self._requeue(cid, entry)
            return
        peer = entry.peer
        host = peer.where if peer is not None else "?"
        tries = f" (after {chunk.attempts} attempts)" if chunk.attempts > 1 else ""
        error = WorkerLostError(
            f"a {self.engine.name} worker (host {host}, pid {pid}) was lost while running "
            f"{chunk.describe()}{tries}: {why}",
            pid=pid,
            task=chunk.describe(),
        )
        error.host = host  # type: ignore[attr-defined]
        self._finish(cid, entry, False, error)

    def _requeue(self, cid: int, entry: Entry) -> None:
        entry.state = QUEUED
        entry.task = None
        entry.peer = None
        self._timed.discard(cid)
        self._queue.appendleft(cid)

    def _requeue_unbegun(self, task: Task) -> None:
        for cid in task.chunks:
            entry = self._entries.get(cid)
            if entry is not None and entry.task is task and entry.state == ASSIGNED:
                self._requeue(cid, entry)

    def _check_timeouts(self, now: float) -> None:
        for cid in list(self._timed):
            entry = self._entries.get(cid)
            if entry is None or entry.state != BEGUN:
                self._timed.discard(cid)
                continue
            chunk = entry.chunk
            limit = (chunk.timeout or 0.0) * chunk.size
            if now - entry.begun_at < limit:
                continue
            peer, task = entry.peer, entry.task
            stopped = (
                task is not None
                and task.handle is not None
                and (self.engine.cancel(task.handle, force=True))
            )
            if not stopped and peer is not None and peer.pid is not None:
                stopped = self.engine.kill(peer.ip or peer.host, peer.pid)
            where = f"on {peer.where} (pid {peer.pid})" if peer is not None else ""
            if stopped:
                how = "it was stopped"
            else:
                how = f"the {self.engine.name} engine cannot stop it: it runs on"
                warnings.warn(
                    f"task {chunk.describe()} ran over its timeout of {limit:g} s {where} and "
                    f"failed, but {how} (stop only owned one-thread workers)",
                    ClusterSemanticsWarning,
                    stacklevel=1,
                )
            error = TaskTimeoutError(
                f"task {chunk.describe()} ran over its timeout of {limit:g} s {where}; {how}"
            )
            if task is not None and self._tasks.get(task.id) is task:
                del self._tasks[task.id]
                if peer is not None:
                    peer.task = None
                self._requeue_unbegun(task)
            self._finish(cid, entry, False, error)

    # -- dispatch -----------------------------------------------------------------------

    def _learn(self, chunk: Chunk, elapsed: float) -> None:
        sample = max(elapsed, 1e-6)
        old = self._per_chunk
        self._per_chunk = sample if old is None else 0.8 * old + 0.2 * sample

    def _slots(self, now: float) -> int:
        if now - self._capacity_at >= CAPACITY_EVERY:
            self._capacity_at = now
            reason = self.engine.lost()
            if reason is not None:
                self._break(
                    PoolTerminatedError(
                        f"lost the {self.engine.name} engine ({reason}): the pool cannot go on"
                    )
                )
                return self._capacity
            hosts_lost = self.engine.hosts_lost()
            if hosts_lost != self._hosts_lost:
                self._hosts_lost = hosts_lost
                self._take_back_unstarted()
            if self._cap is None:
                try:
                    self._capacity = max(1, self.engine.capacity())
                except Exception:
                    pass
        return self._cap if self._cap is not None else self._capacity

    def _take_back_unstarted(self) -> None:
        """The engine dropped a host: an engine task placed there may never start nor
        end, so every task not started yet gives its chunks back to run elsewhere.  (One
        that starts after all finds nothing to run: its chunks are no longer its own.)"""
        for task in [t for t in self._tasks.values() if not t.started]:
            del self._tasks[task.id]
            self._requeue_unbegun(task)
            if task.handle is not None:
                self.engine.cancel(task.handle, force=False)

    def _chunks_per_task(self, slots: int, feeders: int) -> int:
        if self._one_chunk_per_task:
            return 1
        if self._per_chunk is None:
            k = 1
        else:
            want = max(1, int(TARGET_TASK_SECONDS / self._per_chunk))
            k = min(want, self._k * 4, MAX_CHUNKS_PER_TASK)
        self._k = k
        if not feeders:  # the tail: split what is left evenly between the slots
            k = min(k, max(1, math.ceil(len(self._queue) / slots)))
        return k

    def _dispatch(self, now: float, feeders: int) -> None:
        if self.broken is not None:
            return
        slots = self._slots(now)
        while self._queue and len(self._tasks) < slots * IN_FLIGHT_PER_SLOT:
            k = self._chunks_per_task(slots, feeders)
            cids: list[int] = []
            while self._queue and len(cids) < k:
                cid = self._queue.popleft()
                entry = self._entries.get(cid)
                if entry is None or entry.state != QUEUED:
                    continue  # over already (a late outcome came in)
                if not entry.chunk.dispatching():  # its job was cancelled
                    del self._entries[cid]
                    entry.chunk.release()
                    continue
                if entry.data is None and not self._encode(cid, entry):
                    continue  # its items cannot be pickled: it failed
                fid, _data = self._function(entry.chunk.func)
                if fid != self._last_fid:  # a new function: measure it afresh
                    self._last_fid = fid
                    self._per_chunk = None
                    self._k = 1
                    if cids:
                        self._queue.appendleft(cid)
                        break
                cids.append(cid)
                if entry.chunk.timeout is not None:
                    break  # a timed chunk travels alone (its task is stopped when overdue)
            if not cids:
                continue
            task = Task(next(self._ids), cids)
            for cid in cids:
                entry = self._entries[cid]
                entry.state = ASSIGNED
                entry.task = task
                for ref in entry.big:
                    if not any(ref is known for known in task.refs):
                        task.refs.append(ref)
            self._tasks[task.id] = task
            self.tasks_submitted += 1
            task_id = task.id
            try:
                task.handle = self.engine.submit(
                    self._spec, task_id, functools.partial(self._task_ended, task_id), task.refs
                )
            except Exception as exc:  # the engine is gone (its scheduler or head lost)
                error = PoolTerminatedError(
                    f"the {self.engine.name} engine refused work: {type(exc).__name__}: {exc}"
                )
                error.__cause__ = exc
                self._break(error)
                return

    # -- the end ------------------------------------------------------------------------

    def _encode(self, cid: int, entry: Entry) -> bool:
        """Pickle a chunk's items, its large buffers put in the engine's store."""
        try:
            entry.data, big = encode(entry.chunk.payload)
            entry.big = [self.store.ref(raw) for raw in big]
        except Exception as exc:  # an unpicklable argument fails its chunk, here
            self._finish(cid, entry, False, exc)
            return False
        return True

    def _break(self, error: BaseException) -> None:
        with self._lock:
            if self.broken is None:
                self.broken = error
            self.state = TERMINATE
        self._wake()

    def _stop_everything(self, error: BaseException | None) -> None:
        for task in self._tasks.values():
            if task.handle is not None:
                self.engine.cancel(task.handle, force=True)
        self._tasks.clear()
        outstanding = [e.chunk for e in self._entries.values() if e.state != DONE]
        self._entries.clear()
        self._queue.clear()
        self._timed.clear()
        self._doubtful.clear()
        with self._lock:
            outstanding += list(self._incoming)
            self._incoming.clear()
        if error is not None:
            for chunk in outstanding:
                chunk.job._set(chunk.index, False, error)
                chunk.release()
        else:
            fail_all(outstanding, "the pool was terminated")

    def _shutdown(self) -> None:
        with self._lock:
            if self.state == RUN:
                self.state = CLOSE
        self._listener.close()
        for peer in list(self._peers.values()):
            peer.conn.close()
        self._peers.clear()
        while self._new_peers:
            self._new_peers.popleft().close()
        self._selector.close()
        self.store.clear()
        try:
            self.engine.close()
        finally:
            with self._wake_lock:
                os.close(self._wake_w)
                self._wake_w = -1
            os.close(self._wake_r)
