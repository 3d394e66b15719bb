"""The fork server process (entry point; the client side is ``_forkserver``).

Serves requests one at a time: authenticate, receive the child's fds, fork.
The forked child reads its process object from the first fd exactly like a
spawned child.  The server reports each child's pid at once and its exit code
when it is reaped, then closes that connection.  It exits when the alive pipe
reaches EOF, i.e. when its owner is gone.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import sys
from typing import Any, NoReturn

from . import _platform, _spawn, process
from . import _util as util
from ._errors import AuthenticationError
from ._spawn_main import run_child
from ._wire import auth
from ._wire.fds import set_inherited_fds
from ._wire.framing import read_frame, sock_recv_frame, sock_send_frame, write_int
from ._wire.pickling import loads

_REQUEST_TIMEOUT = 30.0


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


def _serve_request(conn: socket.socket, authkey: bytes) -> list[int]:
    """Authenticate ``conn`` and receive the fds of one child."""
    conn.settimeout(_REQUEST_TIMEOUT)
    auth.authenticate_server(
        lambda data: sock_send_frame(conn, data),
        lambda maxsize: sock_recv_frame(conn, maxsize),
        authkey,
    )
    _tag, fds = _platform.recv_fds(conn, 1, 256)
    conn.settimeout(None)
    if not fds:
        raise ValueError("fork request carried no fds")
    return fds


def _child(fds: list[int], listener: socket.socket, keep_closed: list[int]) -> NoReturn:
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        listener.close()
        _platform.close_fds(*keep_closed)
        set_inherited_fds(fds[1:])
        code = run_child(fds[0])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        process.flush_std_streams()
        os._exit(code)


def serve(listener_fd: int, alive_r: int, config_r: int) -> None:
    config = loads(read_frame(config_r))
    os.close(config_r)
    authkey: bytes = config["authkey"]
    sys.path = config["sys_path"]
    util.close_stdin()
    _preload(config)

    listener = socket.socket(fileno=listener_fd)
    sig_r, sig_w = os.pipe()
    os.set_blocking(sig_w, False)
    signal.set_wakeup_fd(sig_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    # Ctrl-C in the terminal reaches the whole process group: that is for the
    # user's program to handle, not a reason for the server to die.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    children: dict[int, socket.socket] = {}
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(alive_r, selectors.EVENT_READ)
    selector.register(sig_r, selectors.EVENT_READ)
    while True:
        ready = {key.fileobj for key, _ in selector.select()}
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
                continue
            try:
                fds = _serve_request(conn, authkey)
            except (AuthenticationError, OSError, EOFError, ValueError):
                conn.close()
                continue
            pid = os.fork()
            if pid == 0:
                others = [c.fileno() for c in children.values()]
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
        process.flush_std_streams()
    os._exit(0)
