"""A queue transport for small messages: a ring in shared memory that grows (layer 3).

Every message of a ``Queue`` takes a system call each way on a socket; for
small ones that is most of the cost.  Here small messages are records in a
ring of bytes in shared memory: no system call on the way, unless somebody
sleeps.

Two robust process-shared mutexes (``_platform.mutex_lock``) guard it, one
for writers at the tail and one for readers at the head (the two-lock queue
of Michael and Scott), so a writer and a reader never wait for each other;
each side only reads the other's counter.  That needs stores to be seen in
the order they were made, which x86 guarantees (``TOTAL_STORE_ORDER``);
elsewhere both sides share one mutex.

**Crash safety**, as with the socket (see ``_channel``): a writer commits a
record by moving ``tail`` after writing it, and a reader takes one by moving
``head``; a process killed in the middle leaves either the whole record or
none of it.  Its mutex is not left held: the next locker is told the holder
died and recounts.

**Nothing accepted is kept outside shared memory.**  A writer that finds no
room *grows* the ring (taking the readers' mutex too: writers' first, then
readers', never the other way round) instead of keeping the message in a
process-local buffer: a message whose ``put()`` returned survives the death
of the process that put it.  Records may straddle the end of the ring, so
growing from C to 2C bytes only copies the bytes whose place changes into
the new half, and commits by one store of the capacity: a grower killed
half-way leaves the ring as it was.  Each process maps the data anew when it
sees a new capacity (the header, with the mutexes, is a page of its own that
never moves).  Once a grown ring is empty, its pages go back to the system.

**Bounded queues** keep their bound here too, as a count of records: room is
taken and given back by the same stores that commit a record, so a process
killed between taking an item and giving back its room cannot lose a slot.
Writers that wait for room sleep on a second doorbell.

Large messages keep travelling in a memfd over the SEQPACKET socket (only a
socket carries an fd); their place in the order is a *marker* record holding
the sequence number the datagram is prefixed with.  The datagram is sent
and its marker written under the writers' mutex, and the marker taken and
the datagram received under the readers', so datagrams are in marker order.
A datagram whose marker never made it (its writer died between the two) or
whose reader died before receiving it is an orphan: the next reader drops it
by its number.  When the socket is full, the message itself goes into the
ring (a *blob* record) rather than waiting anywhere.

Layout of the ring's memfd::

    0     pthread_mutex_t writers   (MUTEX_SIZE bytes)
    64    pthread_mutex_t readers
    128   sem_t doorbell            readers sleep on it when the ring is empty
    160   sem_t roombell            writers of a full bounded queue sleep on it
    192   u64 tail, puts, next_seq, room_sleepers   the writers' words
    256   u64 head, gets, sleepers                  the readers' words
    320   u64 capacity, maxsize                     (capacity changes under both mutexes)
    4096  data                      capacity bytes of records (a power of two)

``head``/``tail`` are byte counters (position = counter % capacity); ``puts``
and ``gets`` count records, so ``qsize()`` is their difference.  A record is
a u32 ``kind << 30 | length`` and its bytes (a blob: a u32 kind, then a u64
length); a record may wrap around the end of the data.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import socket
import struct
import time
import weakref
from collections.abc import Callable
from typing import Any

from . import _platform
from ._fast import speedups as _speedups
from ._wire.fds import DupFd

__all__ = ("CAPACITY", "FULL", "Ring", "send_marked", "split_marked")

HEADER = 4096  # one page: what never moves
_DOORBELL, _ROOMBELL = 128, 160
_W_WORDS, _R_WORDS, _C_WORDS = 192, 256, 320
_TAIL, _PUTS, _SEQ, _ROOM_SLEEPERS = 0, 1, 2, 3  # in the writers' words
_HEAD, _GETS, _SLEEPERS = 0, 1, 2  # in the readers' words
_CAP, _MAXSIZE = 0, 1  # in the constant-ish words
_DATA, _MARKER, _BLOB = 0, 1, 2
_LEN = struct.Struct("=I")
_SEQ_WORD = struct.Struct("=Q")
_BLOB_HEAD = struct.Struct("=IQ")
_LEN_MASK = (1 << 30) - 1
_LEN_SIZE = _LEN.size
_pack_len = _LEN.pack_into
_unpack_len = _LEN.unpack_from
_trylock = _platform.mutex_trylock
_unlock = _platform.mutex_unlock
_WAIT_SLICE = 0.1  # a sleeping reader/writer looks again this often (a lost wake-up costs this)
_RELEASE_EVERY = 1.0  # seconds between two releases of a grown ring's pages
_MUTEXES_SHARED = not _platform.TOTAL_STORE_ORDER
# The compiled hot path of put and get (a data record in place, the mutex free):
# what they return when the Python path must do it, or repair a dead holder's side.
_FastRing: Any = getattr(_speedups, "FastRing", None)
_SLOW, _DEAD = -1, -2

CAPACITY = 256 * 1024  # to start with; a power of two

FULL = False  # what ``put`` returns when a bounded queue has no room


class Ring:
    """Records of bytes in shared memory, shared by every process that has the ring.

    ``maxsize`` > 0 bounds the number of records (``put`` then returns
    ``FULL`` rather than add one); the bytes are never a limit.
    """

    def __init__(self, capacity: int = CAPACITY, maxsize: int = 0) -> None:
        if capacity <= 0 or capacity & (capacity - 1):
            raise ValueError(f"ring capacity must be a power of two (got {capacity})")
        # Its own memfd, not the shared heap: the memory lives as long as any
        # process maps it, so a creator that drops its queue while children
        # still use it cannot hand the same bytes to a new one.
        fd = _platform.memfd_create("phalanx-queue-ring")
        try:
            os.ftruncate(fd, HEADER + capacity)
            header = mmap.mmap(fd, HEADER)
            words = memoryview(header)[_C_WORDS : _C_WORDS + 16].cast("Q")
            words[_CAP], words[_MAXSIZE] = capacity, maxsize
            words.release()
            base = ctypes.addressof(ctypes.c_char.from_buffer(header))
            _platform.mutex_init(ctypes.c_void_p(base))
            _platform.mutex_init(ctypes.c_void_p(base + _platform.MUTEX_SIZE))
            _platform.sem_init(ctypes.c_void_p(base + _DOORBELL), 0)
            _platform.sem_init(ctypes.c_void_p(base + _ROOMBELL), 0)
            self._setup(fd, header)
        except BaseException:
            os.close(fd)
            raise

    def _setup(self, fd: int, header: mmap.mmap | None = None) -> None:
        self._fd = fd
        weakref.finalize(self, os.close, fd)
        self._header = header if header is not None else mmap.mmap(fd, HEADER)
        base = ctypes.addressof(ctypes.c_char.from_buffer(self._header))
        self._wlock = ctypes.c_void_p(base)
        self._rlock = self._wlock if _MUTEXES_SHARED else ctypes.c_void_p(base + 64)
        self._doorbell = ctypes.c_void_p(base + _DOORBELL)
        self._roombell = ctypes.c_void_p(base + _ROOMBELL)
        view = memoryview(self._header)
        self._w = view[_W_WORDS : _W_WORDS + 32].cast("Q")
        self._r = view[_R_WORDS : _R_WORDS + 24].cast("Q")
        self._c = view[_C_WORDS : _C_WORDS + 16].cast("Q")
        self.maxsize = int(self._c[_MAXSIZE])
        self._watched = bool(self.maxsize)  # a get() has more to do (see _after_get)
        self.capacity = 0
        self._map: mmap.mmap | None = None
        self._data = memoryview(b"")
        self._released = 0.0  # when this process last gave the pages of a grown ring back
        self._fast: Any = None
        if _FastRing is not None:
            self._fast = _FastRing(self._header, base, _MUTEXES_SHARED, self.maxsize)
        self._map_data()

    def _map_data(self, mapping: mmap.mmap | None = None) -> None:
        """Map the data at its current capacity (after a writer grew it)."""
        capacity = int(self._c[_CAP])
        if mapping is None:
            mapping = mmap.mmap(self._fd, capacity, offset=HEADER)
        old = self._map
        if old is not None:
            self._data.release()
            try:
                old.close()
            except BufferError:  # a view still alive: the collector unmaps it later
                pass
        self._map = mapping
        self._data = memoryview(mapping)
        self.capacity = capacity
        if self._fast is not None:  # (the ctypes object, and its export, go at once)
            self._fast.set_data(ctypes.addressof(ctypes.c_char.from_buffer(mapping)), capacity)
        self._mask = capacity - 1
        self._watched = bool(self.maxsize) or capacity > CAPACITY

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (DupFd(self._fd),)

    # -- the mutexes ----------------------------------------------------------------------

    def _lock(self, mutex: ctypes.c_void_p, tried: int = 0) -> None:
        """Take ``mutex`` (``tried``: what a first ``_trylock`` returned); repair if need be."""
        if _platform.mutex_lock(mutex, tried):
            self._repair(writers=mutex is self._wlock)

    def _repair(self, writers: bool) -> None:
        """A holder of a side's mutex died: that side's record count may be one behind.

        Recount from the ring.  Exact unless the other side commits a record
        during the recount (each side holds only its own mutex): then the
        count may stay one off, which ``qsize()`` (approximate by nature) and
        a bounded queue (one item of room, either way) can live with.  That
        takes two faults at once: a death, and a race with the repair.
        """
        if self._c[_CAP] != self.capacity:
            self._map_data()
        records = 0
        head, tail = self._r[_HEAD], self._w[_TAIL]
        while head < tail:
            head = self._next(head)[0]
            records += 1
        if writers:
            self._w[_PUTS] = self._r[_GETS] + records
        else:
            self._r[_GETS] = self._w[_PUTS] - records

    def _read_at(self, at: int, n: int) -> bytes:
        """``n`` bytes from counter ``at`` (they may wrap around the end)."""
        pos = at & self._mask
        first = self.capacity - pos
        if first >= n:
            return self._data[pos : pos + n].tobytes()
        return self._data[pos:].tobytes() + self._data[: n - first].tobytes()

    def _copy_out(self, at: int, out: bytearray) -> None:
        pos = at & self._mask
        n = len(out)
        first = min(n, self.capacity - pos)
        out[:first] = self._data[pos : pos + first]
        if first < n:
            out[first:] = self._data[: n - first]

    def _write_at(self, at: int, payload: bytes | memoryview) -> None:
        pos = at & self._mask
        n = len(payload)
        first = self.capacity - pos
        if first >= n:
            self._data[pos : pos + n] = payload
        else:
            view = memoryview(payload)
            self._data[pos:] = view[:first]
            self._data[: n - first] = view[first:]

    def _next(self, head: int) -> tuple[int, int, int, int]:
        """(head after the record at ``head``, its kind, its payload's counter, its length)."""
        word = _unpack_len(self._read_at(head, _LEN_SIZE))[0]
        kind = word >> 30
        if kind == _BLOB:
            length = _BLOB_HEAD.unpack(self._read_at(head, _BLOB_HEAD.size))[1]
            start = head + _BLOB_HEAD.size
        else:
            length = word & _LEN_MASK
            start = head + _LEN_SIZE
        return start + length, kind, start, length

    # -- writers (the writers' mutex held) ------------------------------------------------

    def _full(self) -> bool:
        return bool(self.maxsize) and self._w[_PUTS] - self._r[_GETS] >= self.maxsize

    def _append(self, kind: int, payload: bytes | memoryview) -> None:
        """Append a record, growing the ring if it has no room (the bound is the caller's)."""
        w = self._w
        if self._c[_CAP] != self.capacity:
            self._map_data()
        head = _BLOB_HEAD.pack(kind << 30, len(payload)) if kind == _BLOB else None
        size = (len(head) if head else _LEN_SIZE) + len(payload)
        tail = w[_TAIL]
        if size > self.capacity - (tail - self._r[_HEAD]):
            self._grow(size)
        if head is None:
            self._write_at(tail, _LEN.pack(kind << 30 | len(payload)))
            self._write_at(tail + _LEN_SIZE, payload)
        else:
            self._write_at(tail, head)
            self._write_at(tail + len(head), payload)
        w[_TAIL] = tail + size  # the commit
        w[_PUTS] += 1

    def _grow(self, size: int) -> None:
        """Make room for ``size`` more bytes: double the capacity until it fits.

        Holds the readers' mutex too, so nobody reads while bytes move.  A
        byte at counter p lives at p % capacity: doubling moves exactly the
        live bytes whose place is now in the new half, into space nobody
        uses yet; the new capacity is committed last, in one store.
        """
        shared = self._rlock is self._wlock
        if not shared:
            self._lock(self._rlock)
        try:
            old = self.capacity
            head, tail = self._r[_HEAD], self._w[_TAIL]
            new = old
            while size > new - (tail - head):
                new *= 2
            if os.fstat(self._fd).st_size < HEADER + new:
                os.ftruncate(self._fd, HEADER + new)
            mapping = mmap.mmap(self._fd, new, offset=HEADER)
            data = memoryview(mapping)
            at = head
            while at < tail:  # runs that are contiguous in the old layout
                pos = at % old
                run = min(tail - at, old - pos)
                moved = at % new
                if moved != pos:
                    data[moved : moved + run] = data[pos : pos + run]
                at += run
            data.release()
            self._c[_CAP] = new  # the commit
            self._map_data(mapping)
        finally:
            if not shared:
                _unlock(self._rlock)

    def _wake(self) -> None:
        # After the writers' mutex is released (a full barrier): a reader that
        # registered as a sleeper then looked at the tail either saw our record
        # or is seen here.
        if self._r[_SLEEPERS] and _platform.sem_getvalue(self._doorbell) <= 0:
            _platform.raw_sem_post(self._doorbell)

    def put(self, message: bytes) -> bool:
        """Append one small message; ``FULL`` (False) only if a bounded queue is full."""
        fast = self._fast
        tried = 0
        if fast is not None:  # the compiled hot path
            got = fast.put(message)
            if got >= 0:
                return bool(got == 1)  # True, or FULL
            if got == _DEAD:
                tried = errno.EOWNERDEAD  # the mutex is ours: repair (below)
        # The hot path, written out: each call saved is a tenth of a microsecond.
        mutex = self._wlock
        if not tried:
            tried = _trylock(mutex)
        if tried:
            self._lock(mutex, tried)
        try:
            if self.maxsize and self._full():
                return FULL
            w = self._w
            tail = w[_TAIL]
            pos = tail & self._mask
            size = _LEN_SIZE + len(message)
            if (
                pos + size > self.capacity
                or size > self.capacity - (tail - self._r[_HEAD])
                or self._c[_CAP] != self.capacity
            ):
                self._append(_DATA, message)  # wraps, grows, or a new capacity to map
            else:
                data = self._data
                _pack_len(data, pos, len(message))
                data[pos + _LEN_SIZE : pos + size] = message
                w[_TAIL] = tail + size  # the commit
                w[_PUTS] += 1
        finally:
            _unlock(mutex)
        if self._r[_SLEEPERS]:
            self._wake()
        return True

    def put_large(self, send: Callable[[int], bool], contents: Callable[[], bytes]) -> bool:
        """Place a large message: ``send(seq)`` sends its datagram (never blocking).

        If the socket has no room, ``contents()`` (the whole message) goes
        into the ring as a blob instead.  ``FULL`` only if a bounded queue is.
        """
        self._lock(self._wlock)
        try:
            if self._full():
                return FULL
            # The number is used up first: a writer that dies after sending must
            # not leave it to the next one (its orphan would pass for theirs).
            w = self._w
            seq = w[_SEQ]
            w[_SEQ] = seq + 1
            if send(seq):
                self._append(_MARKER, _SEQ_WORD.pack(seq))
            else:
                self._append(_BLOB, contents())
        finally:
            _unlock(self._wlock)
        self._wake()
        return True

    def wait_room(self, deadline: float | None) -> None:
        """Return once a full bounded queue may have room, or at ``deadline``."""
        self._lock(self._wlock)
        self._w[_ROOM_SLEEPERS] += 1
        _unlock(self._wlock)  # (a full barrier: see _wake_room)
        try:
            if not self._full():
                return
            until = time.monotonic() + _WAIT_SLICE
            if deadline is not None:
                until = min(until, deadline)
            if not _platform.sem_wait_until(self._roombell, until):
                self._probe_readers()
        finally:
            self._lock(self._wlock)
            self._w[_ROOM_SLEEPERS] = max(0, self._w[_ROOM_SLEEPERS] - 1)
            _unlock(self._wlock)

    def _probe_readers(self) -> None:
        """A reader killed between taking a record and counting it holds a slot until the
        next reader repairs the count; the next reader may be us, waiting for room."""
        if self._rlock is self._wlock:
            return
        tried = _trylock(self._rlock)
        if tried == errno.EBUSY:
            return  # a live reader holds it
        if tried:
            self._lock(self._rlock, tried)  # its holder died: repair
        _unlock(self._rlock)

    # -- readers (the readers' mutex held) ------------------------------------------------

    def get(self, receive: Callable[[int], Any]) -> Any:
        """The oldest message: bytes, ``receive(seq)`` for a marker, ``(blob, None)`` for a
        blob; None if the ring is empty."""
        r = self._r
        w = self._w
        mutex = self._rlock
        fast = self._fast
        if fast is not None and not self._watched:  # the compiled hot path
            got = fast.get()
            if type(got) is not int:
                return got
            tried = errno.EOWNERDEAD if got == _DEAD else 0  # _DEAD: ours, to repair
        else:
            tried = 0
        if not tried:
            if r[_HEAD] == w[_TAIL]:  # a racy peek, but a wrong one only costs a lock round
                return None
            tried = _trylock(mutex)
        if tried:
            self._lock(mutex, tried)
        try:
            head = r[_HEAD]
            if head == w[_TAIL]:
                return None
            if self._c[_CAP] != self.capacity:
                self._map_data()
            pos = head & self._mask
            if self.capacity - pos >= _LEN_SIZE:
                word = _unpack_len(self._data, pos)[0]
                end = pos + _LEN_SIZE + word
                if not word >> 30 and end <= self.capacity:  # the hot path: data in place
                    message = self._data[pos + _LEN_SIZE : end].tobytes()
                    r[_HEAD] = head + _LEN_SIZE + word  # the commit
                    r[_GETS] += 1
                    if self._watched:
                        self._after_get()
                    return message
            head, kind, start, length = self._next(head)
            payload: bytes | bytearray
            if kind == _BLOB:  # writable, as a large message's mapping is (numpy arrays)
                payload = buffer = bytearray(length)
                self._copy_out(start, buffer)
            else:
                payload = self._read_at(start, length)
            r[_HEAD] = head  # the commit
            r[_GETS] += 1
            self._after_get()
            if kind == _DATA:
                return payload
            if kind == _BLOB:
                return payload, None
            return receive(_SEQ_WORD.unpack(payload)[0])  # under the mutex: in marker order
        finally:
            _unlock(mutex)

    def _after_get(self) -> None:
        if self.maxsize and self._w[_ROOM_SLEEPERS] and _platform.sem_getvalue(self._roombell) <= 0:
            _platform.raw_sem_post(self._roombell)
        if self.capacity > CAPACITY and self._r[_HEAD] == self._w[_TAIL]:
            self._release_pages()

    def _release_pages(self) -> None:
        """A grown ring went empty: give its memory back (the capacity stays).

        At most once a second per process: a ring that empties at every item
        would otherwise pay a system call and page faults each time.
        """
        now = time.monotonic()
        if now - self._released < _RELEASE_EVERY:
            return
        self._released = now
        shared = self._rlock is self._wlock
        if not shared:
            tried = _trylock(self._wlock)
            if tried == errno.EBUSY:
                return  # a writer is busy: next time (never wait for it: lock order)
            if tried:  # EOWNERDEAD: ours now, and to repair (never leave it held)
                self._lock(self._wlock, tried)
        try:
            if self._r[_HEAD] == self._w[_TAIL] and self._map is not None:
                _platform.release_pages(self._map, 0, self.capacity)
        finally:
            if not shared:
                _unlock(self._wlock)

    def wait(self, deadline: float | None, spin: float) -> None:
        """Return once a message may be there, or at ``deadline`` (``time.monotonic()``)."""
        r = self._r
        w = self._w
        if spin:
            # (Only given when a CPU is free: see queues.)  Never sched_yield()
            # here: on a busy machine that hands the CPU to a CPU-bound process
            # for a whole time slice, milliseconds, while the message waits.
            until = time.monotonic() + spin
            while time.monotonic() < until:
                if r[_HEAD] != w[_TAIL]:
                    return
        self._lock(self._rlock)
        r[_SLEEPERS] += 1
        _unlock(self._rlock)  # (a full barrier: see _wake)
        try:
            if r[_HEAD] != w[_TAIL]:
                return
            until = time.monotonic() + _WAIT_SLICE
            if deadline is not None:
                until = min(until, deadline)
            _platform.sem_wait_until(self._doorbell, until)
        finally:
            self._lock(self._rlock)
            r[_SLEEPERS] = max(0, r[_SLEEPERS] - 1)
            _unlock(self._rlock)

    # -- state ----------------------------------------------------------------------------

    def qsize(self) -> int:
        return max(0, int(self._w[_PUTS]) - int(self._r[_GETS]))

    def empty(self) -> bool:
        return bool(self._r[_HEAD] == self._w[_TAIL])

    def full(self) -> bool:
        return bool(self.maxsize) and self.qsize() >= self.maxsize


def _rebuild(handle: DupFd) -> Ring:
    ring = Ring.__new__(Ring)
    ring._setup(handle.detach())
    return ring


def send_marked(sock: socket.socket, seq: int, message: bytes, fd: int) -> bool:
    """Send a large message's datagram, prefixed with its marker's number; False if no room."""
    try:
        sock.sendmsg(
            [_SEQ_WORD.pack(seq), message],
            [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))],
            socket.MSG_DONTWAIT,
        )
    except BlockingIOError:
        return False
    return True


def split_marked(message: bytes) -> tuple[int, bytes]:
    """(number, message) of a datagram sent by ``send_marked``."""
    return _SEQ_WORD.unpack_from(message)[0], message[_SEQ_WORD.size :]
