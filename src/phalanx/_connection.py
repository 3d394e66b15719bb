"""``Connection``, ``Pipe`` and ``wait``: whole messages over one fd (layer 2).

A connection carries whole messages over a socketpair (duplex ``Pipe``), a
pipe (one-way ``Pipe``) or a socket (``Listener``/``Client``).  The message
format is in ``_wire.messages``: 64-bit lengths, and pickles whose large
buffers (numpy arrays, ``PickleBuffer``) travel out of band without copies.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import pickle
import select
import socket
import stat
import time
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from . import _platform
from ._resource_sharer import share_fd
from ._wire import messages
from ._wire.pickling import dumps, loads, register
from .errors import BufferTooShort, ProtocolError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Self

    from _typeshed import ReadableBuffer

    # PEP 696 defaults (typing_extensions for the checker only; 3.11 and 3.12's
    # TypeVar has none): a bare ``Connection`` is ``Connection[Any, Any]``, as
    # in typeshed.
    from typing_extensions import TypeVar as _TypeVarWithDefault

    _SendT_contra = _TypeVarWithDefault("_SendT_contra", contravariant=True, default=Any)
    _RecvT_co = _TypeVarWithDefault("_RecvT_co", covariant=True, default=Any)
else:
    _SendT_contra = TypeVar("_SendT_contra", contravariant=True)
    _RecvT_co = TypeVar("_RecvT_co", covariant=True)

__all__ = ("Connection", "Pipe", "wait")

Buffer = bytes | bytearray | mmap.mmap

_SMALL = 1 << 16  # below this a message goes out in one write() of a joined buffer
_IOV_MAX = 1024


class Connection(Generic[_SendT_contra, _RecvT_co]):
    """One end of a pipe: send and receive whole messages.

    ``Connection[SendT, RecvT]`` sends ``SendT`` and receives ``RecvT`` for
    type checkers (a bare ``Connection`` is ``Connection[Any, Any]``).
    ``send``/``recv`` block with no timeout, like the stdlib: bound them with
    ``poll`` or ``wait``.  ``recv`` raises ``EOFError`` once the peer has closed
    its end and nothing is left to read; every call on a closed connection
    raises ``OSError``.
    """

    def __init__(self, handle: int, readable: bool = True, writable: bool = True) -> None:
        if isinstance(handle, bool) or not isinstance(handle, int) or handle < 0:
            raise ValueError(f"invalid handle {handle!r}: expected a file descriptor")
        if not readable and not writable:
            raise ValueError("at least one of `readable` and `writable` must be True")
        self._handle: int | None = handle
        self._is_socket: bool | None = None  # found out on the first large read
        self._readable = readable
        self._writable = writable

    def __del__(self) -> None:
        if getattr(self, "_handle", None) is not None:
            self._close()

    # -- state --------------------------------------------------------------------------

    def _check_closed(self) -> int:
        if self._handle is None:
            raise OSError("handle is closed")
        return self._handle

    def _check_readable(self) -> int:
        handle = self._check_closed()
        if not self._readable:
            raise OSError("connection is write-only")
        return handle

    def _check_writable(self) -> int:
        handle = self._check_closed()
        if not self._writable:
            raise OSError("connection is read-only")
        return handle

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._handle is None

    @property
    def readable(self) -> bool:
        return self._readable

    @property
    def writable(self) -> bool:
        return self._writable

    def fileno(self) -> int:
        """The file descriptor (valid until ``close()``)."""
        return self._check_closed()

    def close(self) -> None:
        """Close this end; the peer then gets ``EOFError``.  Idempotent."""
        if self._handle is not None:
            try:
                self._close()
            finally:
                self._handle = None

    def _close(self, _os_close: Any = os.close) -> None:
        # os.close is bound at definition time: __del__ may run at interpreter
        # shutdown, after module globals have been cleared.
        if self._handle is not None:
            _os_close(self._handle)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._handle is None else f"fd={self._handle}"
        mode = ("r" if self._readable else "") + ("w" if self._writable else "")
        return f"<{type(self).__name__} {state} {mode}>"

    # -- sending ------------------------------------------------------------------------

    def send_bytes(self, buf: ReadableBuffer, offset: int = 0, size: int | None = None) -> None:
        """Send a bytes-like object (or its slice ``[offset:offset+size]``) as one message."""
        handle = self._check_writable()
        view = memoryview(buf)
        if view.itemsize > 1 or view.ndim != 1 or not view.c_contiguous:
            view = view.cast("B") if view.c_contiguous else memoryview(view.tobytes())
        n = len(view)
        if offset < 0:
            raise ValueError(f"offset is negative ({offset})")
        if n < offset:
            raise ValueError(f"buffer length ({n}) < offset ({offset})")
        if size is None:
            size = n - offset
        elif size < 0:
            raise ValueError(f"size is negative ({size})")
        elif offset + size > n:
            raise ValueError(f"buffer length ({n}) < offset + size ({offset + size})")
        body = view[offset : offset + size]
        self._write_parts(handle, [messages.pack_header(messages.KIND_RAW, size), body])

    def send(self, obj: _SendT_contra) -> None:
        """Pickle ``obj`` and send it as one message (large buffers out of band)."""
        handle = self._check_writable()
        buffers: list[pickle.PickleBuffer] = []
        data = dumps(obj, buffers)
        if not buffers:
            header = messages.pack_header(messages.KIND_RAW, len(data))
            if len(data) < _SMALL:
                self._write_all(handle, header + data)
            else:
                self._write_parts(handle, [header, data])
            return
        raws = [b.raw() for b in buffers]
        prefix = messages.pack_oob_prefix(len(data), [r.nbytes for r in raws])
        self._write_parts(handle, [prefix, data, *raws])

    @staticmethod
    def _write_all(handle: int, data: bytes) -> None:
        n = os.write(handle, data)
        if n < len(data):
            view = memoryview(data)[n:]
            while view:
                view = view[os.write(handle, view) :]

    def _write_parts(self, handle: int, parts: list[Any]) -> None:
        total = sum(memoryview(p).nbytes for p in parts)
        if total < _SMALL:
            self._write_all(handle, b"".join(parts))
            return
        views = [memoryview(p).cast("B") for p in parts if memoryview(p).nbytes]
        while views:
            written = os.writev(handle, views[:_IOV_MAX])
            while views and written >= len(views[0]):
                written -= len(views[0])
                views.pop(0)
            if views and written:
                views[0] = views[0][written:]

    # -- receiving ----------------------------------------------------------------------

    def _read_into(self, handle: int, view: memoryview) -> None:
        got, total = 0, len(view)
        if total > _SMALL and self._socket_fd(handle):
            # One recv(MSG_WAITALL) instead of one read per socket-buffer's worth.
            target = (ctypes.c_char * total).from_buffer(view)
            got = _platform.recv_into_address(handle, ctypes.addressof(target), total)
            del target
        while got < total:
            n = os.readv(handle, [view[got:]])
            if n == 0:
                self.close()
                raise ProtocolError("got end of file during message")
            got += n

    def _socket_fd(self, handle: int) -> bool:
        if self._is_socket is None:
            self._is_socket = stat.S_ISSOCK(os.fstat(handle).st_mode)
        return self._is_socket

    def _read_bytes(self, handle: int, size: int) -> Buffer:
        """``size`` bytes; a single read() for small messages, no extra copy for large ones."""
        if size <= _SMALL:
            first = os.read(handle, size)
            if len(first) == size:
                return first
            if not first:
                self.close()
                raise ProtocolError("got end of file during message")
            buf = bytearray(size)
            buf[: len(first)] = first
            self._read_into(handle, memoryview(buf)[len(first) :])
            return buf
        if self._socket_fd(handle):
            return self._recv_waitall(handle, size)
        big = _lazy_buffer(size)
        self._read_into(handle, memoryview(big))
        return big

    def _recv_waitall(self, handle: int, size: int) -> Buffer:
        # One recv(MSG_WAITALL) fills the bytes object that recv_bytes returns:
        # no second copy, and memory is committed only as data arrives.
        data = _platform.recv_bytes_waitall(handle, size)
        if len(data) < size:
            self.close()
            raise ProtocolError("got end of file during message")
        return data

    def _read_header(self, handle: int) -> tuple[int, int]:
        _spin_until_readable(handle)
        try:
            header = os.read(handle, messages.HEADER.size)
        except ConnectionResetError:
            raise EOFError("the other end of the connection was reset") from None
        if not header:
            raise EOFError("the other end of the connection was closed")
        try:
            if len(header) < messages.HEADER.size:
                rest = bytearray(messages.HEADER.size - len(header))
                self._read_into(handle, memoryview(rest))
                header += rest
            return messages.unpack_header(header)
        except ProtocolError:
            self.close()
            raise

    def _read_oob(self, handle: int, body_len: int) -> tuple[Buffer, list[Buffer]]:
        try:
            count = messages.parse_oob_table(self._read_bytes(handle, 4), body_len)
            table = self._read_bytes(handle, 8 * count)
            sizes, pickle_len = messages.parse_oob_sizes(table, count, body_len)
        except ProtocolError:
            self.close()
            raise
        data = self._read_bytes(handle, pickle_len)
        buffers: list[Buffer] = []
        for size in sizes:
            buf = bytearray(size) if size <= _SMALL else _lazy_buffer(size)
            self._read_into(handle, memoryview(buf))
            buffers.append(buf)
        return data, buffers

    def _recv_raw(self, handle: int, maxlength: int | None) -> Buffer:
        """The next message as a flat byte string (an OOB pickle is made in-band)."""
        kind, length = self._read_header(handle)
        if maxlength is not None and length > maxlength:
            self.close()
            raise OSError(f"bad message length: {length} bytes > maxlength {maxlength}")
        if kind == messages.KIND_RAW:
            return self._read_bytes(handle, length)
        # Sent with send(), read as bytes: the equivalent in-band pickle, made
        # without unpickling anything.
        data, buffers = self._read_oob(handle, length)
        return self._inline(data, buffers)

    def _inline(self, data: Buffer, buffers: list[Buffer]) -> bytes:
        try:
            return messages.inline_buffers(data, buffers)  # type: ignore[arg-type]
        except (ValueError, ProtocolError) as exc:
            self.close()
            raise ProtocolError(f"bad out-of-band message: {exc}") from None

    def recv_bytes(self, maxlength: int | None = None) -> bytes:
        """Receive one message as bytes (blocks).

        ``EOFError`` if the peer closed; a message longer than ``maxlength``
        closes the connection and raises ``OSError``.
        """
        handle = self._check_readable()
        if maxlength is not None and maxlength < 0:
            raise ValueError(f"negative maxlength ({maxlength})")
        data = self._recv_raw(handle, maxlength)
        return data if type(data) is bytes else _to_bytes(data)

    def recv_bytes_into(self, buf: Any, offset: int = 0) -> int:
        """Receive one message into a writable buffer at byte ``offset``; returns its size.

        If it does not fit, raises ``BufferTooShort`` whose ``args[0]`` is the
        whole message.
        """
        handle = self._check_readable()
        view = memoryview(buf)
        # Check the buffer before consuming anything: an error after reading
        # the header would leave the stream out of step.
        if view.readonly:
            raise TypeError(f"recv_bytes_into needs a writable buffer (got {type(buf).__name__})")
        if not view.c_contiguous:
            raise BufferError("recv_bytes_into needs a contiguous buffer")
        if view.itemsize > 1 or view.ndim != 1:
            view = view.cast("B")
        if offset < 0 or offset > len(view):
            raise ValueError(f"offset out of bounds ({offset} for a buffer of {len(view)} bytes)")
        kind, length = self._read_header(handle)
        if kind == messages.KIND_RAW and length <= len(view) - offset:
            self._read_into(handle, view[offset : offset + length])
            return length
        if kind == messages.KIND_RAW:
            raise BufferTooShort(_to_bytes(self._read_bytes(handle, length)))
        data = self._inline(*self._read_oob(handle, length))
        if len(data) > len(view) - offset:
            raise BufferTooShort(data)
        view[offset : offset + len(data)] = data
        return len(data)

    def recv(self) -> _RecvT_co:
        """Receive one message and unpickle it (blocks); ``EOFError`` if the peer closed."""
        handle = self._check_readable()
        kind, length = self._read_header(handle)
        # (What the peer sent is RecvT by the caller's word: an unchecked cast,
        # as typeshed's; no cast() call here, recv() is a hot path.)
        if kind == messages.KIND_RAW:
            return loads(self._read_bytes(handle, length))  # type: ignore[no-any-return]
        data, buffers = self._read_oob(handle, length)
        return loads(data, buffers)  # type: ignore[no-any-return]

    def poll(self, timeout: float | None = 0.0) -> bool:
        """Whether a message (or EOF) can be read within ``timeout`` seconds (None: forever)."""
        handle = self._check_readable()
        return bool(_platform.wait_readable([handle], timeout))


# A blocking receive polls this long before it sleeps: waking a sleeping
# process on another CPU costs tens of microseconds, often more than the wait.
_SPIN = 50e-6


def _spin_until_readable(fd: int) -> None:
    """Poll ``fd`` for up to ``_SPIN`` seconds if a CPU is free for it
    (``_platform.spare_cpu``); the caller then blocks as usual."""
    if not _platform.spare_cpu():
        return  # checked first: a busy machine pays no poll() per message
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    if poller.poll(0):
        return
    deadline = time.perf_counter() + _SPIN
    while time.perf_counter() < deadline:
        if poller.poll(0):
            return


def _lazy_buffer(size: int) -> mmap.mmap:
    """Writable zeroed memory whose pages are committed only as they are written.

    ``bytearray(size)`` would zero every page up front: a peer announcing a
    huge message it never sends must not make us touch gigabytes.
    """
    return mmap.mmap(-1, size)


def _to_bytes(data: Buffer) -> bytes:
    if isinstance(data, bytes):
        return data
    result = bytes(data)
    if isinstance(data, mmap.mmap):
        data.close()  # give the pages back now, not at the next GC
    return result


def Pipe(duplex: bool = True) -> tuple[Connection[Any, Any], Connection[Any, Any]]:
    """A pair of connected ``Connection`` objects; one-way ``(reader, writer)`` if not duplex."""
    if duplex:
        s1, s2 = socket.socketpair()
        s1.setblocking(True)  # even under socket.setdefaulttimeout()
        s2.setblocking(True)
        return Connection(s1.detach()), Connection(s2.detach())
    r, w = os.pipe()
    _platform.grow_pipe(w)
    return Connection(r, writable=False), Connection(w, readable=False)


def _fd_of(obj: Any) -> int:
    return obj if isinstance(obj, int) else int(obj.fileno())


def wait(
    object_list: Iterable[Connection[_SendT_contra, _RecvT_co] | socket.socket | int],
    timeout: float | None = None,
) -> list[Connection[_SendT_contra, _RecvT_co] | socket.socket | int]:
    """The objects of ``object_list`` ready to be read, waiting up to ``timeout`` seconds.

    Accepts connections, sockets, process sentinels (ints) and anything with
    ``fileno()`` (typed as typeshed has it: connections, sockets and ints).  A
    connection is ready when a message or EOF awaits.
    """
    objects = list(object_list)
    fds = {_fd_of(obj) for obj in objects}
    ready = set(_platform.wait_readable(list(fds), timeout))
    return [obj for obj in objects if _fd_of(obj) in ready]


def _rebuild_connection(df: Any, readable: bool, writable: bool) -> Connection[Any, Any]:
    return Connection(df.detach(), readable, writable)


def _reduce_connection(conn: Connection[Any, Any]) -> tuple[Any, ...]:
    return _rebuild_connection, (share_fd(conn.fileno()), conn.readable, conn.writable)


register(Connection, _reduce_connection)

# Documented (and pickled by reference) under the public module that re-exports them.
for _public in (Connection, Pipe, wait):
    _public.__module__ = "phalanx.connection"
