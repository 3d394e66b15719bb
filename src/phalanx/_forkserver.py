"""Client side of the fork server (the server itself is ``_forkserver_main``).

The fork server is a Python process started once (with spawn) that imports the
preload modules and then forks a child per request, so each child starts
with those imports done and none of this process's threads or state.

Security (CVE-2022-42919): the server listens on an AF_UNIX socket inside a
private 0700 directory, and every connection must pass the mutual HMAC
challenge of ``_wire.auth`` with a key the server received over a pipe (never
on its command line) before it may send anything else.

One request: connect, authenticate, send the child's fds with SCM_RIGHTS; the
server replies with the child's pid, and later with its exit code, so the
connection itself is the sentinel.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Iterable, Sequence

from . import _platform, _runtime, _spawn
from ._wire import auth
from ._wire.framing import read_int, sock_recv_frame, sock_send_frame, write_frame
from ._wire.pickling import dumps

__all__ = ("ensure_running", "request_child", "set_forkserver_preload")

MAX_FDS_PER_REQUEST = 256
_AUTH_TIMEOUT = 30.0


class ForkServer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._preload: list[str] = []
        self._reset()

    def _reset(self) -> None:
        self._pid: int | None = None
        self._address: str | None = None
        self._dir: str | None = None
        self._alive_w: int | None = None
        self._authkey = b""
        self._owner = os.getpid()

    def set_preload(self, module_names: Iterable[str]) -> None:
        names = None
        if not isinstance(module_names, (str, bytes)):
            try:
                names = list(module_names)
            except TypeError:
                pass
        if names is None or not all(type(m) is str for m in names):
            raise TypeError(f"module_names must be a list of strings (got {module_names!r})")
        self._preload = names

    def _after_fork_in_child(self) -> None:
        # A forked child must not adopt our server: it is not the child's own
        # child, and its copy of the alive pipe would keep the server up.
        if self._alive_w is not None:
            _platform.close_fds(self._alive_w)
        self._lock = threading.Lock()
        self._reset()

    def ensure_running(self) -> None:
        """Start the server unless a live one of ours exists (restart a dead one)."""
        with self._lock:
            if self._pid is not None:
                if _platform.wait_exitcode(self._pid, block=False) is None:
                    return
                self._cleanup()
            self._start()

    def _cleanup(self) -> None:
        if self._alive_w is not None:
            _platform.close_fds(self._alive_w)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._reset()

    def _start(self) -> None:
        directory = tempfile.mkdtemp(prefix="phalanx-fs-")  # mode 0700
        address = os.path.join(directory, "sock")
        authkey = secrets.token_bytes(32)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        alive_r, alive_w = os.pipe()
        config_r, config_w = os.pipe()
        try:
            listener.bind(address)
            os.chmod(address, 0o600)
            listener.listen(128)
            main_module = sys.modules.get("__main__")
            main_path = getattr(main_module, "__file__", None)
            config = {
                "authkey": authkey,
                "preload": self._preload,
                "main_path": main_path if "__main__" in self._preload else None,
                "sys_path": _spawn.child_sys_path(),
                "dir": os.getcwd(),
                # The server removes it as it exits: if we are killed, nobody else will.
                "socket_dir": directory,
            }
            fds = [listener.fileno(), alive_r, config_r]
            cmd = _spawn.get_command_line("_forkserver_main", *fds)
            pid = _platform.spawn_child(_spawn.get_executable(), cmd, fds)
            write_frame(config_w, dumps(config))
        except BaseException:
            _platform.close_fds(alive_w)
            shutil.rmtree(directory, ignore_errors=True)
            raise
        finally:
            listener.close()
            _platform.close_fds(alive_r, config_r, config_w)
        self._pid, self._address, self._dir = pid, address, directory
        self._alive_w, self._authkey = alive_w, authkey
        self._owner = os.getpid()
        # Stop it at exit only after every child has been joined (their exit
        # codes come back through the server): priority below the default 0.
        _runtime.Finalize(None, self.stop, exitpriority=-100)

    def request_child(self, fds: Sequence[int]) -> tuple[socket.socket, int]:
        """Ask the server to fork a child that receives ``fds``; (connection, child pid)."""
        if len(fds) > MAX_FDS_PER_REQUEST:
            raise ValueError(f"too many fds for one child ({len(fds)} > {MAX_FDS_PER_REQUEST})")
        self.ensure_running()
        address, authkey = self._address, self._authkey
        if address is None:
            raise RuntimeError("the fork server did not start")
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.settimeout(_AUTH_TIMEOUT)
            conn.connect(address)
            auth.authenticate_client(
                lambda data: sock_send_frame(conn, data),
                lambda maxsize: sock_recv_frame(conn, maxsize),
                authkey,
            )
            _platform.send_fds(conn, b"F", fds)
            conn.settimeout(None)
            pid = read_int(conn.fileno())
        except BaseException:
            conn.close()
            raise
        return conn, pid

    def server_pid(self) -> int | None:
        return self._pid

    def stop(self) -> None:
        """Let the server exit (it does when the alive pipe closes) and reap it."""
        if self._owner != os.getpid():
            return
        with self._lock:
            pid = self._pid
            self._cleanup()
        if pid is not None:
            _platform.wait_exitcode(pid, block=True)


_forkserver = ForkServer()
os.register_at_fork(after_in_child=_forkserver._after_fork_in_child)
ensure_running = _forkserver.ensure_running
request_child = _forkserver.request_child
set_forkserver_preload = _forkserver.set_preload
