"""The ``fork`` start method: ``os.fork()`` and run the process object in the copy."""

from __future__ import annotations

import atexit
import os
import signal
import threading
import weakref

from .. import _platform, _runtime, _tracker
from ..errors import ProcessStateError
from ..process import check_timeout, flush_std_streams

TYPE_CHECKING = False  # typing is not imported at run time: see phalanx/context.py
if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..process import BaseProcess


class ChildPopen:
    """A child of this process, watched through a pidfd (or a pipe where there is none).

    The sentinel is the pidfd: unlike a pipe, a grandchild cannot keep it open,
    and signals sent through it cannot hit a recycled pid.
    """

    method = "fork"
    pid: int
    sentinel: int

    def __init__(self, process_obj: BaseProcess) -> None:
        self.returncode: int | None = None
        self._pidfd: int | None = None
        self._reap_lock = threading.Lock()
        self._finalizer: _runtime.Finalize | None = None
        self._parent_fds: Sequence[int] = ()
        self._launch(process_obj)

    def _launch(self, process_obj: BaseProcess) -> None:
        _tracker.ensure_running()  # so the child belongs to our tree's tracker
        _runtime.ready_null_stdin()
        flush_std_streams()
        # The child's view of us: EOF on child_r once this process (and every
        # copy of parent_w) is gone.
        child_r, parent_w = os.pipe()
        sentinel_r, sentinel_w = (-1, -1) if _platform.HAVE_PIDFD else os.pipe()
        # What we keep of the child is recorded before the fork: after it, every
        # page this process writes is copied while the child lives (~3 us each),
        # which made a trivial fork start 1.15x the stdlib's.  The pidfd joins
        # the list after the fork.  The child's copy of us closes these fds in
        # its after-fork hook (_close_inherited_handles), as those of our other
        # children.
        fds = [parent_w] if sentinel_r < 0 else [sentinel_r, parent_w]
        forget = self._keep(fds)
        try:
            pid = os.fork()
        except BaseException:
            _platform.close_fds(child_r, sentinel_w)
            forget()
            raise
        if pid == 0:  # pragma: no cover - runs in the child, measured there
            code = 1
            try:
                # The parent's atexit handlers are not the child's; the ones
                # its target registers run when it ends (as the stdlib, 3.13).
                atexit._clear()
                _after_fork_in_child()
                code = process_obj._bootstrap(parent_sentinel=child_r, after_fork=True)
            finally:
                try:
                    atexit._run_exitfuncs()
                finally:
                    os._exit(code)
        os.close(child_r)
        if sentinel_w >= 0:
            os.close(sentinel_w)
        self._watch(pid, sentinel_r, fds)

    def _adopt(self, pid: int, pipe_sentinel: int, extra_fds: tuple[int, ...]) -> None:
        """Record a child started without a fork of ours (spawn)."""
        fds = [*extra_fds] if pipe_sentinel < 0 else [pipe_sentinel, *extra_fds]
        self._keep(fds)
        self._watch(pid, pipe_sentinel, fds)

    def _keep(self, fds: list[int]) -> _runtime.Finalize:
        """Record the fds this process keeps for the child: closed when this
        Popen goes (the finalizer returned), and in a forked copy of this process
        (``_live``)."""
        self._parent_fds = fds
        self._finalizer = finalizer = _runtime.Finalize(self, _close_all, (fds,))
        _live.add(self)
        return finalizer

    def _watch(self, pid: int, pipe_sentinel: int, fds: list[int]) -> None:
        """Open the started child's pidfd (kept in ``fds``): it is the sentinel,
        or ``pipe_sentinel`` where the OS has none."""
        self.pid = pid
        self._pidfd = pidfd = _platform.pidfd_open(pid)
        if pidfd is None:
            self.sentinel = pipe_sentinel
        else:
            fds.append(pidfd)
            self.sentinel = pidfd

    def _forget_in_forked_child(self) -> None:
        # A forked copy of this process must not hold our handles on our other
        # children: a copy of the write end we keep for a child would hide our
        # death from it (its parent sentinel would never see EOF).
        fds = self._parent_fds
        _platform.close_fds(*fds)
        if isinstance(fds, list):
            fds.clear()  # (the finalizer's list too: those numbers are not ours here)
        self._parent_fds = ()

    def poll(self, flag: int = os.WNOHANG) -> int | None:
        """The exit code, or None if still running (``flag=0`` blocks until it ends)."""
        if self.returncode is None:
            with self._reap_lock:
                if self.returncode is None:
                    self.returncode = _platform.wait_exitcode(self.pid, block=flag == 0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the child ends or ``timeout`` passes; the exit code or None."""
        if self.returncode is None:
            seconds = check_timeout(timeout)
            if not _platform.wait_readable([self.sentinel], seconds):
                return None
            return self.poll(0)
        return self.returncode

    def _send_signal(self, signum: int) -> None:
        if self.returncode is not None:
            return
        try:
            if self._pidfd is not None:
                _platform.pidfd_send_signal(self._pidfd, signum)
            else:
                os.kill(self.pid, signum)
        except ProcessLookupError:
            pass  # already gone (a zombie awaiting our waitpid)
        except OSError:
            if self.wait(timeout=0.1) is None:
                raise

    def terminate(self) -> None:
        self._send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self._send_signal(signal.SIGKILL)

    def close(self) -> None:
        if self.returncode is None and self.poll() is None:
            raise ProcessStateError(f"cannot close the handle of running process {self.pid}")
        if self._finalizer is not None:
            self._finalizer()


def _close_all(fds: list[int]) -> None:
    _platform.close_fds(*fds)
    fds.clear()


def _after_fork_in_child() -> None:
    # CPython < 3.13 leaves the forked main thread's native_id stale.
    main = threading.main_thread()
    set_native_id = getattr(main, "_set_native_id", None)
    if set_native_id is not None:
        set_native_id()
    # The after-fork hooks run in _bootstrap, once the parent's finalizers are dropped.


_live: weakref.WeakSet[ChildPopen] = weakref.WeakSet()


def _close_inherited_handles() -> None:
    for popen in list(_live):
        popen._forget_in_forked_child()
    _live.clear()


os.register_at_fork(after_in_child=_close_inherited_handles)

Popen = ChildPopen
