"""A queue transport for small messages: a ring in shared memory (layer 3).

Every message of a ``Queue`` takes a system call each way on a socket; for
small ones that is most of the cost.  Here small messages are records in a
ring of bytes in shared memory, written and taken under a robust
process-shared mutex (``_platform.mutex_lock``): no system call on the way,
unless somebody sleeps.

Crash safety, as with the socket (see ``_channel``): a writer commits a
record by moving ``tail`` after writing it, and a reader takes one by moving
``head``; a process killed in the middle leaves either the whole record or
none of it.  Its mutex is not left held: the next locker is told the holder
died and recounts the records.

Large messages keep travelling in a memfd over the SEQPACKET socket (only a
socket carries an fd); their place in the order is a *marker* record holding
the sequence number the datagram is prefixed with.  The datagram is sent and
its marker written under the mutex, and the marker taken and the datagram
received under it too, so datagrams are in marker order.  A datagram whose
marker never made it (its writer died between the two) or whose reader died
before receiving it is an orphan: the next reader drops it by its number.

Layout of the ring's memfd::

    0    pthread_mutex_t     (MUTEX_SIZE bytes)
    64   sem_t doorbell      readers sleep on it when the ring is empty
    128  u64 head, tail      byte counters (position = counter % capacity)
    144  u64 count           records in the ring
    152  u64 sleepers        readers waiting on the doorbell
    160  u64 next_seq        number of the next marker
    192  data                capacity bytes of records

A record is a u32 ``kind << 30 | length`` and its bytes; a record that does
not fit before the end of the data starts over at 0 (a WRAP header, or less
than 4 bytes left, says so).
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

_HEADER = 192
_HEAD, _TAIL, _COUNT, _SLEEPERS, _SEQ = range(5)  # u64 words at offset 128
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
        _platform.sem_init(ctypes.c_void_p(base + _platform.MUTEX_SIZE), 0)

    def _setup(self, fd: int, capacity: int) -> None:
        self._fd = fd
        weakref.finalize(self, os.close, fd)
        self.capacity = capacity
        self._map = mmap.mmap(fd, _HEADER + capacity)
        self._base = base = ctypes.addressof(ctypes.c_char.from_buffer(self._map))
        self._mutex = ctypes.c_void_p(base)
        self._doorbell = ctypes.c_void_p(base + _platform.MUTEX_SIZE)
        view = memoryview(self._map)
        self._words = view[128:168].cast("Q")
        self._data = view[_HEADER : _HEADER + capacity]

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (DupFd(self._fd), self.capacity)

    # -- under the mutex ----------------------------------------------------------------

    def _lock(self, tried: int = 0) -> None:
        """Take the mutex (``tried``: what a first ``_trylock`` returned); repair if need be."""
        if _platform.mutex_lock(self._mutex, tried):
            self._repair()

    def _unlock(self) -> None:
        _platform.mutex_unlock(self._mutex)

    def _repair(self) -> None:
        """The last holder died holding the mutex: recount what was committed."""
        words = self._words
        head, tail = words[_HEAD], words[_TAIL]
        count = 0
        while head < tail:
            head = self._next(head)[0]
            count += 1
        words[_COUNT] = count

    def _next(self, head: int) -> tuple[int, int, int, int]:
        """(head after the record at ``head``, its kind, its offset, its length); skips wraps."""
        cap = self.capacity
        pos = head % cap
        if cap - pos < _LEN.size:
            head += cap - pos
            pos = 0
        word = _LEN.unpack_from(self._data, pos)[0]
        if word >> 30 == _WRAP:
            head += cap - pos
            pos = 0
            word = _LEN.unpack_from(self._data, 0)[0]
        length = word & _LEN_MASK
        return head + _LEN.size + length, word >> 30, pos + _LEN.size, length

    def _write(self, kind: int, payload: bytes) -> bool:
        """Append a record; False if there is no room."""
        skip = self._room(len(payload))
        if skip is None:
            return False
        words = self._words
        tail = words[_TAIL]
        pos = tail % self.capacity
        size = _LEN.size + len(payload)
        data = self._data
        if skip:
            if skip >= _LEN.size:
                _LEN.pack_into(data, pos, _WRAP << 30)
            pos = 0
        _LEN.pack_into(data, pos, kind << 30 | len(payload))
        data[pos + _LEN.size : pos + size] = payload
        words[_TAIL] = tail + skip + size  # the commit
        words[_COUNT] += 1
        return True

    def _wake(self) -> None:
        # Under the mutex: a reader registers as a sleeper under it too.
        if self._words[_SLEEPERS] and _platform.sem_getvalue(self._doorbell) <= 0:
            _platform.raw_sem_post(self._doorbell)

    # -- writers --------------------------------------------------------------------------

    def put(self, message: bytes) -> bool:
        """Append one small message; False if the ring has no room for it now."""
        # The hot path, written out: each call saved is a tenth of a microsecond.
        mutex = self._mutex
        tried = _trylock(mutex)
        if tried:
            self._lock(tried)
        try:
            words = self._words
            cap = self.capacity
            tail = words[_TAIL]
            pos = tail % cap
            size = _LEN_SIZE + len(message)
            if pos + size > cap or size > cap - (tail - words[_HEAD]):
                return self._write(_DATA, message) and self._woken()  # wraps, or no room
            data = self._data
            _pack_len(data, pos, len(message))
            data[pos + _LEN_SIZE : pos + size] = message
            words[_TAIL] = tail + size  # the commit
            words[_COUNT] += 1
            if words[_SLEEPERS]:
                self._wake()
            return True
        finally:
            _unlock(mutex)

    def _woken(self) -> bool:
        self._wake()
        return True

    def put_many(self, messages: list[bytes]) -> int:
        """Append messages from the start of ``messages`` while there is room; how many went."""
        done = 0
        self._lock()
        try:
            for message in messages:
                if not self._write(_DATA, message):
                    break
                done += 1
            if done:
                self._wake()
        finally:
            self._unlock()
        return done

    def put_marker(self, send: Callable[[int], bool]) -> bool:
        """Mark the place of a large message: ``send(seq)`` sends its datagram (no blocking).

        False (nothing sent, nothing written) if the ring or the socket has no room.
        """
        self._lock()
        try:
            if self._room(_SEQ_WORD.size) is None:
                return False
            # The number is used up first: a writer that dies after sending must
            # not leave it to the next one (its orphan would pass for theirs).
            words = self._words
            seq = words[_SEQ]
            words[_SEQ] = seq + 1
            if not send(seq):
                return False
            self._write(_MARKER, _SEQ_WORD.pack(seq))
            self._wake()
            return True
        finally:
            self._unlock()

    def _room(self, length: int) -> int | None:
        """Bytes to skip to the start (0 if none) for a record of ``length``; None: no room."""
        words = self._words
        cap = self.capacity
        tail = words[_TAIL]
        pos = tail % cap
        size = _LEN.size + length
        skip = cap - pos if pos + size > cap else 0  # it would not fit before the end
        return skip if skip + size <= cap - (tail - words[_HEAD]) else None

    # -- readers --------------------------------------------------------------------------

    def get(self, receive: Callable[[int], Any]) -> Any:
        """The oldest message (bytes), ``receive(seq)`` for a marker; None if the ring is empty."""
        words = self._words
        if not words[_COUNT]:  # a racy peek, but a wrong one only costs a lock round
            return None
        mutex = self._mutex
        tried = _trylock(mutex)
        if tried:
            self._lock(tried)
        try:
            if not words[_COUNT]:
                return None
            head = words[_HEAD]
            pos = head % self.capacity
            if self.capacity - pos >= _LEN_SIZE:
                word = _unpack_len(self._data, pos)[0]
                if not word >> 30:  # the hot path: a data record in place
                    end = pos + _LEN_SIZE + word
                    message = self._data[pos + _LEN_SIZE : end].tobytes()
                    words[_HEAD] = head + _LEN_SIZE + word  # the commit
                    words[_COUNT] -= 1
                    return message
            head, kind, offset, length = self._next(head)
            if kind == _DATA:
                message = self._data[offset : offset + length].tobytes()
            else:
                seq = _SEQ_WORD.unpack_from(self._data, offset)[0]
            words[_HEAD] = head  # the commit
            words[_COUNT] -= 1
            if kind == _DATA:
                return message
            return receive(seq)  # still under the mutex: datagrams come in marker order
        finally:
            _unlock(mutex)

    def wait(self, deadline: float | None, spin: float) -> None:
        """Return once a message may be there, or at ``deadline`` (``time.monotonic()``)."""
        words = self._words
        if spin:
            # Look now and then rather than in a tight loop: the writer owns the
            # header's cache line meanwhile, and a reader that comes back a few
            # microseconds later takes several messages in a row.
            until = time.monotonic() + spin
            while time.monotonic() < until:
                if words[_COUNT]:
                    return
                _pause()
        self._lock()
        try:
            if words[_COUNT]:
                return
            words[_SLEEPERS] += 1
        finally:
            self._unlock()
        try:
            until = time.monotonic() + _WAIT_SLICE
            if deadline is not None:
                until = min(until, deadline)
            _platform.sem_wait_until(self._doorbell, until)
        finally:
            self._lock()
            words[_SLEEPERS] = max(0, words[_SLEEPERS] - 1)
            self._unlock()

    # -- state ----------------------------------------------------------------------------

    def qsize(self) -> int:
        return int(self._words[_COUNT])


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
