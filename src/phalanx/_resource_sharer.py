"""Handing an fd to a process that is already running (layer 2).

Pickling a ``Connection`` outside of a process start registers a duplicate of
its fd here; the pickle carries (address, key).  The receiver connects to this
process's sharer socket, passes the mutual HMAC handshake with the authkey
of the process tree, and gets the fd by SCM_RIGHTS.  Each registration can be
fetched once, and only while the sending process is alive (as in the stdlib).
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import tempfile
import threading

from . import _platform, _runtime, process
from ._wire import auth
from ._wire.fds import DupFd
from ._wire.framing import sock_recv_frame, sock_send_frame
from .errors import AuthenticationError

__all__ = ("SharedFd", "share_fd")

_TIMEOUT = 30.0


def _auth_io(conn: socket.socket) -> tuple[auth.Send, auth.Recv]:
    return (lambda data: sock_send_frame(conn, data)), (lambda n: sock_recv_frame(conn, n))


class _Sharer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._fds: dict[int, int] = {}
        self._keys = itertools.count(1)
        self._listener: socket.socket | None = None
        self._address: str | None = None
        self._dir: str | None = None
        self._thread: threading.Thread | None = None

    def register(self, fd: int) -> tuple[str, int]:
        with self._lock:
            if self._listener is None:
                self._start()
            key = next(self._keys)
            self._fds[key] = os.dup(fd)
            if self._address is None:  # pragma: no cover - _start sets it
                raise RuntimeError("resource sharer did not start")
            return self._address, key

    def _start(self) -> None:
        directory = tempfile.mkdtemp(prefix="phalanx-rs-")
        address = os.path.join(directory, "sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(address)
        listener.listen(64)
        self._listener, self._address, self._dir = listener, address, directory
        self._thread = threading.Thread(
            target=self._serve, args=(listener,), name="phalanx-resource-sharer", daemon=True
        )
        self._thread.start()
        _runtime.Finalize(self, _Sharer.stop, args=(self,), exitpriority=0)

    def _serve(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # stopped
            with conn:
                try:
                    self._serve_one(conn)
                except (AuthenticationError, OSError, EOFError, ValueError):
                    continue

    def _serve_one(self, conn: socket.socket) -> None:
        conn.settimeout(_TIMEOUT)
        send, recv = _auth_io(conn)
        auth.authenticate_server(send, recv, process.current_process().authkey)
        key = int.from_bytes(recv(8), "big")
        with self._lock:
            fd = self._fds.pop(key, None)
        if fd is None:
            conn.sendall(b"N")
            return
        try:
            _platform.send_fds(conn, b"F", [fd])
        finally:
            os.close(fd)

    def stop(self) -> None:
        with self._lock:
            listener, directory, fds = self._listener, self._dir, list(self._fds.values())
            thread = self._thread
            self._reset()
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            listener.close()
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)
        _platform.close_fds(*fds)
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    def _after_fork_in_child(self) -> None:
        # The serving thread does not exist in a forked child; the fds and the
        # socket are the parent's business.
        if self._listener is not None:
            self._listener.close()
        _platform.close_fds(*self._fds.values())
        self._lock = threading.Lock()
        self._reset()


def fetch(address: str, key: int) -> int:
    """Fetch fd ``key`` from the sharer at ``address`` (another process of our tree)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(_TIMEOUT)
        try:
            conn.connect(address)
        except (FileNotFoundError, ConnectionRefusedError):
            raise OSError(
                f"cannot fetch the shared fd: its sending process is gone ({address})"
            ) from None
        send, recv = _auth_io(conn)
        auth.authenticate_client(send, recv, process.current_process().authkey)
        send(key.to_bytes(8, "big"))
        _data, fds = _platform.recv_fds(conn, 1, 1)
    if not fds:
        raise OSError(f"shared fd {key} was already fetched or its sender stopped sharing it")
    return fds[0]


class SharedFd:
    """A picklable handle on an fd of this process, fetched by the receiver on ``detach()``."""

    def __init__(self, fd: int) -> None:
        self.address, self.key = _sharer.register(fd)

    def detach(self) -> int:
        return fetch(self.address, self.key)

    def discard(self) -> None:
        """The receiver already has this fd: leave it with the sender."""


def share_fd(fd: int) -> DupFd | SharedFd:
    """A picklable handle on ``fd``: inherited by a child being started, else fetched."""
    return DupFd(fd) if DupFd.spawning() else SharedFd(fd)


_sharer = _Sharer()
os.register_at_fork(after_in_child=_sharer._after_fork_in_child)
