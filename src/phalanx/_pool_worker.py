"""The loop a pool worker process runs (layer 4, child side).

The worker owns one end of a SEQPACKET socketpair; the pool's supervisor owns
the other.  Each datagram down is one chunk of tasks (or None: exit); each
datagram up is the outcome of the oldest chunk not yet answered.  Chunks are
answered in the order they came, so no message carries an id: the supervisor
always knows which chunk a worker is running, and which one it held if it
dies.

Message down: a list of chunks, each ``(fid, func or None, fid to forget or
None, kind, payload)``, answered one by one; or None: exit.  Small chunks go
several to a datagram when the pool has a backlog.  A function travels once
per worker and is then named by its ``fid`` (a lambda pickled by value is not
re-pickled for every task).

Message up: ``(tag, value, reusable)`` with the tags below; ``reusable`` says
that the chunk came in a shared-memory segment that nothing maps any more, so
the supervisor may write the next large chunk into it (see ``_segments``).
"""

from __future__ import annotations

import mmap
import os
import select
import signal
import socket
import sys
import threading
from typing import Any

from . import _util as util
from ._channel import decode, encode, recv_datagram, recv_spinning, send_datagram
from ._pool_results import APPLY, MAP, ExceptionWithTraceback, MaybeEncodingError
from ._wire.fds import DupFd

__all__ = (
    "DECODED",
    "FAILED",
    "INIT_FAILED",
    "OK",
    "READY",
    "RESEND",
    "UNREADABLE",
    "WorkerEnd",
    "worker_main",
)

OK = 0  # value: the result (a list for map chunks)
FAILED = 1  # value: the exception (with the remote traceback)
INIT_FAILED = 2  # value: the initializer's exception; the worker then exits
UNREADABLE = 3  # value: why the task could not be unpickled
READY = 4  # the initializer is done: timeouts count from here (sent once, first)
RESEND = 5  # the chunk named a function this worker never got: send it again with it
DECODED = 6  # a datagram of several chunks was unpickled (a crash after this is a task's)

_SPIN = 50e-6


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


def _reply(sock: socket.socket, tag: int, value: Any, reusable: bool = False) -> None:
    try:
        message, fd = encode((tag, value, reusable))
    except Exception as exc:  # the result (or exception) cannot be pickled
        original = value.exc if isinstance(value, ExceptionWithTraceback) else value
        error = ExceptionWithTraceback(MaybeEncodingError(exc, original), exc.__traceback__)
        if isinstance(value, ExceptionWithTraceback):
            error.tb = value.tb  # what the caller needs is where the task failed
        message, fd = encode((FAILED, error, reusable))
    try:
        send_datagram(sock, message, fd, block=True)
    finally:
        if fd is not None:
            os.close(fd)


def _run(func: Any, kind: int, payload: Any) -> Any:
    if kind == APPLY:
        args, kwds = payload
        return func(*args, **kwds)
    if kind == MAP:
        return [func(x) for x in payload]
    return [func(*args) for args in payload]


def worker_main(
    end: WorkerEnd,
    initializer: Any,
    initargs: tuple[Any, ...],
    maxtasks: int | None,
    close_fds: list[int],
) -> None:
    """Run chunks until told to stop, ``maxtasks`` chunks are done, or the pool goes away."""
    sock = end.sock
    # Ctrl-C reaches the whole process group; the pool's owner decides what
    # happens to its workers (it terminates them), not every worker on its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for fd in close_fds:  # forked: the pool's ends of the other workers' links
        try:
            os.close(fd)
        except OSError:
            pass
    threading.Thread(
        target=_exit_when_orphaned, args=(sock,), daemon=True, name="phalanx-worker-watchdog"
    ).start()
    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException as exc:
            _reply(sock, INIT_FAILED, ExceptionWithTraceback(exc, exc.__traceback__))
            util.debug("pool worker: initializer failed: %r", exc)
            return
    _reply(sock, READY, None)
    funcs: dict[int, Any] = {}
    done = 0
    while maxtasks is None or done < maxtasks:
        try:
            got = recv_spinning(sock, _SPIN) or recv_datagram(sock, True)
        except (EOFError, OSError):
            break  # the pool is gone
        if got is None:  # a blocking receive always returns a datagram; never mind
            continue
        mappings: list[mmap.mmap] = []
        try:
            tasks = decode(*got, mappings)
        except BaseException as exc:
            error = ExceptionWithTraceback(_unreadable(exc), exc.__traceback__)
            del exc
            _reply(sock, UNREADABLE, error, _unmap(mappings))
            done += 1
            continue
        del got
        if tasks is None:
            break
        if len(tasks) > 1:
            # Had it died unpickling them, nobody could tell which one was to blame.
            _reply(sock, DECODED, None)
        tasks.reverse()  # pop() from the end: each task's arguments go as soon as it is done
        while tasks:
            fid, func, forget, kind, payload = tasks.pop()
            last = not tasks  # the batch's shared memory may be given back after this one
            if forget is not None:
                funcs.pop(forget, None)
            if func is not None:
                funcs[fid] = func
            func = funcs.get(fid)
            if func is None:
                # An earlier chunk carrying it could not be unpickled: ask again.
                del payload
                _reply(sock, RESEND, fid, last and _unmap(mappings))
                continue
            try:
                result = _run(func, kind, payload)
            except BaseException as exc:
                del payload
                error = ExceptionWithTraceback(exc, exc.__traceback__)
                del exc  # its frames may hold the arguments (and so the segment)
                _reply(sock, FAILED, error, last and _unmap(mappings))
                del error
            else:
                del payload
                _reply(sock, OK, result, last and _unmap(mappings))
                del result
            done += 1
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
