"""Queues between processes, under the stdlib's ``multiprocessing.queues`` names.

Messages travel through a ``_queue_transport``: on Linux small ones are
records of a ring in shared memory under robust mutexes, large ones memfd
datagrams on a SEQPACKET socketpair (elsewhere, every message is a
datagram).  Either way a message is committed whole or not at all, and no
lock can be left held: a process killed in the middle of ``put()`` or
``get()`` loses at most the message in its own hands; everyone else goes on
(unlike the stdlib, whose pipe can be left with a torn message and a lock
held forever).  On Linux a message is in shared memory by the time ``put()``
returns (the ring grows rather than refuse it), so the death of the process
that put it loses nothing; a bounded queue's room is counted in the ring, so
killed consumers cannot shrink it.

Differences from the stdlib, on purpose:

* ``put()`` pickles in the caller: an unpicklable object raises there, instead
  of killing a background thread and being lost silently.
* ``put()`` writes straight into the transport, never into a buffer of the
  putting process (an unbounded ``put()`` still never blocks, as in the
  stdlib).  Only the socket transport (no robust mutexes: not Linux) keeps a
  feeder thread for back-pressure.
* Queues work with processes of any start method, whatever context made them.
"""

from __future__ import annotations

import collections
import os
import pickle
import queue as _queue
import threading
import time
import types
import weakref
from typing import Any, Generic, TypeVar, cast

from . import _platform, _runtime
from ._channel import INLINE as _INLINE
from ._channel import MAX_INLINE as _MAX_INLINE
from ._channel import Channel, decode, encode
from ._queue_transport import (
    LOST,
    RingTransport,
    SocketTransport,
    make_transport,
    rebuild_channel,
    share_channel,
)
from ._ring import Ring
from ._wire.pickling import ATOMS as _ATOMS
from ._wire.pickling import PROTOCOL as _PROTOCOL
from ._wire.pickling import get_spawning_popen
from .errors import LockStateError
from .synchronize import SEM_VALUE_MAX, BoundedSemaphore, Condition, Semaphore

__all__ = ("JoinableQueue", "Queue", "SimpleQueue")

TYPE_CHECKING = False
if TYPE_CHECKING:
    # A PEP 696 default (typing_extensions for the checker only; 3.11 and 3.12's
    # TypeVar has none): a bare ``Queue`` is ``Queue[Any]``.
    from typing_extensions import TypeVar as _TypeVarWithDefault

    _T = _TypeVarWithDefault("_T", default=Any)
else:
    _T = TypeVar("_T")

# A blocking get() polls this long before it sleeps: waking a sleeping process
# on another CPU costs tens of microseconds, often more than the wait itself.
_SPIN = 50e-6
_FEED_BATCH = 256  # small messages the feeder writes in one go

_dumps = pickle.dumps
_loads = pickle.loads

Empty = _queue.Empty
Full = _queue.Full


class _FeederState:
    """Flags shared by a queue and its feeder thread (which must not keep the queue alive)."""

    __slots__ = ("close_writer", "stop")

    def __init__(self) -> None:
        self.stop = False
        self.close_writer = False


def _check_spawning(obj: object) -> None:
    if get_spawning_popen() is None:
        raise RuntimeError(
            f"{type(obj).__name__} objects should only be shared between processes through "
            "inheritance: pass it as an argument of Process(...) (or to a Pool initializer)"
        )


class Queue(Generic[_T]):
    """A FIFO queue between processes (``maxsize <= 0``: unbounded).

    ``put``/``get`` block as in ``queue.Queue``, raising ``queue.Full`` /
    ``queue.Empty`` on timeout or when non-blocking.  Items put by one
    process come out in the order it put them.  ``Queue[T]`` holds items of
    type ``T`` for type checkers.
    """

    def __init__(self, maxsize: int = 0, *, ctx: Any = None) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"maxsize must be an int (got {maxsize!r})")
        if maxsize <= 0:
            maxsize = SEM_VALUE_MAX
        self._maxsize = maxsize
        self._transport = make_transport(maxsize if maxsize < SEM_VALUE_MAX else 0)
        # The ring keeps a bound itself; the socket transport counts room here.
        bounded = maxsize < SEM_VALUE_MAX and not isinstance(self._transport, RingTransport)
        self._sem = BoundedSemaphore(maxsize) if bounded else None
        self._bind()
        self._after_fork()
        _runtime.register_after_fork(self, Queue._after_fork)

    def _after_fork(self) -> None:
        self._closed = False
        self._buffer: collections.deque[tuple[bytes, int | None]] = collections.deque()
        self._lock = threading.Lock()  # orders this process's puts
        self._notempty = threading.Condition(self._lock)
        self._feeder = _FeederState()
        self._thread: threading.Thread | None = None
        self._joincancelled = False
        self._jointhread: _runtime.Finalize | None = None
        self._used = False  # this process has put something

    def __getstate__(self) -> tuple[Any, ...]:
        _check_spawning(self)
        return self._maxsize, self._transport, self._sem

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self._maxsize, self._transport, self._sem = state
        self._bind()
        self._after_fork()
        _runtime.register_after_fork(self, Queue._after_fork)

    def _bind(self) -> None:
        self._channel = self._transport.channel
        transport = self._transport
        ring: Ring | None = getattr(transport, "ring", None)
        self._ring = ring
        # put()'s and get()'s shortcuts: straight into and out of the ring.
        self._fast_put = ring.put if ring is not None else None
        self._fast_get = ring.get if ring is not None else None
        self._receive_marked: Any = getattr(transport, "_receive_marked", None)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")

    # -- put --------------------------------------------------------------------------------

    def put(self, obj: _T, block: bool = True, timeout: float | None = None) -> None:
        """Put ``obj`` into the queue.

        Args:
            obj: Any picklable object; it is pickled now, in the caller (an
                unpicklable one raises here, not later in a feeder thread).
            block: Wait for room while a bounded queue is full (else raise at once).
            timeout: With ``block``, seconds to wait for room (None: as long as it
                takes).

        Raises:
            queue.Full: A bounded queue stayed full (or was full, without ``block``).
            ValueError: The queue was closed in this process.

        With the ring transport (Linux) the item is in shared memory when
        this returns: the death of this process cannot lose it.
        """
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")
        if self._fast_put is not None and type(obj) in _ATOMS:
            # The hot path, written out: a small plain value into the ring.
            message = _dumps(obj, _PROTOCOL)
            if len(message) < _MAX_INLINE:
                self._used = True
                if not self._fast_put(message):  # a bounded queue, full
                    self._put_waiting(message, None, block, timeout)
                return
        message, fd = encode(obj)  # before taking room: a crash here costs nothing
        self._put_encoded(message, fd, block, timeout)

    def _put_encoded(
        self, message: bytes, fd: int | None, block: bool, timeout: float | None
    ) -> None:
        if self._ring is not None:
            self._used = True
            if not self._transport.send(message, fd):
                self._put_waiting(message, fd, block, timeout)
            elif fd is not None:
                os.close(fd)  # the datagram (or the ring) has the message now
            return
        if self._sem is not None and not self._sem.acquire(block, timeout):
            _platform.close_fds(*([] if fd is None else [fd]))
            raise Full
        self._enqueue(message, fd)

    def _put_waiting(
        self, message: bytes, fd: int | None, block: bool, timeout: float | None
    ) -> None:
        """Put into a full bounded ring: wait for room (up to ``timeout``), or ``Full``."""
        ring = cast(Ring, self._ring)
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        try:
            while not self._transport.send(message, fd):
                if not block or (deadline is not None and time.monotonic() >= deadline):
                    raise Full
                ring.wait_room(deadline)
        finally:
            if fd is not None:
                os.close(fd)

    def _enqueue(self, message: bytes, fd: int | None) -> None:
        """Send an encoded item, or hand it to the feeder under back-pressure."""
        self._used = True
        with self._lock:
            if not self._buffer and self._transport.send(message, fd):
                if fd is not None:
                    os.close(fd)  # the datagram holds its own reference now
                return
            self._buffer.append((message, fd))
            if self._thread is None:
                self._start_thread()
            self._notempty.notify()

    def put_nowait(self, obj: _T) -> None:
        """``put(obj, False)``: ``queue.Full`` at once if a bounded queue is full."""
        self.put(obj, False)

    def _start_thread(self) -> None:
        self._thread = threading.Thread(
            target=Queue._feed,
            args=(self._buffer, self._notempty, self._feeder, self._transport),
            name="phalanx-queue-feeder",
            daemon=True,
        )
        self._thread.start()
        # At exit: first let the feeder finish what is buffered, then wait for it
        # (unless cancel_join_thread), as the stdlib does.
        _runtime.Finalize(self, Queue._stop_feeder, [self._notempty, self._feeder], exitpriority=10)
        if not self._joincancelled:
            self._jointhread = _runtime.Finalize(
                self._thread, Queue._finalize_join, [weakref.ref(self._thread)], exitpriority=-5
            )

    @staticmethod
    def _stop_feeder(notempty: threading.Condition, state: _FeederState) -> None:
        # May run from the garbage collector in any thread, the feeder itself
        # included, possibly while that thread holds the lock: never block on
        # it.  A holder of the lock sees the flag on its next turn.
        state.stop = True
        if notempty.acquire(blocking=False):
            try:
                notempty.notify()
            finally:
                notempty.release()

    @staticmethod
    def _finalize_join(twr: weakref.ref[threading.Thread]) -> None:
        thread = twr()
        if thread is not None:
            thread.join()

    @staticmethod
    def _feed(
        buffer: collections.deque[tuple[bytes, int | None]],
        notempty: threading.Condition,
        state: _FeederState,
        transport: SocketTransport,
    ) -> None:
        """The feeder thread: send buffered items in order; stop when told and drained."""
        while True:
            with notempty:
                while not buffer:
                    if state.stop:
                        if state.close_writer:
                            transport.channel.close_writer()
                        return
                    notempty.wait()
                # Small messages go several at a time; a large one alone.
                batch: list[bytes] = []
                for message, fd in buffer:
                    if fd is not None or len(batch) >= _FEED_BATCH:
                        break
                    batch.append(message)
                head = None if batch else buffer[0]
            try:
                if head is None:
                    sent = transport.send_many(batch)
                elif transport.send(*head):
                    sent = 1
                    os.close(head[1])  # type: ignore[arg-type]
                else:
                    sent = 0
            except OSError:
                if _runtime.is_exiting() or state.stop:
                    return  # the channel is gone at exit: nothing more to deliver
                raise
            if not sent:
                # (At exit too, as the stdlib: the process waits until what it
                # put is in the queue, unless cancel_join_thread() was called.)
                transport.wait_for_room()
                continue
            with notempty:
                for _ in range(sent):
                    buffer.popleft()

    # -- get --------------------------------------------------------------------------------

    def get(self, block: bool = True, timeout: float | None = None) -> _T:
        """Remove and return the oldest item.

        Args:
            block: Wait for an item while the queue is empty (else raise at once).
            timeout: With ``block``, seconds to wait (None: as long as it takes).

        Returns:
            The item, unpickled.

        Raises:
            queue.Empty: No item came in time (or none was there, without ``block``).
            ValueError: The queue was closed in this process.
        """
        # (An item is a T by the word of whoever put it: unpickled values are
        # returned as T without a cast() call, which would cost a frame here.)
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")
        transport = self._transport
        if self._fast_get is not None:  # the hot path: a small item waits in the ring
            got = self._fast_get(self._receive_marked)
            if type(got) is bytes:
                return _loads(got)  # type: ignore[no-any-return]
            # (else None, LOST, or the (message, fd) of a large item)
        else:
            got = transport.recv()
        if got is None or got is LOST:
            if not block:
                if got is LOST:
                    return self.get(False)
                raise Empty
            deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
            while got is None or got is LOST:
                if deadline is not None and time.monotonic() >= deadline:
                    raise Empty
                transport.wait(deadline, _SPIN if _platform.spare_cpu() else 0.0)
                got = transport.recv()
        if self._sem is not None:
            self._sem.release()
        message, fd = got
        if fd is None and message[0] == _INLINE:
            return _loads(message)  # type: ignore[no-any-return]
        return decode(message, fd)  # type: ignore[no-any-return]

    def get_nowait(self) -> _T:
        """``get(False)``: an item, or ``queue.Empty`` at once."""
        return self.get(False)

    # -- state ------------------------------------------------------------------------------

    def qsize(self) -> int:
        """Approximate number of items (racy by nature)."""
        return self._transport.qsize()

    def empty(self) -> bool:
        """Whether the queue is empty now (racy by nature; ``OSError`` once closed)."""
        if self._channel.reader.fileno() < 0:
            raise OSError(f"{self!r} is closed")
        return self._transport.empty()

    def full(self) -> bool:
        """Whether a bounded queue is full now (racy by nature)."""
        if self._ring is not None:
            return self._ring.full()
        return self._sem is not None and self._sem._semlock._is_zero()

    def close(self) -> None:
        """No more puts or gets from this process; buffered items are still sent."""
        with self._lock:
            self._closed = True
            if not self._used:
                # As the stdlib (3.13): closing a queue this process never
                # put to only forbids further use; empty() still answers.
                return
            self._feeder.stop = True
            self._feeder.close_writer = True
            self._notempty.notify()
        self._channel.close_reader()
        if self._thread is None:
            self._channel.close_writer()

    def join_thread(self) -> None:
        """Wait until everything this process put has reached the channel (after close)."""
        if not self._closed:
            raise LockStateError(f"Queue {self!r} not closed: call close() before join_thread()")
        if self._jointhread is not None:
            self._jointhread()

    def cancel_join_thread(self) -> None:
        """Do not wait for buffered items at exit (they may be lost)."""
        self._joincancelled = True
        if self._jointhread is not None:
            self._jointhread.cancel()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} at {id(self):#x} maxsize={self._maxsize}>"

    def __class_getitem__(cls, item: Any) -> types.GenericAlias:
        return types.GenericAlias(cls, item)


class JoinableQueue(Queue[_T]):
    """A ``Queue`` with ``task_done()`` and ``join()``."""

    def __init__(self, maxsize: int = 0, *, ctx: Any = None) -> None:
        super().__init__(maxsize, ctx=ctx)
        self._unfinished_tasks = Semaphore(0)
        self._cond = Condition()

    def __getstate__(self) -> tuple[Any, ...]:
        return (*super().__getstate__(), self._cond, self._unfinished_tasks)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        super().__setstate__(state[:-2])
        self._cond, self._unfinished_tasks = state[-2:]

    def put(self, obj: _T, block: bool = True, timeout: float | None = None) -> None:
        self._check_open()
        message, fd = encode(obj)
        if self._ring is not None:
            # Counted first (a consumer may take it the moment it is in), and
            # put without holding the condition: waiting for room under it
            # would keep consumers out of task_done().
            with self._cond:
                self._unfinished_tasks.release()
            try:
                self._put_encoded(message, fd, block, timeout)
            except BaseException:
                with self._cond:
                    self._unfinished_tasks.acquire(False)
                    if self._unfinished_tasks._semlock._is_zero():
                        self._cond.notify_all()
                raise
            return
        if self._sem is not None and not self._sem.acquire(block, timeout):
            _platform.close_fds(*([] if fd is None else [fd]))
            raise Full
        with self._cond:
            self._unfinished_tasks.release()
            self._enqueue(message, fd)

    def task_done(self) -> None:
        """One item taken with ``get()`` is fully processed."""
        with self._cond:
            if not self._unfinished_tasks.acquire(False):
                raise ValueError("task_done() called too many times")
            if self._unfinished_tasks._semlock._is_zero():
                self._cond.notify_all()

    def join(self) -> None:
        """Block until every item put has been marked with ``task_done()``."""
        with self._cond:
            if not self._unfinished_tasks._semlock._is_zero():
                self._cond.wait()


class SimpleQueue(Generic[_T]):
    """An unbounded FIFO between processes: ``put``, ``get``, ``empty``, ``close``."""

    def __init__(self, *, ctx: Any = None) -> None:
        self._channel = Channel()
        self._closed = False

    def __getstate__(self) -> tuple[Any, ...]:
        _check_spawning(self)
        return share_channel(self._channel)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        reader, writer = state
        self._channel = rebuild_channel(reader, writer)
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"SimpleQueue {self!r} is closed")

    def put(self, obj: _T) -> None:
        """Put ``obj`` (pickled now; blocks while the channel is full)."""
        self._check_open()
        message, fd = encode(obj)
        try:
            self._channel.send(message, fd, block=True)
        finally:
            if fd is not None:
                os.close(fd)

    def get(self) -> _T:
        """Remove and return an item (blocks)."""
        self._check_open()
        while True:
            got = self._channel.recv()
            if got is not None:
                return decode(*got)  # type: ignore[no-any-return]
            self._channel.wait_readable(None)

    def empty(self) -> bool:
        """Whether the queue is empty now (racy by nature; ``OSError`` once closed)."""
        if self._channel.reader.fileno() < 0:
            raise OSError(f"{self!r} is closed")
        return not self._channel.wait_readable(0)

    def close(self) -> None:
        """Release this process's handles on the queue."""
        self._closed = True
        self._channel.close_reader()
        self._channel.close_writer()

    # -- what stdlib code reaches for (``multiprocessing.pool.Pool`` and
    # ``concurrent.futures`` given a phalanx context): the stdlib's SimpleQueue
    # is a pipe with a ``_reader`` and a ``_writer`` connection.

    @property
    def _reader(self) -> _QueueEnd:
        return _QueueEnd(self, reading=True)

    @property
    def _writer(self) -> _QueueEnd:
        return _QueueEnd(self, reading=False)

    def _poll(self, timeout: float | None = 0.0) -> bool:
        return self._channel.wait_readable(timeout)

    @property
    def _rlock(self) -> threading.Lock:
        # Readers need no lock here (datagrams are whole); stdlib code that takes
        # it to keep workers from reading while it drains gets a lock of its own.
        lock: threading.Lock | None = self.__dict__.get("_rlock_")
        if lock is None:
            lock = self.__dict__["_rlock_"] = threading.Lock()
        return lock

    def __class_getitem__(cls, item: Any) -> types.GenericAlias:
        return types.GenericAlias(cls, item)


class _QueueEnd:
    """One end of a ``SimpleQueue`` with a ``Connection``'s face (``send``/``recv``/``poll``/
    ``fileno``/``close``), for stdlib code that uses ``_reader``/``_writer``."""

    def __init__(self, queue: SimpleQueue[Any], reading: bool) -> None:
        self._queue = queue
        self._reading = reading

    def __eq__(self, other: object) -> bool:  # (stdlib code tests ``reader in ready``)
        return (
            isinstance(other, _QueueEnd)
            and other._queue is self._queue
            and other._reading == self._reading
        )

    def __hash__(self) -> int:
        return hash((id(self._queue), self._reading))

    @property
    def closed(self) -> bool:
        return self.fileno() < 0

    def fileno(self) -> int:
        channel = self._queue._channel
        return (channel.reader if self._reading else channel.writer).fileno()

    def recv(self) -> Any:
        return self._queue.get()

    def send(self, obj: Any) -> None:
        self._queue.put(obj)

    def poll(self, timeout: float | None = 0.0) -> bool:
        return self._queue._poll(timeout)

    def close(self) -> None:
        channel = self._queue._channel
        if self._reading:
            channel.close_reader()
        else:
            channel.close_writer()
