"""Reusable shared-memory segments for large messages (layer 3).

A large message travels in an anonymous memfd.  Writing into a fresh memfd
costs a page allocation per 4 KiB (about 2 GB/s); writing into one whose
pages already exist is a plain memory copy (10+ GB/s).  A sender that talks
to the same peers again and again (a pool's supervisor) keeps the segments
its peers have finished with and writes the next large message into one of
them.

A segment is reused only when the receiver reports that nothing of it is
still mapped (``mmap.close()`` succeeded: no array or view of the message
survived the task).  Otherwise the sender forgets it, and the kernel frees it
with the receiver's last reference.
"""

from __future__ import annotations

import mmap
import os
from typing import Any

from . import _platform

__all__ = ("Segment", "SegmentCache", "write_parts")

_ROUND = 1 << 16  # sizes in 64 KiB steps: one fits similar messages, and populating
# a reused segment (MAP_POPULATE) allocates little beyond what a message uses


def write_parts(fd: int, views: list[memoryview]) -> None:
    """Write ``views`` one after the other at the start of ``fd`` (a fresh memfd)."""
    offset = 0
    views = list(views)
    while views:
        written = os.pwritev(fd, views[:1024], offset)
        offset += written
        while views and written >= views[0].nbytes:
            written -= views[0].nbytes
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]


class Segment:
    """One memfd, sized in 64 KiB steps; mapped by the sender once it is reused."""

    __slots__ = ("fd", "map", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.fd = _platform.memfd_create("phalanx-segment")
        self.map: mmap.mmap | None = None
        try:
            os.ftruncate(self.fd, size)
        except BaseException:
            os.close(self.fd)
            raise

    def write(self, views: list[memoryview]) -> None:
        if self.map is None:
            write_parts(self.fd, views)  # fresh pages: let the kernel allocate them in bulk
            return
        target = memoryview(self.map)
        offset = 0
        for view in views:
            target[offset : offset + view.nbytes] = view
            offset += view.nbytes
        target.release()

    def close(self) -> None:
        if self.map is not None:
            self.map.close()
            self.map = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class SegmentCache:
    """Segments that came back from receivers, ready for the next large message."""

    def __init__(self, max_bytes: int = 1 << 30, max_count: int = 32) -> None:
        self.max_bytes = max_bytes
        self.max_count = max_count
        self._free: list[Segment] = []
        self._bytes = 0

    def borrow(self, size: int) -> Segment:
        """A segment of at least ``size`` bytes (a returned one if one fits well)."""
        best = None
        for seg in self._free:
            if size <= seg.size <= 4 * size + _ROUND and (best is None or seg.size < best.size):
                best = seg
        if best is not None:
            self._free.remove(best)
            self._bytes -= best.size
            return best
        return Segment(-(-size // _ROUND) * _ROUND)

    def keep(self, seg: Segment) -> None:
        """Keep ``seg`` for reuse (its receiver no longer maps it), or free it if full."""
        if self._bytes + seg.size > self.max_bytes or len(self._free) >= self.max_count:
            seg.close()
            return
        if seg.map is None:
            # Map it populated once: every later message is a plain memory copy.
            flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
            seg.map = mmap.mmap(seg.fd, seg.size, flags=flags)
        self._free.append(seg)
        self._bytes += seg.size

    def drop(self, seg: Segment | Any) -> None:
        """The receiver kept (part of) the message: forget the segment."""
        seg.close()

    def close(self) -> None:
        for seg in self._free:
            seg.close()
        self._free.clear()
        self._bytes = 0
