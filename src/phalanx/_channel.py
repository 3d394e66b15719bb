"""A message channel that a killed process cannot corrupt (layer 3).

All producers share one end of an AF_UNIX ``SOCK_SEQPACKET`` socketpair and
all consumers the other.  The kernel moves whole datagrams: a send is atomic,
and each datagram goes to exactly one reader, with no lock in user space.  A
process killed in the middle of ``send`` or ``recv`` therefore cannot tear a
message or leave a lock held; it loses at most the message in its own hands.

A datagram is one message, told apart by its first byte::

    0x80     INLINE: the datagram is the pickle itself (protocol 5 starts with PROTO)
    0x01     MEMFD: a memfd travels with the datagram (SCM_RIGHTS); it holds
             u64 pickle length | u32 n | n x u64 buffer sizes | pickle | buffers...

Large payloads go through an anonymous memfd, so no datagram is ever split
and nothing can be left in ``/dev/shm``: the kernel frees the memfd with its
last reference, whether the reader consumed it or died.  The reader maps the
memfd and unpickles out-of-band buffers (numpy arrays) straight from the
mapping: one copy (into the memfd) from producer to consumer.
"""

from __future__ import annotations

import mmap
import os
import pickle
import select
import socket
import struct
import time
from typing import Any

from . import _platform
from ._segments import Segment, SegmentCache, write_parts
from ._wire.pickling import ATOMS, PROTOCOL, dumps, loads

__all__ = (
    "Channel",
    "decode",
    "encode",
    "encode_reusing",
    "read_large",
    "recv_datagram",
    "recv_spinning",
    "send_datagram",
    "socketpair",
    "spin_until_readable",
)

INLINE = 0x80  # pickle.PROTO: every pickle of protocol >= 2 starts with it
MEMFD = 1
MAX_INLINE = 64 * 1024  # larger messages travel in a memfd
_RECV_SIZE = MAX_INLINE + 16
_ANC_SIZE = socket.CMSG_SPACE(struct.calcsize("i"))
_HEAD = struct.Struct("=QI")
_SIZE = struct.Struct("=Q")


def encode(obj: Any) -> tuple[bytes, int | None]:
    """Pickle ``obj`` into a datagram, and a memfd when it is large (caller closes it)."""
    message, fd, _segment = encode_reusing(obj, None)
    return message, fd


def encode_reusing(
    obj: Any, cache: SegmentCache | None
) -> tuple[bytes, int | None, Segment | None]:
    """``encode``, writing a large message into a segment of ``cache`` when one is given.

    With a cache, the caller owns the returned segment (its fd must stay open
    until the receiver answers) instead of the fd.
    """
    buffers: list[Any] = []
    # The hot path: plain values pickle alike by any pickler (and never with
    # out-of-band buffers), and pickle.dumps is several times cheaper.
    data = pickle.dumps(obj, PROTOCOL) if _plain(obj) else dumps(obj, buffers)
    if not buffers and len(data) < MAX_INLINE:
        return data, None, None
    raws = [memoryview(b.raw()).cast("B") for b in buffers]
    table = _HEAD.pack(len(data), len(raws)) + b"".join(_SIZE.pack(r.nbytes) for r in raws)
    views = [memoryview(table), memoryview(data), *raws]
    if cache is not None:
        segment = cache.borrow(sum(v.nbytes for v in views))
        try:
            segment.write(views)
        except BaseException:
            segment.close()
            raise
        return b"\x01", segment.fd, segment
    fd = _platform.memfd_create("phalanx-queue")
    try:
        write_parts(fd, views)
    except BaseException:
        os.close(fd)
        raise
    return b"\x01", fd, None


_CONTAINERS = (tuple, list)


def _plain(obj: Any) -> bool:
    """Whether ``obj`` is a value of ``ATOMS``, or a short tuple/list of them (two levels deep).

    Such values pickle the same with or without our reducers, and the
    module-level ``pickle.dumps`` is several times cheaper than a Pickler.
    """
    kind = type(obj)
    if kind in ATOMS:
        return True
    if kind not in _CONTAINERS or len(obj) > 16:
        return False
    for item in obj:
        kind = type(item)
        if kind in ATOMS:
            continue
        if kind not in _CONTAINERS or len(item) > 16:
            return False
        for inner in item:
            if type(inner) not in ATOMS:
                return False
    return True


def read_large(message: bytes, fd: int) -> bytes:
    """A large message as one bytes object: its tag, then its memfd's contents.

    For a queue whose socket is full: the message then travels in shared
    memory as it is; ``decode(blob, None)`` reads it back.
    """
    size = os.fstat(fd).st_size
    with mmap.mmap(fd, size, prot=mmap.PROT_READ) as mapped:
        return message + mapped[:size]


def decode(message: bytes, fd: int | None, mappings: list[mmap.mmap] | None = None) -> Any:
    """Rebuild the object of a datagram (takes ownership of ``fd``).

    The mapping of a large message is appended to ``mappings`` if given, so
    that the caller can tell later whether anything still uses it.  A large
    message without ``fd`` is one made whole by ``read_large``.
    """
    if message[0] == INLINE:
        return pickle.loads(message)
    if fd is None:
        if message[0] != MEMFD or len(message) < 1 + _HEAD.size:
            raise OSError("corrupt queue message: a large message arrived without its memfd")
        return _decode_view(memoryview(message)[1:])
    try:
        size = os.fstat(fd).st_size
        mapped = mmap.mmap(fd, size)
    finally:
        os.close(fd)
    if mappings is not None:
        mappings.append(mapped)
    return _decode_view(memoryview(mapped))


def _decode_view(view: memoryview) -> Any:
    """Unpickle a large message's contents: table, pickle, out-of-band buffers."""
    pickle_len, count = _HEAD.unpack_from(view, 0)
    offset = _HEAD.size
    sizes = [_SIZE.unpack_from(view, offset + 8 * i)[0] for i in range(count)]
    offset += 8 * count
    data = view[offset : offset + pickle_len]
    offset += pickle_len
    buffers = []
    for n in sizes:
        buffers.append(view[offset : offset + n])
        offset += n
    # Out-of-band buffers (numpy arrays) keep the mapping alive: no copy out.
    return loads(data, buffers)


def send_datagram(sock: socket.socket, message: bytes, fd: int | None, block: bool) -> bool:
    """Send one datagram (and ``fd``); False if ``block`` is false and there is no room."""
    flags = 0 if block else socket.MSG_DONTWAIT
    try:
        if fd is None:
            sock.send(message, flags)
        else:
            sock.sendmsg(
                [message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))], flags
            )
    except BlockingIOError:
        return False
    return True


def recv_datagram(sock: socket.socket, block: bool) -> tuple[bytes, int | None] | None:
    """One datagram and the fd it carries; None if ``block`` is false and none waits.

    ``EOFError`` once every writer has closed its end.
    """
    flags = socket.MSG_CMSG_CLOEXEC if block else socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC
    try:
        message, ancdata, _flags, _addr = sock.recvmsg(_RECV_SIZE, _ANC_SIZE, flags)
    except BlockingIOError:
        return None
    fd = None
    for level, kind, payload in ancdata:  # empty for all but large messages
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = struct.unpack(f"{len(payload) // 4}i", payload[: len(payload) // 4 * 4])
            fd, extra = fds[0], fds[1:]
            _platform.close_fds(*extra)
    if not message:
        _platform.close_fds(*([] if fd is None else [fd]))
        raise EOFError("the channel was closed by its peer")
    return message, fd


def spin_until_readable(sock: socket.socket, seconds: float) -> bool:
    """Poll ``sock`` for up to ``seconds`` without sleeping; whether something came.

    Waking a sleeping process on another CPU costs tens of microseconds, often
    more than the wait itself.  poll() does not lock the socket against
    writers, unlike a recv attempt.
    """
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        if poller.poll(0):
            return True
    return False


def recv_spinning(sock: socket.socket, seconds: float) -> tuple[bytes, int | None] | None:
    """A datagram if one comes within ``seconds`` of polling (no sleeping); else None."""
    deadline = time.perf_counter() + seconds
    while True:
        got = recv_datagram(sock, False)
        if got is not None:
            return got
        remaining = deadline - time.perf_counter()
        if remaining <= 0 or not spin_until_readable(sock, remaining):
            return None


def socketpair() -> tuple[socket.socket, socket.socket]:
    """A blocking SEQPACKET socketpair with room for many messages before back-pressure."""
    pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for sock in pair:
        sock.setblocking(True)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)  # capped by the OS
        except OSError:
            pass
    return pair


class Channel:
    """Both ends of a SEQPACKET socketpair, shared by every producer and consumer."""

    def __init__(self, reader: socket.socket | None = None, writer: socket.socket | None = None):
        if reader is None or writer is None:
            reader, writer = socketpair()
        self.reader = reader
        self.writer = writer

    def send(self, message: bytes, fd: int | None, block: bool) -> bool:
        """Send one datagram; False if ``block`` is false and the channel is full."""
        return send_datagram(self.writer, message, fd, block)

    def recv(self, block: bool = False) -> tuple[bytes, int | None] | None:
        """One datagram and its memfd; None if ``block`` is false and none is waiting."""
        return recv_datagram(self.reader, block)

    def close_reader(self) -> None:
        self.reader.close()

    def close_writer(self) -> None:
        self.writer.close()

    def __del__(self) -> None:
        # Close explicitly: a socket collected while open warns (ResourceWarning).
        for sock in (getattr(self, "reader", None), getattr(self, "writer", None)):
            if sock is not None:
                sock.close()

    def wait_readable(self, timeout: float | None) -> bool:
        return bool(_platform.wait_readable([self.reader.fileno()], timeout))
