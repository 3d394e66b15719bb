"""The fork server process (entry point; the client side is ``_forkserver``).

Serves requests from one event loop: authenticate, receive the child's fds, fork.
The forked child reads its process object from the first fd exactly like a
spawned child.  The server reports each child's pid at once and its exit code
when it is reaped, then closes that connection.  It exits when the alive pipe
reaches EOF, i.e. when its owner is gone.
"""

from __future__ import annotations

import atexit
import os
import selectors
import shutil
import signal
import socket
import sys
import time

from . import _platform, _runtime, _spawn, process
from ._forkserver import MAX_FDS_PER_REQUEST
from ._spawn_main import run_child
from ._wire import auth
from ._wire.fds import set_inherited_fds
from ._wire.framing import FRAME_HEADER, read_frame, write_int
from ._wire.pickling import loads
from .errors import AuthenticationError

TYPE_CHECKING = False  # typing is not imported at run time: see phalanx/context.py
if TYPE_CHECKING:
    from typing import Any, NoReturn

_REQUEST_TIMEOUT = 30.0


_ALWAYS_PRELOADED = ("phalanx.queues", "phalanx.synchronize", "phalanx._connection")


def _preload(config: dict[str, Any]) -> None:
    preload = config.get("preload") or []
    main_path = config.get("main_path")
    if "__main__" in preload and main_path:
        me = process.current_process()
        me._inheriting = True  # type: ignore[attr-defined]
        try:
            _spawn.import_main_path(main_path)
        finally:
            del me._inheriting  # type: ignore[attr-defined]
    for name in preload:
        if name == "__main__":
            continue
        try:
            __import__(name)
        except ImportError:
            pass


class _Request:
    """One client connection, from accept to its fds, driven by the event loop.

    The handshake runs step by step as data arrives, reading exactly one frame
    at a time (never past it, so the SCM_RIGHTS message that follows stays in
    the socket).  A client that stalls only delays itself: it is dropped at its
    deadline while the server goes on serving others.
    """

    def __init__(self, conn: socket.socket, authkey: bytes) -> None:
        conn.setblocking(False)
        self.conn = conn
        self.deadline = time.monotonic() + _REQUEST_TIMEOUT
        self._steps = auth.server_steps(authkey)
        self._want = 0  # max size of the frame awaited
        self._buf = bytearray()
        self._frame_len: int | None = None
        self._authenticated = False
        self._advance(None)

    def _advance(self, reply: bytes | None) -> None:
        while True:
            try:
                op, arg = self._steps.send(reply)
            except StopIteration:
                self._authenticated = True
                return
            if op == auth.RECV:
                self._want = arg
                return
            frame = FRAME_HEADER.pack(len(arg)) + arg
            if self.conn.send(frame) != len(frame):  # tiny: fits unless the peer is hostile
                raise OSError("client does not read")
            reply = None

    def on_readable(self) -> list[int] | None:
        """Make progress; the child's fds once the request is complete."""
        if self._authenticated:
            _tag, fds = _platform.recv_fds(self.conn, 1, MAX_FDS_PER_REQUEST)
            if not fds:
                raise ValueError("fork request carried no fds")
            self.conn.setblocking(True)
            return fds
        need = (FRAME_HEADER.size if self._frame_len is None else self._frame_len) - len(self._buf)
        data = self.conn.recv(need)
        if not data:
            raise EOFError("client closed the connection")
        self._buf += data
        if self._frame_len is None:
            if len(self._buf) == FRAME_HEADER.size:
                (self._frame_len,) = FRAME_HEADER.unpack(self._buf)
                self._buf.clear()
                if self._frame_len > self._want:
                    raise ValueError(f"handshake frame of {self._frame_len} bytes")
            if self._frame_len != 0:
                return None
        if len(self._buf) == self._frame_len:
            message = bytes(self._buf)
            self._buf.clear()
            self._frame_len = None
            self._advance(message)
        return None


def _child(fds: list[int], listener: socket.socket, keep_closed: list[int]) -> NoReturn:
    code = 1
    try:
        _platform.reset_child_signals()
        listener.close()
        _platform.close_fds(*keep_closed)
        _runtime.clear_finalizers()  # the server's, not the child's
        atexit._clear()
        set_inherited_fds(fds[1:])
        code = run_child(fds[0])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            atexit._run_exitfuncs()  # the ones the child's target registered
        finally:
            process.flush_std_streams()
            os._exit(code)


def serve(listener_fd: int, alive_r: int, config_r: int) -> None:
    config = loads(read_frame(config_r))
    os.close(config_r)
    socket_dir = config.get("socket_dir")
    if socket_dir:  # the owner may be SIGKILLed: the server leaves nothing behind itself
        atexit_dirs.append(socket_dir)
    authkey: bytes = config["authkey"]
    sys.path = config["sys_path"]
    try:
        os.chdir(config["dir"])  # preloading may import modules relative to it
    except OSError:
        pass
    _runtime.close_stdin()
    _preload(config)
    # What a child most often receives (a queue, a lock, a connection): imported
    # once here, not after every fork (``import phalanx`` no longer loads them).
    for name in _ALWAYS_PRELOADED:
        __import__(name)

    listener = socket.socket(fileno=listener_fd)
    listener.setblocking(False)
    sig_r, sig_w = os.pipe()
    os.set_blocking(sig_w, False)
    signal.set_wakeup_fd(sig_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    # Ctrl-C in the terminal reaches the whole process group: that is for the
    # user's program to handle, not a reason for the server to die.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    children: dict[int, socket.socket] = {}
    pending: dict[socket.socket, _Request] = {}
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(alive_r, selectors.EVENT_READ)
    selector.register(sig_r, selectors.EVENT_READ)

    def drop(request: _Request) -> None:
        selector.unregister(request.conn)
        del pending[request.conn]
        request.conn.close()

    while True:
        timeout = None
        if pending:
            timeout = max(0.0, min(r.deadline for r in pending.values()) - time.monotonic())
        ready = {key.fileobj for key, _ in selector.select(timeout)}
        if alive_r in ready:
            return  # owner gone
        if sig_r in ready:
            try:
                os.read(sig_r, 4096)
            except BlockingIOError:
                pass
            _reap(children)
        if listener in ready:
            try:
                conn, _addr = listener.accept()
            except OSError:
                conn = None
            if conn is not None:
                try:
                    pending[conn] = _Request(conn, authkey)
                    selector.register(conn, selectors.EVENT_READ)
                except (AuthenticationError, OSError, EOFError, ValueError):
                    pending.pop(conn, None)
                    conn.close()
        now = time.monotonic()
        for request in list(pending.values()):
            fds = None
            if request.conn in ready:
                try:
                    fds = request.on_readable()
                except (AuthenticationError, OSError, EOFError, ValueError):
                    drop(request)
                    continue
            if fds is None:
                if request.deadline <= now:
                    drop(request)
                continue
            selector.unregister(request.conn)
            del pending[request.conn]
            conn = request.conn
            pid = os.fork()
            if pid == 0:
                others = [c.fileno() for c in (*children.values(), *pending)]
                _child(fds, listener, [alive_r, sig_r, sig_w, conn.fileno(), *others])
            _platform.close_fds(*fds)
            try:
                write_int(conn.fileno(), pid)
                children[pid] = conn
            except OSError:
                conn.close()  # the client gave up; the child still runs and is reaped


def _reap(children: dict[int, socket.socket]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is None:
            continue
        try:
            write_int(conn.fileno(), os.waitstatus_to_exitcode(status))
        except OSError:
            pass
        conn.close()


def main(listener_fd: int, alive_r: int, config_r: int) -> NoReturn:
    for fd in (listener_fd, alive_r, config_r):
        os.set_inheritable(fd, False)
    try:
        serve(listener_fd, alive_r, config_r)
    finally:
        for directory in atexit_dirs:
            shutil.rmtree(directory, ignore_errors=True)
        process.flush_std_streams()
    os._exit(0)


atexit_dirs: list[str] = []  # removed as the server exits (its socket's directory)
