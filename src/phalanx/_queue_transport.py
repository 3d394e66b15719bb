"""How a ``Queue``'s messages travel: a shared ring, or the socket alone (layer 3).

Both transports share the queue's SEQPACKET socketpair (``_channel``) and the
same non-blocking interface; ``Queue`` adds ordering within a process, the
feeder thread, ``maxsize`` and the blocking API on top.

* ``RingTransport`` (Linux: robust mutexes): small messages are records of a
  ``_ring.Ring`` in shared memory, no system call each; large ones are memfd
  datagrams on the socket whose place is a marker record in the ring.  It
  never runs out of room (the ring grows), and keeps a bounded queue's count.
* ``SocketTransport`` (elsewhere): every message is a datagram; a semaphore
  counts them for ``qsize()``.  When the socket is full, the queue's feeder
  thread holds messages in the putting process.
"""

from __future__ import annotations

import os
import select
import socket
import time
from typing import Any

from . import _platform
from ._channel import Channel, read_large, recv_datagram, send_datagram, spin_until_readable
from ._ring import Ring, send_marked, split_marked
from ._wire.fds import DupFd
from .synchronize import Semaphore

__all__ = (
    "LOST",
    "RingTransport",
    "SocketTransport",
    "make_transport",
    "rebuild_channel",
    "share_channel",
)


class _Lost:
    """``recv()``'s answer for a large message whose datagram was lost (its reader died)."""

    def __repr__(self) -> str:
        return "LOST"


LOST: Any = _Lost()


class SocketTransport:
    """Every message a datagram on the socket; ``qsize()`` from a counting semaphore."""

    def __init__(self, channel: Channel | None = None, count: Semaphore | None = None) -> None:
        self.channel = channel if channel is not None else Channel()
        self._count = count if count is not None else Semaphore(0)
        self._count_sem = self._count._semlock._sem

    def __getstate__(self) -> tuple[Any, ...]:
        return (*share_channel(self.channel), self._count)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        reader, writer, count = state
        self.__init__(rebuild_channel(reader, writer), count)  # type: ignore[misc]

    def send(self, message: bytes, fd: int | None) -> bool:
        # Counted before it is sent, so a reader never takes it uncounted.
        _platform.raw_sem_post(self._count_sem)
        if send_datagram(self.channel.writer, message, fd, block=False):
            return True
        _platform.raw_sem_trywait(self._count_sem)
        return False

    def send_many(self, messages: list[bytes]) -> int:
        done = 0
        for message in messages:
            if not self.send(message, None):
                break
            done += 1
        return done

    def recv(self) -> tuple[bytes, int | None] | None:
        got = recv_datagram(self.channel.reader, False)
        if got is not None:
            _platform.raw_sem_trywait(self._count_sem)
        return got

    def wait(self, deadline: float | None, spin: float) -> None:
        reader = self.channel.reader
        if spin and spin_until_readable(reader, spin):
            return
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        _platform.wait_readable([reader.fileno()], remaining)

    def wait_for_room(self) -> None:
        _wait_writable(self.channel.writer, 0.05)

    def qsize(self) -> int:
        return self._count.get_value()

    def empty(self) -> bool:
        return not self.channel.wait_readable(0)


class RingTransport:
    """Small messages in a shared ring, large ones on the socket behind a marker.

    ``send`` never keeps a message anywhere but in shared memory (the ring
    grows; a large message whose socket is full goes into the ring whole), so
    it never fails for want of room; only a bounded queue is ever ``FULL``.
    """

    def __init__(
        self, channel: Channel | None = None, ring: Ring | None = None, maxsize: int = 0
    ) -> None:
        self.channel = channel if channel is not None else Channel()
        self.ring = ring if ring is not None else Ring(maxsize=maxsize)
        # Datagrams read ahead of their marker (never, unless a writer broke the order).
        self._early: dict[int, tuple[bytes, int | None]] = {}

    def __getstate__(self) -> tuple[Any, ...]:
        return (*share_channel(self.channel), self.ring)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        reader, writer, ring = state
        self.__init__(rebuild_channel(reader, writer), ring)  # type: ignore[misc]

    def send(self, message: bytes, fd: int | None) -> bool:
        """Send one message (the caller still closes ``fd``); False: a bounded queue is full."""
        if fd is None:
            return self.ring.put(message)
        writer = self.channel.writer
        return self.ring.put_large(
            lambda seq: send_marked(writer, seq, message, fd), lambda: read_large(message, fd)
        )

    def recv(self) -> tuple[bytes, int | None] | None:
        got = self.ring.get(self._receive_marked)
        if got is None or type(got) is tuple or got is LOST:
            return got
        return got, None

    def _receive_marked(self, seq: int) -> Any:
        """The datagram of marker ``seq`` (called under the ring's mutex); LOST if it is gone."""
        early = self._early.pop(seq, None)
        if early is not None:
            return early
        while True:
            try:
                got = recv_datagram(self.channel.reader, False)
            except EOFError:
                return LOST
            if got is None:
                return LOST
            message, fd = got
            number, message = split_marked(message)
            if number == seq:
                return message, fd
            if number > seq:
                self._early[number] = (message, fd)
                return LOST
            if fd is not None:  # an orphan: its marker never made it
                os.close(fd)

    def wait(self, deadline: float | None, spin: float) -> None:
        self.ring.wait(deadline, spin)

    def qsize(self) -> int:
        return self.ring.qsize()

    def empty(self) -> bool:
        return self.ring.empty()

    def full(self) -> bool:
        return self.ring.full()


def make_transport(maxsize: int = 0) -> SocketTransport | RingTransport:
    """The ring where robust mutexes exist (it keeps a bound, if any); else the socket."""
    if _platform.HAVE_ROBUST_MUTEX:
        return RingTransport(maxsize=maxsize)
    return SocketTransport()


def share_channel(channel: Channel) -> tuple[DupFd, DupFd]:
    """Both ends of a channel, as they travel to a child being started."""
    return DupFd(channel.reader.fileno()), DupFd(channel.writer.fileno())


def rebuild_channel(reader: DupFd, writer: DupFd) -> Channel:
    return Channel(socket.socket(fileno=reader.detach()), socket.socket(fileno=writer.detach()))


def _wait_writable(sock: socket.socket, timeout: float) -> None:
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLOUT)
    poller.poll(int(timeout * 1000))
