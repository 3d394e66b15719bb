"""The supervisor's side of its worker processes: starting them, its record of each,
signalling them.

Starting is its own step because under fork it is mostly page faults: each fork
marks every page of the pool's process copy-on-write again, and the first write
to a page then costs a fault and a copy (~3 us) while a child shares it.  So the
workers of a start are all made first and then forked back to back: work done
between two forks would be paid twice (a Pool(2) start made 200 more page faults
than the stdlib's).
"""

from __future__ import annotations

import collections
import signal
import socket
from collections.abc import Callable
from typing import Any

from .. import _heap
from .._channel import socketpair
from .protocol import PROGRESS_SIZE
from .results import Chunk
from .worker import WorkerEnd, worker_main

__all__ = ("Worker", "signal_worker", "start_workers")


class Worker:
    """The supervisor's view of one worker process."""

    def __init__(
        self, process: Any, sock: socket.socket, progress: _heap.Block, tasks_left: int | None
    ) -> None:
        self.process = process
        self.progress_block = progress  # kept alive while the worker may write it
        self.progress = progress.view().cast("q")  # BEGUN, FINISHED, DECODING (protocol)
        self.next_seq = 1
        self.pid: int = process.pid
        self.sock = sock
        self.sentinel: int = process.sentinel
        self.tasks_left = tasks_left
        self.inflight: collections.deque[Chunk] = collections.deque()  # head runs
        self.sent = 0  # how many of ``inflight`` have left in a datagram
        # Datagrams not sent yet: (message, fd, whether to close fd once sent)
        # (message, fd, whether to close fd once sent, how many chunks it carries)
        self.outbox: collections.deque[tuple[bytes, int | None, bool, int]] = collections.deque()
        self.started = 0.0  # when the head chunk started running
        self.funcs: collections.OrderedDict[int, None] = collections.OrderedDict()
        self.timed_out: Chunk | None = None
        self.stopping = False
        self.ready = False  # its initializer is done: task clocks may run
        self.init_failed = False  # its initializer raised (it said so)
        self.fileno = sock.fileno()
        self.want_write = False

    def room(self, limit: int) -> int:
        """How many more chunks this worker may hold."""
        if self.stopping:
            return 0
        room = limit - len(self.inflight)
        if self.tasks_left is not None:
            room = min(room, self.tasks_left - len(self.inflight))
        return max(0, room)


def start_workers(
    ctx: Any,
    count: int,
    settings: tuple[float, Any, tuple[Any, ...], int | None],
    close_fds: list[int] | None,
    add: Callable[[Any, socket.socket, _heap.Block], None],
) -> None:
    """Start ``count`` workers of context ``ctx``, each on a link of its own; ``add``
    records each one started (its process, the pool's end of its link, its progress
    words), even when a later one fails to start.

    ``settings``: ``worker_main``'s spin, initializer, initargs and maxtasks.
    ``close_fds``: under fork, the fds of this process a worker must close (the
    pool's ends of the links of workers already running, its wake-up pipe); a
    worker also closes the links it does not own of this start.  None otherwise.
    """
    links: list[tuple[socket.socket, socket.socket]] = []
    made: list[tuple[Any, _heap.Block]] = []
    started = 0
    try:
        for _ in range(count):
            links.append(socketpair())
        ours = None if close_fds is None else close_fds + [m.fileno() for m, _t in links]
        for _mine, theirs in links:
            to_close = []
            if ours is not None:
                to_close = ours + [t.fileno() for _m, t in links if t is not theirs]
            made.append(_worker_process(ctx, theirs, settings, to_close))
        for process, _progress in made:
            process.start()
            started += 1
    finally:
        for i, (mine, theirs) in enumerate(links):
            theirs.close()
            if i < started:
                add(made[i][0], mine, made[i][1])
            else:
                mine.close()


def _worker_process(
    ctx: Any,
    theirs: socket.socket,
    settings: tuple[float, Any, tuple[Any, ...], int | None],
    close_fds: list[int],
) -> tuple[Any, _heap.Block]:
    """A worker's Process (not started) and its progress words."""
    spin, initializer, initargs, maxtasks = settings
    progress = _heap.malloc(PROGRESS_SIZE)
    process = ctx.Process(
        target=worker_main,
        args=(WorkerEnd(theirs), progress, spin, initializer, initargs, maxtasks, close_fds),
        daemon=True,
    )
    # As the stdlib names them: ForkPoolWorker-3, SpawnPoolWorker-4, ...
    process.name = process.name.replace("Process", "PoolWorker")
    process._exits_with_parent = True  # its link hangs up when we die: nested pools are safe
    return process, progress


def signal_worker(worker: Worker, signum: int) -> None:
    """SIGKILL or SIGTERM ``worker``; nothing if it is gone."""
    try:
        if signum == signal.SIGKILL:
            worker.process.kill()
        else:
            worker.process.terminate()
    except (ValueError, OSError):
        pass
