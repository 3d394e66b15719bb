"""The loop a pool worker process runs (layer 4, child side).

What travels on its link and what its progress words mean is ``protocol``;
this module is the worker's side of it: receive a batch of tasks, run them in
order, write the progress words, and answer (several short answers share a
datagram: see ``_Answers`` for when they go).
"""

from __future__ import annotations

import _thread
import itertools
import mmap
import operator
import os
import select
import socket
import sys
import threading
import time
from typing import Any

from .. import _platform, _runtime
from .._channel import decode, encode, recv_datagram, recv_spinning, send_datagram
from .._wire.fds import DupFd
from ..errors import ExceptionWithTraceback, MaybeEncodingError
from .protocol import (
    BEGUN,
    DECODING,
    FAILED,
    FINISHED,
    INIT_FAILED,
    MANY,
    OK,
    READY,
    RESEND,
    UNREADABLE,
    TaskTuple,
)
from .results import APPLY, MAP, mark_item

__all__ = ("SPIN", "WorkerEnd", "worker_main")

SPIN = 50e-6  # seconds an idle worker polls for work before it sleeps (if it has a CPU)
_HOLD = 0.002  # seconds an answer may wait for others to share its datagram
_LONG = 0.001  # a chunk that ran this long is answered at once
_MAX_HELD = 256  # answers per datagram
_MAX_HELD_BYTES = 32 * 1024  # (well under the supervisor's datagram size)
_MISSING = object()  # a function this worker was never sent (or could not unpickle)


class WorkerEnd:
    """The worker's end of its socketpair, as it travels in ``Process`` args."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def __getstate__(self) -> DupFd:
        return DupFd(self.sock.fileno())

    def __setstate__(self, handle: DupFd) -> None:
        self.sock = socket.socket(fileno=handle.detach())


def _exit_when_orphaned(sock: socket.socket) -> None:
    """Exit at once when the pool's end of the link goes away (its owner died)."""
    poller = select.poll()
    poller.register(sock.fileno(), 0)  # POLLHUP/POLLERR are always reported
    while True:
        for _fd, events in poller.poll():
            if events & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                os._exit(1)


_SMALL_ATOMS = (int, float, bool, type(None))
_SHORT = 256  # characters or bytes of a str or bytes value travelling inline


def _inline_size(value: Any) -> int:
    """The size of ``value`` in an answer held unpickled, or 0 if it must be pickled alone.

    Inline: ints, floats, bools, None, short str and bytes, and lists or tuples
    of up to 16 of them (an imap's chunk of one item is a list of one): values
    whose unpickling cannot fail in the supervisor, so they need no datagram of
    their own to fail alone.
    """
    kind = type(value)
    if kind in _SMALL_ATOMS:
        return 16
    if kind is str or kind is bytes:
        return 16 + len(value) if len(value) <= _SHORT else 0
    if (kind is list or kind is tuple) and len(value) <= 16:
        total = 16
        for item in value:
            kind = type(item)
            if kind in _SMALL_ATOMS:
                total += 16
            elif (kind is str or kind is bytes) and len(item) <= _SHORT:
                total += 16 + len(item)
            else:
                return 0
        return total
    return 0


def _encode_answer(tag: int, value: Any, reusable: bool) -> tuple[bytes, int | None]:
    try:
        return encode((tag, value, reusable))
    except Exception as exc:  # the result (or exception) cannot be pickled
        original = value.exc if isinstance(value, ExceptionWithTraceback) else value
        error = ExceptionWithTraceback(MaybeEncodingError(exc, original), exc.__traceback__)
        if isinstance(value, ExceptionWithTraceback):
            error.tb = value.tb  # what the caller needs is where the task failed
        return encode((FAILED, error, reusable))


def _send(sock: socket.socket, message: bytes, fd: int | None) -> None:
    try:
        send_datagram(sock, message, fd, block=True)
    finally:
        if fd is not None:
            os.close(fd)


def _reply(sock: socket.socket, tag: int, value: Any, reusable: bool = False) -> None:
    _send(sock, *_encode_answer(tag, value, reusable))


# Encoded once, in the pool's process: a worker's first words cost it no pickling.
_READY = _encode_answer(READY, None, False)[0]


class _Answers:
    """Answers of finished chunks, held briefly so that several share a datagram.

    Per-message costs (a system call on each side, a wake-up of the
    supervisor) dominate short tasks.  An answer is held only while chunks
    are short: it goes at once after a chunk that ran ``_LONG``, before a chunk
    with a timeout (whose clock starts when the supervisor hears of the chunk
    before it), and before the worker waits for more work; and a helper thread
    sends what has waited ``_HOLD``, so that a long chunk never holds back the
    answers of the short ones before it.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.held: list[bytes | tuple[int, Any, bool]] = []
        self.size = 0
        self.since = 0.0
        self.lock = threading.Lock()  # sends go in order, whole
        self._wake = threading.Lock()  # released: something is held
        self._wake.acquire()
        self._flusher_started = False  # started when first needed (see add)

    def add(self, tag: int, value: Any, reusable: bool, now: float, last: bool = False) -> None:
        """Hold (or send) a chunk's answer; ``last``: the worker flushes before it waits
        next, so no helper thread is needed to send it (nor started: a thread costs
        a worker about 0.1 ms, on the way to the first result of every pool)."""
        size = _inline_size(value) if tag == OK else 0
        held: bytes | tuple[int, Any, bool]
        if size:
            held = (tag, value, reusable)
        else:
            message, fd = _encode_answer(tag, value, reusable)
            if fd is not None:  # a large answer travels alone, with its memfd
                with self.lock:
                    self._flush_locked()
                    _send(self.sock, message, fd)
                return
            held, size = message, len(message)
        with self.lock:
            first = not self.held
            if first:
                self.since = now
            self.held.append(held)
            self.size += size
            if len(self.held) >= _MAX_HELD or self.size >= _MAX_HELD_BYTES:
                self._flush_locked()
        if first and not last:
            if not self._flusher_started:
                self._flusher_started = True
                _thread.start_new_thread(self._flusher, ())  # bare: see worker_main
            if self._wake.locked():
                self._wake.release()

    def flush(self) -> None:
        if self.held:
            with self.lock:
                self._flush_locked()

    def _flush_locked(self) -> None:
        held = self.held
        if not held:
            return
        self.held = []
        self.size = 0
        if len(held) == 1 and type(held[0]) is bytes:
            _send(self.sock, held[0], None)
        else:
            _send(self.sock, *encode((MANY, held, False)))

    def _flusher(self) -> None:
        clock = time.monotonic
        try:
            while True:
                self._wake.acquire()  # until an answer is held
                while True:
                    time.sleep(_HOLD)
                    with self.lock:
                        if not self.held:
                            break
                        if clock() - self.since >= _HOLD:
                            self._flush_locked()
                            break
        except OSError:
            return  # the pool is gone: the main loop finds out too


def _run(func: Any, kind: int, payload: Any) -> Any:
    if kind == APPLY:
        args, kwds = payload
        return func(*args, **kwds)
    items = iter(payload)
    try:
        if kind == MAP:
            return list(map(func, items))
        return list(itertools.starmap(func, items))
    except BaseException as exc:
        # Which item of the chunk raised: the pool names it in a note (no cost
        # until then: a list's iterator knows how many items it has left).
        mark_item(exc, len(payload) - 1 - operator.length_hint(items))
        raise


def worker_main(
    end: WorkerEnd,
    progress_block: Any,
    spin: float,
    initializer: Any,
    initargs: tuple[Any, ...],
    maxtasks: int | None,
    close_fds: list[int],
) -> None:
    """Run chunks until told to stop, ``maxtasks`` chunks are done, or the pool goes away."""
    sock = end.sock
    # The pool's owner decides what Ctrl-C does to its workers (it terminates them).
    _platform.ignore_sigint()
    for fd in close_fds:  # forked: the pool's ends of the other workers' links
        try:
            os.close(fd)
        except OSError:
            pass
    # A bare thread, like the parent watcher of phalanx.process: Thread.start()
    # would wait for it to run, a hand-over of the CPU on every worker's way to
    # its first task; the interpreter does not wait for it at exit either.
    _thread.start_new_thread(_exit_when_orphaned, (sock,))
    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException as exc:
            _reply(sock, INIT_FAILED, ExceptionWithTraceback(exc, exc.__traceback__))
            _runtime.debug("pool worker: initializer failed: %r", exc)
            return
    _send(sock, _READY, None)
    progress = progress_block.view().cast("q")
    answers = _Answers(sock)
    clock = time.monotonic
    funcs: dict[int, Any] = {}
    done = 0
    while maxtasks is None or done < maxtasks:
        answers.flush()  # before waiting for more work
        try:
            got = (spin and _platform.spare_cpu() and recv_spinning(sock, spin)) or recv_datagram(
                sock, True
            )
        except (EOFError, OSError):
            break  # the pool is gone
        if got is None:  # a blocking receive always returns a datagram; never mind
            continue
        mappings: list[mmap.mmap] = []
        progress[DECODING] = 1
        try:
            tasks: list[TaskTuple] | None = decode(*got, mappings)
        except BaseException as exc:
            progress[DECODING] = 0
            error = ExceptionWithTraceback(_unreadable(exc), exc.__traceback__)
            del exc
            _reply(sock, UNREADABLE, error, _unmap(mappings))
            done += 1
            continue
        progress[DECODING] = 0
        del got
        if tasks is None:
            break
        tasks.reverse()  # pop() from the end: each task's arguments go as soon as it is done
        while tasks:
            fid, func, forget, kind, payload, seq, urgent = tasks.pop()
            last = not tasks  # the batch's shared memory may be given back after this one
            if forget is not None:
                funcs.pop(forget, None)
            if func is not None:
                funcs[fid] = func
            func = funcs.get(fid, _MISSING)
            start = clock()
            if func is _MISSING:
                # An earlier chunk carrying it could not be unpickled: ask again.
                del payload
                answers.add(RESEND, fid, last and _unmap(mappings), start, last)
                progress[FINISHED] = seq
                continue
            if urgent:
                answers.flush()
            progress[BEGUN] = seq
            try:
                result = _run(func, kind, payload)
            except BaseException as exc:
                del payload
                error = ExceptionWithTraceback(exc, exc.__traceback__)
                del exc  # its frames may hold the arguments (and so the segment)
                answers.add(FAILED, error, last and _unmap(mappings), start, last)
                del error
            else:
                del payload
                answers.add(OK, result, last and _unmap(mappings), start, last)
                del result
            progress[FINISHED] = seq
            if urgent or clock() - start >= _LONG:
                answers.flush()
            done += 1
    answers.flush()
    sys.stdout.flush()


def _unmap(mappings: list[mmap.mmap]) -> bool:
    """Unmap the chunk's segment; True if nothing used it any more (it may be reused)."""
    if not mappings:
        return False
    try:
        mappings[0].close()
    except BufferError:  # the task kept an array or a view of its arguments
        return False
    return True


def _unreadable(exc: BaseException) -> BaseException:
    error = RuntimeError(
        f"a pool worker could not unpickle its task: {type(exc).__name__}: {exc}. "
        "Is the function (and everything it needs) importable in the worker? Under "
        "spawn and forkserver, workers re-import the main module: define functions at "
        "module level, outside the `if __name__ == '__main__':` block."
    )
    error.__cause__ = exc
    return error
