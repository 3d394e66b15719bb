"""The ``spawn`` start method: a fresh interpreter fed over a pipe."""

from __future__ import annotations

import os

from .. import _platform, _spawn, _tracker
from .._wire.fds import DupFd
from .._wire.framing import write_frame
from .._wire.pickling import dumps, spawning
from .fork import ChildPopen

TYPE_CHECKING = False  # typing is not imported at run time: see phalanx/context.py
if TYPE_CHECKING:
    from ..process import BaseProcess


class SpawnPopen(ChildPopen):
    """Start ``sys.executable`` (or ``set_executable()``'s choice) and send it the process.

    Objects pickled for the child may call :meth:`duplicate_for_child` to have
    an fd inherited at the same number.
    """

    method = "spawn"

    fds_by_index = False

    def __init__(self, process_obj: BaseProcess) -> None:
        self._fds: list[int] = []
        self._to_close: list[int] = []
        try:
            super().__init__(process_obj)
        finally:
            _platform.close_fds(*self._to_close)

    def duplicate_for_child(self, fd: int) -> int:
        """Make ``fd`` reach the child; returns the handle the child resolves."""
        self._fds.append(fd)
        return fd

    def DupFd(self, handle: int) -> DupFd:
        """The stdlib's protocol: ``popen.DupFd(popen.duplicate_for_child(fd))``."""
        return DupFd.from_handle(handle, self.fds_by_index)

    def keep_open_until_started(self, fd: int) -> None:
        """``fd`` is ours to close once the child has been started."""
        self._to_close.append(fd)

    def _payload(self, process_obj: BaseProcess) -> tuple[bytes, bytes]:
        prep = _spawn.get_preparation_data(process_obj.name, self.method)
        tracker = _tracker.ensure_running()
        with spawning(self):
            prep["tracker"] = DupFd(tracker)  # the child joins our process tree's tracker
            return dumps(prep), dumps(process_obj)

    def _launch(self, process_obj: BaseProcess) -> None:
        prep, obj = self._payload(process_obj)
        child_r, parent_w = os.pipe()
        sentinel_r, sentinel_w = (-1, -1) if _platform.HAVE_PIDFD else os.pipe()
        try:
            cmd = _spawn.get_command_line("_spawn_main", child_r)
            pass_fds = [*self._fds, child_r] + ([sentinel_w] if sentinel_w >= 0 else [])
            pid = _platform.spawn_child(_spawn.get_executable(), cmd, pass_fds)
        except BaseException:
            _platform.close_fds(parent_w, sentinel_r)
            raise
        finally:
            _platform.close_fds(child_r, sentinel_w)
        self._adopt(pid, sentinel_r, (parent_w,))
        try:
            write_frame(parent_w, prep)
            write_frame(parent_w, obj)
        except BrokenPipeError:
            pass  # the child died at startup: its exit code will tell


Popen = SpawnPopen
