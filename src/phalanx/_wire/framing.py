"""Length-prefixed frames on raw file descriptors (pipes, sockets).

A frame is an 8-byte big-endian unsigned length followed by the payload, so a
payload is never limited to 2 or 4 GiB (bpo-17560).
"""

from __future__ import annotations

import os
import struct

TYPE_CHECKING = False  # typing is not imported at run time: see phalanx/context.py
if TYPE_CHECKING:
    import socket

_LEN = FRAME_HEADER = struct.Struct("!Q")
_INT = struct.Struct("!q")


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def read_exact(fd: int, size: int) -> bytes:
    """Read exactly ``size`` bytes; EOFError if the peer closed first."""
    chunks = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            raise EOFError("unexpected end of stream")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def write_frame(fd: int, payload: bytes | memoryview) -> None:
    header = _LEN.pack(len(payload))
    if len(payload) < 65536:  # one write: small frames are never interleaved or torn
        write_all(fd, header + bytes(payload))
    else:
        write_all(fd, header)
        write_all(fd, payload)


def read_frame(fd: int, maxsize: int | None = None) -> bytes:
    (size,) = _LEN.unpack(read_exact(fd, _LEN.size))
    if maxsize is not None and size > maxsize:
        raise ValueError(f"frame of {size} bytes exceeds the limit of {maxsize} bytes")
    return read_exact(fd, size)


def write_int(fd: int, value: int) -> None:
    write_all(fd, _INT.pack(value))


def read_int(fd: int) -> int:
    (value,) = _INT.unpack(read_exact(fd, _INT.size))
    return int(value)


def sock_send_frame(sock: socket.socket, payload: bytes) -> None:
    """Send one frame on a socket (honours the socket's timeout)."""
    sock.sendall(_LEN.pack(len(payload)) + payload)


def sock_recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise EOFError("unexpected end of stream")
        buf += chunk
    return bytes(buf)


def sock_recv_frame(sock: socket.socket, maxsize: int) -> bytes:
    """Receive one frame, refusing (ValueError) any longer than ``maxsize`` unread."""
    (size,) = _LEN.unpack(sock_recv_exact(sock, _LEN.size))
    if size > maxsize:
        raise ValueError(f"frame of {size} bytes exceeds the limit of {maxsize} bytes")
    return sock_recv_exact(sock, size)
