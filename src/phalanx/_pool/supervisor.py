"""The process pool's engine: workers on private links, watched by one supervisor thread.

Each worker has its own SEQPACKET socketpair (what travels on it: ``protocol``).  One
thread, the supervisor, owns every worker and waits on all their links and
sentinels at once.  It gives each worker a few chunks at a time (``dispatch``), answered
in order, so at every moment it knows which chunk each worker is running:

* a worker that dies fails exactly the chunk it had begun, with a
  ``WorkerLostError`` naming its pid, exit code or signal and the task (or
  runs it again, if the pool has ``retries``); the chunks queued behind it go
  to other workers, and a replacement starts (who is to blame, and when to
  give up on workers that die starting: ``blame``);
* a chunk that overruns its ``timeout`` gets its worker killed and fails with
  ``TaskTimeoutError``;
* ``maxtasksperchild`` is a count the supervisor keeps, and terminate / close /
  join are states of one loop.

Nothing the caller waits on depends on a worker staying alive, so no death,
crash or unpicklable object can hang the caller.
"""

from __future__ import annotations

import collections
import itertools
import os
import selectors
import signal
import socket
import threading
import time
from typing import Any

from .. import _heap, _platform, _runtime
from .._channel import MAX_INLINE, decode, encode, encode_reusing, send_datagram
from .._segments import SegmentCache
from ..errors import PoolTerminatedError, WorkerLostError
from .blame import StartFailures, blame, death_error, how, signal_of
from .dispatch import FunctionTable, Pacing, remember
from .protocol import (
    FAILED,
    INIT_FAILED,
    MANY,
    OK,
    READY,
    RESEND,
    UNREADABLE,
    TaskTuple,
    decode_answer,
)
from .results import Chunk, add_item_note, deliver, fail_all
from .worker import SPIN
from .workers import Worker, signal_worker, start_workers

__all__ = ("ProcessBackend",)

_TERM_GRACE = 1.0  # seconds between SIGTERM and SIGKILL on terminate()

RUN, CLOSE, TERMINATE = "RUN", "CLOSE", "TERMINATE"


class ProcessBackend:
    """Runs chunks on worker processes; see the module docstring."""

    def __init__(
        self,
        ctx: Any,
        processes: int,
        initializer: Any,
        initargs: tuple[Any, ...],
        maxtasksperchild: int | None,
        retries: int = 0,
    ) -> None:
        self._ctx = ctx
        self.size = processes
        self._initializer = initializer
        self._initargs = initargs
        self._maxtasks = maxtasksperchild
        self._retries = retries
        # Waking a sleeping process costs tens of microseconds, so an idle worker
        # polls a moment first; but only if that leaves a CPU to the pool's owner.
        self._spin = SPIN if (os.cpu_count() or 1) > processes else 0.0
        self._lock = threading.Lock()
        self._pending: collections.deque[Chunk] = collections.deque()
        self._feeders = 0
        self.state = RUN
        self.broken: BaseException | None = None
        self._woken = False
        self._idle_workers = True
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self.workers: list[Worker] = []
        self._funcs = FunctionTable()
        self._segments = SegmentCache()
        self._pacing = Pacing()
        self._reader = _platform.DatagramReader(MAX_INLINE + 16)
        self._start_failures = StartFailures()
        self._kill_at: float | None = None
        self._supervisor_ident: int | None = None
        self._abandoned = False
        # Forked children (our workers, and any process the user forks later)
        # must not hold the pool's ends of the links: a worker sees its pool
        # die by its link hanging up.
        _runtime.register_after_fork(self, ProcessBackend._close_in_child)
        self._thread = threading.Thread(
            target=self._run, name="phalanx-pool-supervisor", daemon=True
        )
        try:
            self._start_workers(processes)
            self._thread.start()
        except BaseException:
            # Ctrl-C (or a failure) half-way: nobody will ever call terminate()
            # on a pool that was not made, so undo it all before raising.
            self._abandon()
            raise

    def _abandon(self) -> None:
        """Stop what a failed constructor started: workers, and the supervisor if it runs."""
        with self._lock:
            self._abandoned = True  # a supervisor that starts from now on does nothing
            self.state = TERMINATE
            running = self._supervisor_ident is not None
            if running:
                self._wake_locked()
        if running:
            self._thread.join()
        else:
            self._shutdown()

    # -- called from any thread ----------------------------------------------------------

    def submit(self, chunks: list[Chunk]) -> None:
        # No lock on the way in: a caller submitting in a loop and the supervisor
        # taking batches out would contend for it, and a thread that blocks on
        # a lock gives up the GIL: in a loop of small apply_async calls the two
        # threads then hand the GIL over hundreds of times a second (a third of
        # the loop's time).  deque.extend is atomic under the GIL; a terminate()
        # or a breakdown that raced with it is caught by the check after it.
        if self.broken is None and self.state != TERMINATE:
            self._pending.extend(chunks)
            # Only an idle worker needs the supervisor now: a busy one's next
            # answer wakes it anyway, and it dispatches then.  A wake-up already
            # pending (_woken) comes before the supervisor's next dispatch, which
            # sees these chunks.
            if self._idle_workers and not self._woken:
                with self._lock:
                    self._wake_locked()
            if self.broken is None and self.state != TERMINATE:
                return
            # It stopped meanwhile, and may have failed what was queued before
            # these chunks came: what is left (ours, at least) fails here.
            chunks = self._take_pending()
        why = self.broken
        with self._lock:
            self._wake_locked()
        fail_all(chunks, f"pool not usable ({why})" if why else "pool terminated")

    def feeder_started(self) -> None:
        with self._lock:
            self._feeders += 1

    def feeder_done(self) -> None:
        with self._lock:
            self._feeders -= 1
            self._wake_locked()

    def close(self) -> None:
        with self._lock:
            if self.state == RUN:
                self.state = CLOSE
            self._wake_locked()

    def terminate(self) -> None:
        with self._lock:
            self.state = TERMINATE
            self._woken = False  # whatever the flag says: a byte now (join waits on it)
            self._wake_locked()
        self.join()

    def join(self, timeout: float | None = None) -> None:
        if threading.get_ident() != self._supervisor_ident:
            self._thread.join(timeout)

    def repopulate(self) -> None:
        with self._lock:
            self._wake_locked()

    def _wake_locked(self) -> None:
        if not self._woken and self._wake_w >= 0:  # -1: the supervisor is gone
            # The byte first, then the flag: Ctrl-C's KeyboardInterrupt is raised
            # between two bytecodes of this thread, and between these two it may
            # only leave an extra byte, never a flag saying a wake-up is pending
            # when none is (every later wake-up would be skipped, and terminate()
            # at exit would wait for the sleeping supervisor forever).
            # poke keeps the GIL: the supervisor, which wants our lock, is not let
            # run only to block on it.
            _platform.poke(self._wake_w)
            self._woken = True

    def _close_in_child(self) -> None:
        # The wake pipe is our parent's: never write to it (its numbers may be
        # closed here, by a worker, and reused).
        self._wake_r = self._wake_w = -1
        for worker in self.workers:
            worker.fileno = -1
            worker.sock.close()
        self.workers = []
        # The supervisor thread did not survive the fork: say so, do not hang.
        self.broken = PoolTerminatedError(
            "this pool belongs to the parent process: a forked child cannot use it "
            "(create a pool in the child)"
        )

    # -- the supervisor thread -----------------------------------------------------------

    def _run(self) -> None:
        with self._lock:
            if self._abandoned:
                return  # the constructor was interrupted and cleans up itself
            self._supervisor_ident = threading.get_ident()
        try:
            while self._step():
                pass
        except BaseException:  # a bug here must not leave callers waiting forever
            _runtime.get_logger().exception("phalanx pool supervisor failed")
            with self._lock:
                self.state = TERMINATE
                self.broken = PoolTerminatedError("the pool's supervisor thread failed")
            self._kill_all(signal.SIGKILL)
            raise
        finally:
            self._shutdown()

    def _step(self) -> bool:
        """One turn of the loop; False when the pool is over."""
        with self._lock:
            state = self.state
        if state == TERMINATE:
            return self._terminating()
        # Dispatch first: it also drops cancelled chunks, which may leave no work.
        self._dispatch()
        with self._lock:
            work_left = bool(self._pending) or self._feeders > 0
        self._maintain(state, work_left)
        self._dispatch()  # to workers just started
        if state == CLOSE and not work_left and not self.workers:
            return False
        timeout = self._next_deadline()
        # For submit(): whether a new task needs waking us (see there).  While
        # we sleep, a worker turns idle only by answering, which wakes us anyway;
        # while we are awake, it is True: a task submitted after this turn's
        # last look at the queue, and before we sleep again, must wake us (or it
        # waits, with a worker idle, for some other event: a hang if none comes).
        self._idle_workers = not self.workers or any(not w.inflight for w in self.workers)
        events = self._selector.select(timeout)
        self._idle_workers = True
        for key, mask in events:
            if key.data is None:
                self._drain_wake()
            else:
                what, worker = key.data
                if what == "sentinel":
                    self._reap(worker)
                else:
                    if mask & selectors.EVENT_READ:
                        self._read(worker)
                    if mask & selectors.EVENT_WRITE:
                        self._flush(worker)
        self._check_deadlines()
        return True

    def _take_pending(self) -> list[Chunk]:
        """Every queued chunk, taken out of the queue (to fail them).

        One at a time: submit() extends the queue without the lock, and a copy
        then a clear() would drop a chunk that came between the two (neither
        this taker nor the submitter's second look, which finds the queue empty,
        would fail it).  Each popleft is atomic: a chunk is taken exactly once.
        """
        pending: list[Chunk] = []
        popleft = self._pending.popleft
        with self._lock:
            try:
                while True:
                    pending.append(popleft())
            except IndexError:
                pass
        return pending

    def _settle_segment(self, chunk: Chunk, reusable: bool) -> None:
        """The chunk is answered: its shared-memory segment, if any, goes back to the
        cache when the worker says nothing maps it any more, else it is dropped."""
        segment = chunk.segment
        if segment is not None:
            self._segments.keep(segment) if reusable else self._segments.drop(segment)
            chunk.segment = None

    def _drain_wake(self) -> None:
        with self._lock:
            self._woken = False
            _platform.drain(self._wake_r)  # (keeps the GIL, as _wake_locked)

    def _maintain(self, state: str, work_left: bool) -> None:
        """Keep the pool at size while there is (or may be) work; stop idle workers on close."""
        if self.broken is not None:
            return
        if _runtime.is_exiting():
            # The process is exiting: its exit handler stops our workers and
            # then joins its children; a worker started now would be joined
            # forever (it ends only when we do).
            return
        if (state == RUN or work_left) and len(self.workers) < self.size:
            try:
                self._start_workers(self.size - len(self.workers))
            except Exception as exc:  # cannot start processes (fd/pid limits...)
                self._break(exc, "the pool cannot start a worker")
                return
        if state == CLOSE and not work_left:
            for worker in self.workers:
                if not worker.inflight and not worker.stopping:
                    worker.stopping = True
                    self._send(worker, (_STOP, None, True, 0))

    def _start_workers(self, count: int) -> None:
        """Start ``count`` workers (see ``workers.start_workers``) and watch them."""
        close_fds = None
        if self._ctx.get_start_method() == "fork":
            close_fds = [w.sock.fileno() for w in self.workers] + [self._wake_r, self._wake_w]
        start_workers(
            self._ctx,
            count,
            (self._spin, self._initializer, self._initargs, self._maxtasks),
            close_fds,
            self._add_worker,
        )

    def _add_worker(self, process: Any, mine: socket.socket, progress: _heap.Block) -> None:
        mine.setblocking(False)
        worker = Worker(process, mine, progress, self._maxtasks)
        self.workers.append(worker)
        self._selector.register(mine, selectors.EVENT_READ, ("link", worker))
        self._selector.register(worker.sentinel, selectors.EVENT_READ, ("sentinel", worker))

    def _inflight_limit(self) -> int:
        """Chunks a worker may hold now (see ``dispatch.Pacing``)."""
        pacing = self._pacing
        try:  # (no lock: a submitter that sees the pool stopped may empty the queue)
            func = self._pending[0].func
        except IndexError:
            func = pacing.func
        return pacing.limit(func)

    def _dispatch(self) -> None:
        """Hand pending chunks to workers with room, least loaded first, in batches."""
        if not self.workers:
            return
        limit = self._inflight_limit()
        for worker in sorted(self.workers, key=lambda w: len(w.inflight)):
            while True:
                room = worker.room(limit)
                if room <= 0:
                    break
                with self._lock:
                    backlog = len(self._pending)
                if not backlog:
                    return
                share = -(-backlog // len(self.workers))  # spread the backlog evenly
                # A quarter of the credit per datagram: answers come back (several
                # per datagram) while the worker has more to do.
                batch = self._next_batch(min(room, share, max(1, limit // 4)))
                if not batch or self._send_batch(worker, batch):
                    break
                # Nothing went (a chunk could not be pickled): try again with the rest.

    def _next_batch(self, n: int) -> list[Chunk]:
        """Up to ``n`` pending chunks that may still run; a solo chunk only alone."""
        while True:
            taken: list[Chunk] = []
            with self._lock:  # once per batch: the caller's thread wants it too
                pending = self._pending
                while pending and len(taken) < n:
                    if taken and pending[0].solo:
                        break
                    chunk = pending.popleft()
                    taken.append(chunk)
                    if chunk.solo:
                        break
            if not taken:
                return taken
            job = taken[0].job
            if not job._cancellable and all(c.job is job for c in taken):
                return taken  # (the common case: one job's chunks, none to drop)
            batch = [c for c in taken if not c.job._cancellable or c.dispatching()]
            if batch:
                return batch
            # All of them were cancelled: take the next ones.

    def _send_batch(self, worker: Worker, batch: list[Chunk]) -> bool:
        """Send ``batch`` to ``worker`` in one datagram; False if it could not be pickled."""
        known = collections.OrderedDict(worker.funcs)
        tasks: list[TaskTuple] = []
        seq = worker.next_seq
        last_func: Any = _NO_FUNC
        fid = 0
        # Which datagram, and where in it: set now (one pass over the batch); if
        # the batch is not sent, its chunks get new ones when they go.
        serial = next(_batches)
        size = len(batch)
        for chunk in batch:
            func = chunk.func
            forget = sent_func = None
            if func is not last_func:  # (a batch is mostly one function: look it up once)
                last_func = func
                fid = self._funcs.number(func)
                send, forget = remember(known, fid)
                if send:
                    sent_func = func
            tasks.append(
                (fid, sent_func, forget, chunk.kind, chunk.payload, seq, chunk.timeout is not None)
            )
            chunk.batch = serial
            chunk.batch_size = size
            chunk.seq = seq
            seq += 1
        try:
            message, fd, segment = encode_reusing(tasks, self._segments)
        except Exception as exc:  # an argument (or a function) cannot be pickled
            if len(batch) == 1:
                batch[0].job._set(batch[0].index, False, exc)
                batch[0].release()
            else:  # find the culprit: send them one by one
                for chunk in batch:
                    chunk.solo = True
                with self._lock:
                    self._pending.extendleft(reversed(batch))
            return False
        worker.funcs = known
        if not worker.inflight:
            worker.started = time.monotonic()  # (reset when it says READY)
        batch[-1].segment = segment  # free to reuse once the last one is answered
        worker.next_seq = seq
        worker.inflight.extend(batch)
        self._send(worker, (message, fd, segment is None, len(batch)))
        return True

    def _send(self, worker: Worker, datagram: tuple[bytes, int | None, bool, int]) -> None:
        worker.outbox.append(datagram)
        self._flush(worker)

    def _flush(self, worker: Worker) -> None:
        """Send what the worker's link has room for; watch for room if anything is left."""
        while worker.outbox:
            if worker.fileno < 0:
                return  # reaped
            message, fd, owned, count = worker.outbox[0]
            try:
                if fd is None:
                    sent = _platform.send_nowait(worker.fileno, message)
                else:
                    sent = send_datagram(worker.sock, message, fd, block=False)
            except OSError:
                return  # the worker is gone: its sentinel tells the rest
            if not sent:
                break
            worker.outbox.popleft()
            if fd is not None and owned:
                os.close(fd)
            worker.sent += count
        want_write = bool(worker.outbox)
        if want_write != worker.want_write:
            worker.want_write = want_write
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want_write else 0)
            try:
                self._selector.modify(worker.sock, events, ("link", worker))
            except (KeyError, ValueError):
                pass

    def _read(self, worker: Worker) -> None:
        """Take every answer waiting on a worker's link."""
        reader = self._reader
        while True:
            if worker.fileno < 0:
                return  # reaped (an event of the same select() batch)
            try:
                got = reader.recv(worker.fileno)
            except OSError:
                return  # the worker is gone: its sentinel tells the rest
            if got is None:
                return
            message, fds = got
            if not message:
                return  # end of file: the worker is gone
            for extra in fds[1:]:
                os.close(extra)
            try:
                tag, value, reusable = decode(message, fds[0] if fds else None)
            except Exception as exc:
                tag, value, reusable = FAILED, exc, False
            if tag != MANY:
                outcome = self._answer(worker, tag, value, reusable, None)
                if outcome is not None:
                    deliver([outcome])
                continue
            deliver(self._answers(worker, value))

    def _answers(self, worker: Worker, answers: list[Any]) -> list[tuple[Chunk, bool, Any]]:
        """The answers of one ``MANY`` datagram: ``_answer`` for each, the common
        ones (a result or an exception) taken here with the per-datagram work done
        once (with many short tasks, this loop is much of the supervisor's time)."""
        now = time.monotonic()
        # Answers that shared a datagram split the time since the last one.
        took = (now - worker.started) / len(answers)
        failures = self._start_failures
        if failures.failures or failures.kills:  # (as _answer)
            failures.ready()
        inflight = worker.inflight
        outcomes = []
        done = 0
        func: Any = _NO_FUNC  # the function of the run of answers not yet recorded
        run = 0
        for answer in answers:
            tag, value, reusable = answer if type(answer) is tuple else decode_answer(answer)
            if (tag != OK and tag != FAILED) or not inflight:
                outcome = self._answer(worker, tag, value, reusable, took)
                if outcome is not None:
                    outcomes.append(outcome)
                continue
            chunk = inflight.popleft()
            done += 1
            if chunk.segment is not None:
                self._settle_segment(chunk, reusable)
            if chunk.func is not func:
                if run:
                    self._pacing.record(func, took, run)
                func, run = chunk.func, 0
            run += 1
            if tag == OK:
                outcomes.append((chunk, True, value))
            else:
                if isinstance(value, BaseException):
                    add_item_note(value, chunk)
                outcomes.append((chunk, False, value))
        if run:
            self._pacing.record(func, took, run)
        worker.sent -= done
        if worker.tasks_left is not None:
            worker.tasks_left -= done
        worker.started = now
        return outcomes

    def _answer(
        self, worker: Worker, tag: int, value: Any, reusable: bool, took: float | None
    ) -> tuple[Chunk, bool, Any] | None:
        """One chunk's answer; ``took``: its running time, if known better than by the clock.

        Returns the outcome to report to the chunk's job, if any (see ``results.deliver``).
        """
        if tag == INIT_FAILED:
            # It ran nothing: what it holds goes to other workers when it exits.
            worker.stopping = True
            worker.init_failed = True
            worker.sent = 0
            why = self._start_failures.failed("the pool's initializer failed")
            if why is not None:
                self._break(value, why)
            return None
        failures = self._start_failures
        if failures.failures or failures.kills:  # (a call only when there is something to reset)
            failures.ready()
        if tag == READY:
            worker.ready = True
            worker.started = time.monotonic()  # the head chunk's clock starts now
            return None
        if not worker.inflight:
            return None  # a stray answer (cannot happen unless a worker misbehaves)
        now = time.monotonic()
        chunk = worker.inflight.popleft()
        worker.sent -= 1
        if tag == UNREADABLE:
            self._unreadable(worker, chunk, value, reusable)
            worker.started = now
            return None
        self._settle_segment(chunk, reusable)
        if tag in (OK, FAILED):
            self._pacing.record(chunk.func, now - worker.started if took is None else took)
        worker.started = now
        if tag == RESEND:
            # It never got the function (the chunk that carried it was unreadable):
            # run the chunk again, with the function this time.
            worker.funcs.pop(value, None)
            with self._lock:
                self._pending.appendleft(chunk)
            return None
        if worker.tasks_left is not None:
            worker.tasks_left -= 1
        if tag == FAILED and isinstance(value, BaseException):
            add_item_note(value, chunk)
        return chunk, tag == OK, value

    def _unreadable(self, worker: Worker, head: Chunk, error: Any, reusable: bool) -> None:
        """The worker could not unpickle a datagram: which chunk of it was to blame?"""
        group = [head]
        while worker.inflight and worker.inflight[0].batch == head.batch:
            group.append(worker.inflight.popleft())
            worker.sent -= 1
        if worker.tasks_left is not None:
            worker.tasks_left -= 1  # it counts the datagram as one task
        self._settle_segment(group[-1], reusable)
        # It kept none of the functions the datagram carried.
        for func in {id(chunk.func): chunk.func for chunk in group}.values():
            fid = self._funcs.lookup(func)
            if fid is not None:
                worker.funcs.pop(fid, None)
        if len(group) == 1:
            head.job._set(head.index, False, error)
            head.release()
            return
        for chunk in group:  # send them one by one: only the culprit fails
            chunk.solo = True
        with self._lock:
            self._pending.extendleft(reversed(group))

    def _reap(self, worker: Worker) -> None:
        """A worker exited: settle its chunks and forget it (``_maintain`` replaces it)."""
        self._read(worker)  # answers it sent before dying still count
        for obj in (worker.sock, worker.sentinel):
            try:
                self._selector.unregister(obj)
            except (KeyError, ValueError):
                pass
        worker.process.join(5)
        exitcode = worker.process.exitcode
        # From now on its fd number may be reused by anyone in this process:
        # nothing may read or write it through the cached number any more.
        worker.fileno = -1
        worker.sock.close()
        for _message, fd, owned, _count in worker.outbox:
            if fd is not None and owned:
                os.close(fd)
        for chunk in worker.inflight:
            if chunk.segment is not None:
                self._segments.drop(chunk.segment)
                chunk.segment = None
        # (Not closed: the process object may be in the user's hands, through
        # ``Pool._pool``; its handles go with it when nothing refers to it.)
        self.workers.remove(worker)
        if not worker.ready and not worker.init_failed:
            self._died_starting(worker, exitcode)
        inflight = list(worker.inflight)
        if not inflight:
            return
        begun, finished, decoding = worker.progress[:3].tolist()  # (see protocol)
        culprit = blame(
            inflight, sent=worker.sent, ready=worker.ready, begun=begun, finished=finished,
            decoding=bool(decoding),
        )  # fmt: skip
        if culprit is not None:
            inflight.remove(culprit)
            error = death_error(
                culprit, worker.pid, exitcode, worker.timed_out is culprit, self._retries
            )
            if error is None:
                inflight.insert(0, culprit)  # retried, in its turn
            else:
                culprit.job._set(culprit.index, False, error)
                culprit.release()
        if self.broken is not None:
            for chunk in inflight:
                chunk.job._set(chunk.index, False, self.broken)
                chunk.release()
            return
        with self._lock:
            self._pending.extendleft(reversed(inflight))  # never started: run elsewhere

    def _died_starting(self, worker: Worker, exitcode: int | None) -> None:
        """A worker died before it was ready (see ``StartFailures``); it ran no task."""
        if self.state == TERMINATE or worker.stopping:
            return  # we stopped it
        why = self._start_failures.died(exitcode)
        if why is not None:
            error = WorkerLostError(
                f"pool worker {worker.pid} {how(exitcode)} before it was ready to run tasks",
                pid=worker.pid,
                exitcode=exitcode,
                signal=signal_of(exitcode),
            )
            self._break(error, why)

    def _next_deadline(self) -> float | None:
        deadline = self._kill_at
        for worker in self.workers:
            chunk = worker.inflight[0] if worker.sent and worker.ready else None
            if chunk is not None and chunk.timeout is not None and worker.timed_out is None:
                due = worker.started + chunk.timeout * chunk.size
                deadline = due if deadline is None else min(deadline, due)
        if deadline is None:
            return None
        return max(0.0, deadline - time.monotonic())

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            chunk = worker.inflight[0] if worker.sent and worker.ready else None
            if chunk is None or chunk.timeout is None or worker.timed_out is not None:
                continue
            if now >= worker.started + chunk.timeout * chunk.size:
                worker.timed_out = chunk
                signal_worker(worker, signal.SIGKILL)

    def _break(self, exc: BaseException, why: str) -> None:
        """The pool cannot go on: fail everything queued, now and later."""
        error = PoolTerminatedError(f"{why}: {type(exc).__name__}: {exc}")
        error.__cause__ = exc
        with self._lock:
            self.broken = error  # (under the lock: submit() reads it with the queue)
        for chunk in self._take_pending():
            chunk.job._set(chunk.index, False, error)
            chunk.release()

    def _terminating(self) -> bool:
        """TERMINATE: kill the workers, fail what they held; False once all are gone."""
        fail_all(self._take_pending(), "the pool was terminated")
        now = time.monotonic()
        if self._kill_at is None:
            self._kill_at = now + _TERM_GRACE
            self._kill_all(signal.SIGTERM)
        elif now >= self._kill_at:
            self._kill_all(signal.SIGKILL)
        for worker in list(self.workers):
            for chunk in worker.inflight:
                if chunk.segment is not None:
                    self._segments.drop(chunk.segment)
                    chunk.segment = None
            fail_all(list(worker.inflight), "the pool was terminated")
            worker.inflight.clear()
            worker.sent = 0
        if not self.workers:
            return False
        timeout = max(0.0, self._kill_at - time.monotonic()) if now < self._kill_at else 0.05
        for key, _mask in self._selector.select(timeout):
            if key.data is None:
                self._drain_wake()
            elif key.data[0] == "sentinel":
                self._reap(key.data[1])
            else:
                self._read(key.data[1])  # answers nobody waits for any more
        return True

    def _kill_all(self, signum: int) -> None:
        for worker in self.workers:
            signal_worker(worker, signum)

    def _shutdown(self) -> None:
        self._kill_all(signal.SIGKILL)
        for worker in list(self.workers):
            self._reap(worker)
        # Nothing queued is left waiting once we are gone (a call that came in
        # while we were stopping fails itself, by submit()'s second look; this
        # is the net under it, and under a supervisor that failed).
        fail_all(self._take_pending(), "the pool was terminated")
        self._selector.close()
        # Under the lock, so that no late submit()/close() writes to the
        # number after it is closed (and perhaps reused by another thread).
        with self._lock:
            fds = (self._wake_r, self._wake_w)
            self._wake_r = self._wake_w = -1
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._funcs.clear()
        self._segments.close()


_STOP = encode(None)[0]
_NO_FUNC = object()
_batches = itertools.count()
