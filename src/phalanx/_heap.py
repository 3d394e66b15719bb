"""The shared heap: small blocks of shared memory carved out of a few large arenas.

An arena is an anonymous memfd mapped ``MAP_SHARED``: it has no name in
``/dev/shm``, so nothing can be left behind; the kernel frees it when the
last process holding it exits, however it exits.  Blocks travel to other
processes by pickling (the arena's fd goes with the first block; each process
maps an arena once).

Each process allocates only from arenas it created: a forked child starts a
heap of its own instead of sharing the parent's free lists.  A block is freed
when the object that owns it is collected in the process that allocated it.
"""

from __future__ import annotations

import bisect
import itertools
import mmap
import os
import threading
from typing import Any

from . import _platform, _runtime

__all__ = ("Arena", "Block", "malloc")

ALIGNMENT = 64  # a cache line: two semaphores never share one
_ARENA_SIZE = 1 << 20


def _round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to


# Arenas mapped in this process, by (creator pid, serial): unpickling a block
# of a known arena reuses the mapping.
_mapped: dict[tuple[int, int], Arena] = {}
_serial = itertools.count()


class Arena:
    """A shared-memory region mapped in this process."""

    def __init__(self, size: int, fd: int | None = None, key: tuple[int, int] | None = None):
        if fd is None:
            fd = _platform.memfd_create("phalanx-heap")
            try:
                os.ftruncate(fd, size)
            except BaseException:
                os.close(fd)
                raise
        self.size = size
        self.fd = fd
        self.key = key if key is not None else (os.getpid(), next(_serial))
        self.buffer = mmap.mmap(fd, size)
        _mapped[self.key] = self

    def __reduce__(self) -> tuple[Any, ...]:
        # Imported here: a child that only unpickles arenas (every pool worker)
        # never needs the sharer, nor the hmac/secrets/OpenSSL it imports.
        from ._resource_sharer import share_fd

        return _rebuild_arena, (self.key, self.size, share_fd(self.fd))


def _rebuild_arena(key: tuple[int, int], size: int, handle: Any) -> Arena:
    arena = _mapped.get(key)
    if arena is None:
        return Arena(size, fd=handle.detach(), key=key)
    handle.discard()  # already mapped here
    return arena


class Block:
    """``size`` bytes at ``offset`` of ``arena``; ``view()`` is a writable memoryview."""

    __slots__ = ("__weakref__", "arena", "offset", "size")

    def __init__(self, arena: Arena, offset: int, size: int) -> None:
        self.arena = arena
        self.offset = offset
        self.size = size

    def view(self) -> memoryview:
        return memoryview(self.arena.buffer)[self.offset : self.offset + self.size]

    def __reduce__(self) -> tuple[Any, ...]:
        return Block, (self.arena, self.offset, self.size)


class _Heap:
    """First-fit allocator with coalescing free lists, one per arena."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._arenas: list[Arena] = []
        self._free: dict[tuple[int, int], list[tuple[int, int]]] = {}  # (start, end)
        # Frees that arrived while the lock was taken (see _release).
        self._pending: list[tuple[tuple[int, int], int, int]] = []

    def malloc(self, size: int) -> Block:
        if size < 0:
            raise ValueError(f"size must be >= 0 (got {size})")
        if self._pid != os.getpid():  # forked: the parent's free lists are not ours
            self.__init__()  # type: ignore[misc]
        size = _round_up(max(size, 1), ALIGNMENT)
        with self._lock:
            while self._pending:
                self._free_locked(*self._pending.pop())
            for arena in self._arenas:
                offset = self._carve(arena, size)
                if offset is not None:
                    return self._block(arena, offset, size)
            arena = Arena(max(_ARENA_SIZE, _round_up(size, mmap.PAGESIZE)))
            self._arenas.append(arena)
            self._free[arena.key] = [(0, arena.size)]
            offset = self._carve(arena, size)
            if offset is None:  # pragma: no cover - a fresh arena always fits
                raise MemoryError(f"cannot allocate {size} bytes")
            return self._block(arena, offset, size)

    def _carve(self, arena: Arena, size: int) -> int | None:
        spans = self._free[arena.key]
        for i, (start, end) in enumerate(spans):
            if end - start >= size:
                if end - start == size:
                    del spans[i]
                else:
                    spans[i] = (start + size, end)
                return start
        return None

    def _block(self, arena: Arena, offset: int, size: int) -> Block:
        arena.buffer[offset : offset + size] = bytes(size)  # a reused block may be dirty
        block = Block(arena, offset, size)
        _runtime.Finalize(block, self._release, (arena.key, offset, size))
        return block

    def _release(self, key: tuple[int, int], offset: int, size: int) -> None:
        """Return a block to its arena's free list (called when its owner is collected).

        The garbage collector may call this in any thread, including one that is
        inside ``malloc`` holding the lock: then the free is queued for the next
        ``malloc`` instead of deadlocking (or corrupting the list it walks).
        """
        if not self._lock.acquire(blocking=False):
            self._pending.append((key, offset, size))
            return
        try:
            self._free_locked(key, offset, size)
        finally:
            self._lock.release()

    def _free_locked(self, key: tuple[int, int], offset: int, size: int) -> None:
        """Merge a block into its arena's free list (the lock is held)."""
        spans = self._free.get(key)
        if spans is None:
            return
        start, end = offset, offset + size
        i = bisect.bisect(spans, (start, end))
        if i < len(spans) and spans[i][0] == end:
            end = spans.pop(i)[1]
        if i > 0 and spans[i - 1][1] == start:
            start = spans.pop(i - 1)[0]
            i -= 1
        spans.insert(i, (start, end))


_heap = _Heap()


def malloc(size: int) -> Block:
    """A zeroed block of shared memory of at least ``size`` bytes.

    Freed when the returned ``Block`` is collected in this process; keep a
    reference for as long as any process uses it.
    """
    return _heap.malloc(size)
