"""The ``forkserver`` start method: children forked by the fork server."""

from __future__ import annotations

import os
import socket
import time

from .. import _forkserver, _platform, _runtime
from .._wire.framing import read_int, write_frame
from ..process import check_timeout
from .fork import _live
from .spawn import SpawnPopen

TYPE_CHECKING = False  # typing is not imported at run time: see phalanx/context.py
if TYPE_CHECKING:
    from ..process import BaseProcess


_REPORT_DELAY = 5.0  # at most, between a child's exit and the server's report


class ForkServerPopen(SpawnPopen):
    """A child of the fork server: its pid and exit code come over the server connection."""

    method = "forkserver"
    fds_by_index = True
    _conn: socket.socket

    def duplicate_for_child(self, fd: int) -> int:
        self._fds.append(fd)
        return len(self._fds) - 1

    def _launch(self, process_obj: BaseProcess) -> None:
        prep, obj = self._payload(process_obj)
        child_r, parent_w = os.pipe()
        try:
            self._conn, self.pid = _forkserver.request_child([child_r, *self._fds])
        except BaseException:
            _platform.close_fds(parent_w)
            raise
        finally:
            _platform.close_fds(child_r)
        # The exit code comes over the server connection; the pidfd (where there
        # is one) signals safely and is the sentinel: it turns readable the
        # moment the child exits and stays so, whereas the connection is only
        # readable between the server's report and its close.
        self._watched = self._conn.fileno()
        try:
            self._pidfd = _platform.pidfd_open(self.pid)
        except OSError:
            self._pidfd = None
        self.sentinel = self._watched if self._pidfd is None else self._pidfd
        fds = (parent_w,) if self._pidfd is None else (parent_w, self._pidfd)
        self._parent_fds = fds
        # With an exit priority: a process object still referenced at exit must
        # not leave its server connection open (ResourceWarning).
        self._finalizer = _runtime.Finalize(self, _close, (self._conn, *fds), exitpriority=-20)
        _live.add(self)
        try:
            write_frame(parent_w, prep)
            write_frame(parent_w, obj)
        except BrokenPipeError:
            pass

    def _forget_in_forked_child(self) -> None:
        super()._forget_in_forked_child()
        self._conn.close()

    def poll(self, flag: int = os.WNOHANG) -> int | None:
        if self.returncode is None:
            with self._reap_lock:
                if self.returncode is None:
                    timeout = 0 if flag == os.WNOHANG else None
                    if not _platform.wait_readable([self._watched], timeout):
                        if not self._exited():
                            return None
                        # Ended (the sentinel says so): the server's report
                        # follows as soon as it has reaped the child.
                        _platform.wait_readable([self._watched], _REPORT_DELAY)
                    self.returncode = self._read_status()
        return self.returncode

    def _exited(self) -> bool:
        return self._pidfd is not None and bool(_platform.wait_readable([self._pidfd], 0))

    def _read_status(self) -> int | None:
        """The child's exit code once ``_watched`` is readable (None: still running)."""
        if self._watched == self._pidfd:
            return 255  # it outlived the server: its exit status went to its new parent
        try:
            return read_int(self._conn.fileno())
        except (EOFError, OSError):
            pass
        # The fork server died without reporting.  The child may well be alive:
        # watch it through its pidfd from now on, so that is_alive(), join() and
        # kill() keep working.
        if self._pidfd is not None and not _platform.wait_readable([self._pidfd], 0):
            self._watched = self._pidfd
            return None
        return 255

    def wait(self, timeout: float | None = None) -> int | None:
        seconds = check_timeout(timeout)
        deadline = None if seconds is None else time.monotonic() + seconds
        while self.returncode is None:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not _platform.wait_readable([self._watched], remaining):
                return None
            self.poll(0)  # may only switch to watching the pidfd
        return self.returncode


def _close(conn: socket.socket, *fds: int) -> None:
    conn.close()
    _platform.close_fds(*fds)


Popen = ForkServerPopen
