"""Client side of the resource tracker (the tracker itself is ``_tracker_main``).

One small tracker process per process tree remembers the named resources
(POSIX shared-memory segments) that processes of the tree created and have
not unlinked.  Every process of the tree holds the write end of one pipe to
it: fork inherits it, spawn and forkserver children receive it when they
start.  When the last holder is gone, however it died (even SIGKILL of all of
them), the tracker sees EOF and unlinks whatever is left, exactly once.

It runs in its own session (``setsid``) so that a Ctrl-C or a signal sent to
the user's process group cannot take it down before it has cleaned up.

Only creators register a segment: a process that merely attaches to a
segment by name never causes it to be unlinked (gh-82300).  Messages are
single lines shorter than PIPE_BUF, so concurrent writers never interleave.
"""

from __future__ import annotations

import os
import threading

from . import _platform, _spawn

__all__ = ("ensure_running", "getfd", "register", "tracker_pid", "unregister")

RESOURCE_TYPES = ("shared_memory",)


class _Tracker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pid: int | None = None  # set only in the process that started it

    def adopt(self, fd: int) -> None:
        """Use the tracker of our parent (an fd received at start-up)."""
        os.set_inheritable(fd, False)
        self._fd, self._pid = fd, None

    def getfd(self) -> int | None:
        return self._fd

    def ensure_running(self) -> int:
        with self._lock:
            if self._fd is not None and self._alive():
                return self._fd
            if self._pid is not None:
                _platform.wait_exitcode(self._pid, block=False)  # reap a dead tracker
            r, w = os.pipe()
            try:
                cmd = _spawn.get_command_line("_tracker_main", r)
                pid = _platform.spawn_child(_spawn.get_executable(), cmd, [r], new_session=True)
            except BaseException:
                _platform.close_fds(w)
                raise
            finally:
                _platform.close_fds(r)
            if self._fd is not None:
                _platform.close_fds(self._fd)
            self._fd, self._pid = w, pid
            return w

    def _alive(self) -> bool:
        # Asked of our end of the pipe: a probe written to the tracker would wake
        # it at every process start, taking a CPU from the child on a busy machine.
        try:
            return not _platform.pipe_reader_gone(self._fd)  # type: ignore[arg-type]
        except (OSError, ValueError):
            return False

    def _send(self, message: bytes) -> None:
        if self._fd is None:
            raise OSError("no resource tracker")
        line = message + b"\n"
        if len(line) > 512:
            raise ValueError(f"resource name too long for the tracker: {message[:60]!r}...")
        if os.write(self._fd, line) != len(line):  # pragma: no cover - atomic below PIPE_BUF
            raise OSError("short write to the resource tracker")

    def register(self, name: str, rtype: str) -> None:
        """Unlink ``name`` when the process tree is gone, unless unregistered first."""
        self.ensure_running()
        self._send(f"REGISTER:{rtype}:".encode() + name.encode().hex().encode())

    def unregister(self, name: str, rtype: str) -> None:
        """``name`` was unlinked (or handed over): forget it."""
        if self._fd is None:
            return
        try:
            self._send(f"UNREGISTER:{rtype}:".encode() + name.encode().hex().encode())
        except OSError:
            pass  # the tracker is gone: nothing left to forget

    def pid(self) -> int | None:
        return self._pid


_tracker = _Tracker()


def _after_fork_in_child() -> None:
    # The child shares its parent's tracker (the inherited pipe) but did not
    # start it: it is not ours to reap or to report.
    _tracker._pid = None
    _tracker._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
ensure_running = _tracker.ensure_running
getfd = _tracker.getfd
register = _tracker.register
unregister = _tracker.unregister
tracker_pid = _tracker.pid
adopt = _tracker.adopt
