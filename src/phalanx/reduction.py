"""Pickling for inter-process transfer, under the stdlib's ``multiprocessing.reduction`` names.

``ForkingPickler`` is phalanx's pickler (protocol 5, phalanx's reducers, the
cloudpickle fallback for lambdas); ``send_handle``/``recv_handle`` move an fd
over a duplex ``Pipe`` (an AF_UNIX socket) with SCM_RIGHTS.
"""

from __future__ import annotations

import io
import os
import pickle
import socket
from typing import TYPE_CHECKING, Any

from . import _platform
from ._connection import Connection
from ._resource_sharer import share_fd
from ._wire.pickling import Pickler
from ._wire.pickling import register as _register

if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Final

    from ._wire.pickling import Reducer

__all__ = (
    "ACKNOWLEDGE",
    "HAVE_SEND_HANDLE",
    "AbstractReducer",
    "DupFd",
    "ForkingPickler",
    "dump",
    "recv_handle",
    "recvfds",
    "register",
    "send_handle",
    "sendfds",
)

HAVE_SEND_HANDLE = True
ACKNOWLEDGE = False


class ForkingPickler(Pickler):
    """The pickler used for everything sent between processes."""

    def __init__(self, *args: Any, **kwds: Any) -> None:
        super().__init__(*args, **kwds)

    @classmethod
    def register(cls, type: type, reduce: Reducer) -> None:
        """Pickle instances of ``type`` with ``reduce(obj)`` from now on."""
        _register(type, reduce)

    @classmethod
    def dumps(cls, obj: Any, protocol: int | None = None) -> memoryview:
        buf = io.BytesIO()
        cls(buf, protocol if protocol is not None else pickle.HIGHEST_PROTOCOL).dump(obj)
        return buf.getbuffer()

    if TYPE_CHECKING:

        @staticmethod
        def loads(
            data: bytes | bytearray | memoryview,
            /,
            *,
            fix_imports: bool = True,
            encoding: str = "ASCII",
            errors: str = "strict",
            buffers: Iterable[Any] | None = (),
        ) -> Any: ...

    else:  # pickle.loads itself, as the stdlib's
        loads = staticmethod(pickle.loads)


register: Final = ForkingPickler.register


def dump(obj: Any, file: Any, protocol: int | None = None) -> None:
    """Pickle ``obj`` to ``file`` with ``ForkingPickler``."""
    ForkingPickler(file, protocol if protocol is not None else pickle.HIGHEST_PROTOCOL).dump(obj)


def sendfds(sock: socket.socket, fds: list[int]) -> None:
    """Send ``fds`` over an AF_UNIX socket (one byte of data carries them)."""
    _platform.send_fds(sock, bytes([len(fds) % 256]), fds)


def recvfds(sock: socket.socket, size: int) -> list[int]:
    """Receive ``size`` fds sent by :func:`sendfds`."""
    data, fds = _platform.recv_fds(sock, 1, size)
    if not data and not fds:
        raise EOFError("the other end closed before sending fds")
    if len(fds) != size or data[0] != size % 256:
        _platform.close_fds(*fds)
        raise RuntimeError(f"expected {size} fds, received {len(fds)}")
    return fds


def _socket_of(conn: Connection) -> socket.socket:
    return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=os.dup(conn.fileno()))


def send_handle(conn: Connection, handle: int, destination_pid: int) -> None:
    """Send fd ``handle`` over ``conn`` (a duplex ``Pipe`` end)."""
    with _socket_of(conn) as sock:
        sendfds(sock, [handle])


def recv_handle(conn: Connection) -> int:
    """Receive an fd sent with :func:`send_handle`."""
    with _socket_of(conn) as sock:
        return recvfds(sock, 1)[0]


def DupFd(fd: int) -> Any:
    """A picklable handle on ``fd`` for another process of this tree."""
    return share_fd(fd)


class AbstractReducer:
    """The reduction API as attributes, for ``set_reducer``-style customisation."""

    ForkingPickler = ForkingPickler
    register = register
    dump = dump
    send_handle = send_handle
    recv_handle = recv_handle
    DupFd = DupFd
