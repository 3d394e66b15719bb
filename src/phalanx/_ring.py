"""A queue transport for small messages: a ring in shared memory (layer 3).

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

Crash safety, as with the socket (see ``_channel``): a writer commits a
record by moving ``tail`` after writing it, and a reader takes one by moving
``head``; a process killed in the middle leaves either the whole record or
none of it.  Its mutex is not left held: the next locker is told the holder
died and recounts.

Large messages keep travelling in a memfd over the SEQPACKET socket (only a
socket carries an fd); their place in the order is a *marker* record holding
the sequence number the datagram is prefixed with.  The datagram is sent
and its marker written under the writers' mutex, and the marker taken and
the datagram received under the readers', so datagrams are in marker order.
A datagram whose marker never made it (its writer died between the two) or
whose reader died before receiving it is an orphan: the next reader drops it
by its number.

Layout of the ring's memfd::

    0    pthread_mutex_t writers   (MUTEX_SIZE bytes)
    64   pthread_mutex_t readers
    128  sem_t doorbell            readers sleep on it when the ring is empty
    192  u64 tail, puts, next_seq  the writers' words (a cache line of their own)
    256  u64 head, gets, sleepers  the readers' words
    320  data                      capacity bytes of records

``head``/``tail`` are byte counters (position = counter % capacity); ``puts``
and ``gets`` count records, so ``qsize()`` is their difference.  A record is
a u32 ``kind << 30 | length`` and its bytes; a record that does not fit
before the end of the data starts over at 0 (a WRAP header, or less than 4
bytes left, says so).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import socket
import struct
import time
import weakref
from collections.abc import Callable
from typing import Any

from . import _platform
from ._wire.fds import DupFd

__all__ = ("Ring",)

_W_WORDS, _R_WORDS, _HEADER = 192, 256, 320
_TAIL, _PUTS, _SEQ = 0, 1, 2  # in the writers' words
_HEAD, _GETS, _SLEEPERS = 0, 1, 2  # in the readers' words
_DATA, _MARKER, _WRAP = 0, 1, 2
_LEN = struct.Struct("=I")
_SEQ_WORD = struct.Struct("=Q")
_LEN_MASK = (1 << 30) - 1
_LEN_SIZE = _LEN.size
_pack_len = _LEN.pack_into
_unpack_len = _LEN.unpack_from
_trylock = _platform.mutex_trylock
_unlock = _platform.mutex_unlock
_pause = os.sched_yield
_WAIT_SLICE = 0.1  # a sleeping reader looks again this often (a lost wake-up costs this much)
_MUTEXES_SHARED = not _platform.TOTAL_STORE_ORDER

CAPACITY = 256 * 1024


class Ring:
    """Records of bytes in shared memory, shared by every process that has the ring."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        # Its own memfd, not the shared heap: the memory lives as long as any
        # process maps it, so a creator that drops its queue while children
        # still use it cannot hand the same bytes to a new one.
        fd = _platform.memfd_create("phalanx-queue-ring")
        try:
            os.ftruncate(fd, _HEADER + capacity)
            self._setup(fd, capacity)
        except BaseException:
            os.close(fd)
            raise
        base = self._base
        _platform.mutex_init(ctypes.c_void_p(base))
        _platform.mutex_init(ctypes.c_void_p(base + _platform.MUTEX_SIZE))
        _platform.sem_init(ctypes.c_void_p(base + 2 * _platform.MUTEX_SIZE), 0)

    def _setup(self, fd: int, capacity: int) -> None:
        self._fd = fd
        weakref.finalize(self, os.close, fd)
        self.capacity = capacity
        self._map = mmap.mmap(fd, _HEADER + capacity)
        self._base = base = ctypes.addressof(ctypes.c_char.from_buffer(self._map))
        self._wlock = ctypes.c_void_p(base)
        self._rlock = self._wlock if _MUTEXES_SHARED else ctypes.c_void_p(base + 64)
        self._doorbell = ctypes.c_void_p(base + 2 * _platform.MUTEX_SIZE)
        view = memoryview(self._map)
        self._w = view[_W_WORDS : _W_WORDS + 24].cast("Q")
        self._r = view[_R_WORDS : _R_WORDS + 24].cast("Q")
        self._data = view[_HEADER : _HEADER + capacity]

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (DupFd(self._fd), self.capacity)

    # -- the mutexes ----------------------------------------------------------------------

    def _lock(self, mutex: ctypes.c_void_p, tried: int = 0) -> None:
        """Take ``mutex`` (``tried``: what a first ``_trylock`` returned); repair if need be."""
        if _platform.mutex_lock(mutex, tried):
            self._repair(writers=mutex is self._wlock)

    def _repair(self, writers: bool) -> None:
        """A holder of a side's mutex died: that side's record count may be one behind.

        Recount from the ring (approximately, if the other side is busy: a
        count is only ever used for ``qsize()``, approximate by nature).
        """
        records = 0
        head, tail = self._r[_HEAD], self._w[_TAIL]
        while head < tail:
            head = self._next(head)[0]
            records += 1
        if writers:
            self._w[_PUTS] = self._r[_GETS] + records
        else:
            self._r[_GETS] = self._w[_PUTS] - records

    def _next(self, head: int) -> tuple[int, int, int, int]:
        """(head after the record at ``head``, its kind, its offset, its length); skips wraps."""
        cap = self.capacity
        pos = head % cap
        if cap - pos < _LEN_SIZE:
            head += cap - pos
            pos = 0
        word = _unpack_len(self._data, pos)[0]
        if word >> 30 == _WRAP:
            head += cap - pos
            pos = 0
            word = _unpack_len(self._data, 0)[0]
        length = word & _LEN_MASK
        return head + _LEN_SIZE + length, word >> 30, pos + _LEN_SIZE, length

    # -- writers (the writers' mutex held) ------------------------------------------------

    def _room(self, length: int) -> int | None:
        """Bytes to skip to the start (0 if none) for a record of ``length``; None: no room."""
        cap = self.capacity
        tail = self._w[_TAIL]
        pos = tail % cap
        size = _LEN_SIZE + length
        skip = cap - pos if pos + size > cap else 0  # it would not fit before the end
        return skip if skip + size <= cap - (tail - self._r[_HEAD]) else None

    def _write(self, kind: int, payload: bytes) -> bool:
        """Append a record; False if there is no room."""
        skip = self._room(len(payload))
        if skip is None:
            return False
        w = self._w
        tail = w[_TAIL]
        pos = tail % self.capacity
        size = _LEN_SIZE + len(payload)
        data = self._data
        if skip:
            if skip >= _LEN_SIZE:
                _pack_len(data, pos, _WRAP << 30)
            pos = 0
        _pack_len(data, pos, kind << 30 | len(payload))
        data[pos + _LEN_SIZE : pos + size] = payload
        w[_TAIL] = tail + skip + size  # the commit
        w[_PUTS] += 1
        return True

    def _wake(self) -> None:
        # After the writers' mutex is released (a full barrier): a reader that
        # registered as a sleeper then looked at the tail either saw our record
        # or is seen here.
        if self._r[_SLEEPERS] and _platform.sem_getvalue(self._doorbell) <= 0:
            _platform.raw_sem_post(self._doorbell)

    def put(self, message: bytes) -> bool:
        """Append one small message; False if the ring has no room for it now."""
        # The hot path, written out: each call saved is a tenth of a microsecond.
        mutex = self._wlock
        tried = _trylock(mutex)
        if tried:
            self._lock(mutex, tried)
        try:
            w = self._w
            cap = self.capacity
            tail = w[_TAIL]
            pos = tail % cap
            size = _LEN_SIZE + len(message)
            if pos + size > cap or size > cap - (tail - self._r[_HEAD]):
                if not self._write(_DATA, message):  # wraps, or no room
                    return False
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

    def put_many(self, messages: list[bytes]) -> int:
        """Append messages from the start of ``messages`` while there is room; how many went."""
        done = 0
        self._lock(self._wlock)
        try:
            for message in messages:
                if not self._write(_DATA, message):
                    break
                done += 1
        finally:
            _unlock(self._wlock)
        if done:
            self._wake()
        return done

    def put_marker(self, send: Callable[[int], bool]) -> bool:
        """Mark the place of a large message: ``send(seq)`` sends its datagram (no blocking).

        False (nothing sent, nothing written) if the ring or the socket has no room.
        """
        self._lock(self._wlock)
        try:
            if self._room(_SEQ_WORD.size) is None:
                return False
            # The number is used up first: a writer that dies after sending must
            # not leave it to the next one (its orphan would pass for theirs).
            w = self._w
            seq = w[_SEQ]
            w[_SEQ] = seq + 1
            if not send(seq):
                return False
            self._write(_MARKER, _SEQ_WORD.pack(seq))
        finally:
            _unlock(self._wlock)
        self._wake()
        return True

    # -- readers (the readers' mutex held) ------------------------------------------------

    def get(self, receive: Callable[[int], Any]) -> Any:
        """The oldest message (bytes), ``receive(seq)`` for a marker; None if the ring is empty."""
        r = self._r
        w = self._w
        if r[_HEAD] == w[_TAIL]:  # a racy peek, but a wrong one only costs a lock round
            return None
        mutex = self._rlock
        tried = _trylock(mutex)
        if tried:
            self._lock(mutex, tried)
        try:
            head = r[_HEAD]
            if head == w[_TAIL]:
                return None
            pos = head % self.capacity
            if self.capacity - pos >= _LEN_SIZE:
                word = _unpack_len(self._data, pos)[0]
                if not word >> 30:  # the hot path: a data record in place
                    end = pos + _LEN_SIZE + word
                    message = self._data[pos + _LEN_SIZE : end].tobytes()
                    r[_HEAD] = head + _LEN_SIZE + word  # the commit
                    r[_GETS] += 1
                    return message
            head, kind, offset, length = self._next(head)
            if kind == _DATA:
                message = self._data[offset : offset + length].tobytes()
            else:
                seq = _SEQ_WORD.unpack_from(self._data, offset)[0]
            r[_HEAD] = head  # the commit
            r[_GETS] += 1
            if kind == _DATA:
                return message
            return receive(seq)  # still under the mutex: datagrams come in marker order
        finally:
            _unlock(mutex)

    def wait(self, deadline: float | None, spin: float) -> None:
        """Return once a message may be there, or at ``deadline`` (``time.monotonic()``)."""
        r = self._r
        w = self._w
        if spin:
            # Look now and then rather than in a tight loop: the writer owns the
            # tail's cache line meanwhile, and a reader that comes back a few
            # microseconds later takes several messages in a row.
            until = time.monotonic() + spin
            while time.monotonic() < until:
                if r[_HEAD] != w[_TAIL]:
                    return
                _pause()
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


def _rebuild(handle: DupFd, capacity: int) -> Ring:
    ring = Ring.__new__(Ring)
    ring._setup(handle.detach(), capacity)
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
