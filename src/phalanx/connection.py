"""Connections: ``Pipe()``, ``Connection`` and ``wait()`` (layer 2).

A connection carries messages over a socketpair (duplex) or a pipe (one-way).
Each message is a frame: an 8-byte length and the payload, so there is no
2 GiB limit.  ``send``/``recv`` pickle with phalanx's pickler (protocol 5,
cloudpickle fallback for lambdas).
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterable
from typing import Any

from . import _platform
from ._errors import AuthenticationError, BufferTooShort
from ._wire.fds import DupFd
from ._wire.pickling import dumps, loads, register

__all__ = ("AuthenticationError", "BufferTooShort", "Connection", "Pipe", "wait")

_HEADER = struct.Struct("!Q")
_SMALL = 1 << 16


class Connection:
    """One end of a pipe: send and receive whole messages.

    Blocking calls block without a timeout, like the stdlib; use ``poll`` or
    ``wait`` to bound them.  Receiving unpickles: only connect to peers you
    trust (``Listener``/``Client`` authenticate them).
    """

    def __init__(self, handle: int, readable: bool = True, writable: bool = True) -> None:
        if not isinstance(handle, int) or isinstance(handle, bool) or handle < 0:
            raise ValueError(f"invalid handle {handle!r}: expected a file descriptor")
        if not readable and not writable:
            raise ValueError("at least one of `readable` and `writable` must be True")
        self._handle: int | None = handle
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
        if self._handle is not None:
            try:
                self._close()
            finally:
                self._handle = None

    def _close(self) -> None:
        if self._handle is not None:
            os.close(self._handle)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._handle is None else f"fd={self._handle}"
        mode = ("r" if self._readable else "") + ("w" if self._writable else "")
        return f"<{type(self).__name__} {state} {mode}>"

    # -- sending ------------------------------------------------------------------------

    def send_bytes(self, buf: Any, offset: int = 0, size: int | None = None) -> None:
        """Send a bytes-like object (or the slice ``[offset:offset+size]``) as one message."""
        handle = self._check_writable()
        view = memoryview(buf)
        if view.itemsize > 1:
            view = view.cast("B")
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
        self._send(handle, view[offset : offset + size])

    def send(self, obj: Any) -> None:
        """Pickle ``obj`` and send it as one message."""
        handle = self._check_writable()
        self._send(handle, memoryview(dumps(obj)))

    def _send(self, handle: int, payload: memoryview) -> None:
        header = _HEADER.pack(len(payload))
        if len(payload) < _SMALL:
            data = memoryview(header + payload.tobytes())
            while data:
                data = data[os.write(handle, data) :]
            return
        chunks = [memoryview(header), payload]
        while chunks:
            written = os.writev(handle, chunks)
            while chunks and written >= len(chunks[0]):
                written -= len(chunks[0])
                chunks.pop(0)
            if chunks and written:
                chunks[0] = chunks[0][written:]

    # -- receiving ----------------------------------------------------------------------

    def _read_exact(self, handle: int, size: int) -> bytearray:
        buf = bytearray(size)
        self._read_into(handle, memoryview(buf))
        return buf

    def _read_into(self, handle: int, view: memoryview) -> None:
        got = 0
        total = len(view)
        while got < total:
            n = os.readv(handle, [view[got:]])
            if n == 0:
                raise EOFError("the other end of the connection was closed")
            got += n

    def _recv_header(self, handle: int) -> int:
        try:
            header = os.read(handle, _HEADER.size)
        except ConnectionResetError:
            raise EOFError("the other end of the connection was reset") from None
        if not header:
            raise EOFError("the other end of the connection was closed")
        if len(header) < _HEADER.size:
            header += self._read_exact(handle, _HEADER.size - len(header))
        (size,) = _HEADER.unpack(header)
        return int(size)

    def recv_bytes(self, maxlength: int | None = None) -> bytes:
        """Receive one message as bytes (blocks).  EOFError once the peer closed.

        A message longer than ``maxlength`` closes the connection and raises OSError.
        """
        handle = self._check_readable()
        if maxlength is not None and maxlength < 0:
            raise ValueError(f"negative maxlength ({maxlength})")
        size = self._recv_header(handle)
        if maxlength is not None and size > maxlength:
            self.close()
            raise OSError(f"bad message length: {size} bytes > maxlength {maxlength}")
        return bytes(self._read_exact(handle, size))

    def recv_bytes_into(self, buf: Any, offset: int = 0) -> int:
        """Receive one message into a writable buffer at ``offset``; returns its size.

        If it does not fit, raises ``BufferTooShort`` whose ``args[0]`` is the message.
        """
        handle = self._check_readable()
        view = memoryview(buf)
        if view.itemsize > 1:
            view = view.cast("B")
        if offset < 0 or offset > len(view):
            raise ValueError(f"offset out of bounds ({offset} for a buffer of {len(view)})")
        size = self._recv_header(handle)
        if size > len(view) - offset:
            raise BufferTooShort(bytes(self._read_exact(handle, size)))
        self._read_into(handle, view[offset : offset + size])
        return size

    def recv(self) -> Any:
        """Receive one message and unpickle it (blocks).  EOFError once the peer closed."""
        handle = self._check_readable()
        size = self._recv_header(handle)
        return loads(self._read_exact(handle, size))

    def poll(self, timeout: float | None = 0.0) -> bool:
        """Whether a message (or EOF) is ready within ``timeout`` seconds (None: forever)."""
        handle = self._check_readable()
        return bool(_platform.wait_readable([handle], timeout))


def Pipe(duplex: bool = True) -> tuple[Connection, Connection]:
    """A pair of connected ``Connection`` objects; one-way (reader, writer) if not duplex."""
    if duplex:
        s1, s2 = socket.socketpair()
        return Connection(s1.detach()), Connection(s2.detach())
    r, w = os.pipe()
    return Connection(r, writable=False), Connection(w, readable=False)


def wait(object_list: Iterable[Any], timeout: float | None = None) -> list[Any]:
    """The objects of ``object_list`` that are ready to read, waiting up to ``timeout``.

    Accepts connections, sockets, process sentinels and anything with ``fileno()``.
    """
    objects = list(object_list)
    by_fd: dict[int, list[Any]] = {}
    for obj in objects:
        fd = obj if isinstance(obj, int) else obj.fileno()
        by_fd.setdefault(fd, []).append(obj)
    if not by_fd:
        if timeout is None:
            raise ValueError("wait() on an empty list with no timeout would block forever")
        _platform.wait_readable([], timeout)
        return []
    ready = set(_platform.wait_readable(list(by_fd), timeout))
    return [obj for obj in objects if (obj if isinstance(obj, int) else obj.fileno()) in ready]


def _rebuild_connection(df: DupFd, readable: bool, writable: bool) -> Connection:
    return Connection(df.detach(), readable, writable)


def _reduce_connection(conn: Connection) -> tuple[Any, ...]:
    return _rebuild_connection, (DupFd(conn.fileno()), conn.readable, conn.writable)


register(Connection, _reduce_connection)
