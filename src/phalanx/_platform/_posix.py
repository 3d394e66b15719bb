"""Portable POSIX implementations, used as-is on macOS and as the base on Linux."""

from __future__ import annotations

import _signal  # type: ignore[import-not-found, unused-ignore]  # (no stub: signal's C half)
import math
import os
import select
import signal
from collections.abc import Iterable, Sequence

TYPE_CHECKING = False  # typing is not imported at run time: see phalanx/context.py
if TYPE_CHECKING:
    import mmap
    import socket

# The stdlib's default on non-Linux POSIX (macOS) is spawn since 3.8 (bpo-33725).
DEFAULT_START_METHOD = "spawn"
START_METHODS: tuple[str, ...] = ("spawn", "fork", "forkserver")
HAVE_PIDFD = False
HAVE_ABSTRACT_SOCKETS = False


def pidfd_open(pid: int) -> int | None:
    """Return a pidfd for ``pid``, or None where the OS has none."""
    return None


def pidfd_send_signal(pidfd: int, signum: int) -> None:
    raise NotImplementedError("pidfd_send_signal is not available on this platform")


def memfd_create(name: str) -> int:
    """Return the fd of an anonymous, unlinked file usable for shared mappings."""
    import tempfile  # rarely needed: Linux has memfd_create

    fd, path = tempfile.mkstemp(prefix=f"phalanx-{name}-")
    os.unlink(path)
    return fd


def ignore_sigint() -> None:
    """Ignore Ctrl-C in a helper process (a pool worker, a manager server).

    Ctrl-C reaches the whole process group; the helper's owner decides what
    happens to it.  Through ``_signal``: ``signal.signal()`` turns the old handler
    into an enum, touching pages a fresh fork must then copy (~0.15 ms of its start).
    """
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)


def reset_child_signals() -> None:
    """Give a child forked from a server (the forkserver) a fresh program's handlers.

    No wakeup fd, SIGCHLD and SIGTERM at their defaults, Ctrl-C raising
    KeyboardInterrupt; through ``_signal`` for the reason :func:`ignore_sigint` says.
    """
    _signal.set_wakeup_fd(-1)
    for signum in (_signal.SIGCHLD, _signal.SIGTERM):
        _signal.signal(signum, _signal.SIG_DFL)
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)


def signal_name(signum: int) -> str:
    """``9`` -> ``'SIGKILL'``; an unknown number gives ``'signal 99'``."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def exitcode_to_name(exitcode: int) -> str:
    """Render an exit code the way the stdlib's repr does: ``-9`` -> ``'-SIGKILL'``."""
    if exitcode < 0:
        name = signal_name(-exitcode)
        return f"-{name}" if name.startswith("SIG") else str(exitcode)
    return str(exitcode)


def wait_exitcode(pid: int, block: bool) -> int | None:
    """Reap ``pid``; return its exit code (negative signal number) or None if running."""
    while True:
        try:
            got, status = os.waitpid(pid, 0 if block else os.WNOHANG)
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            continue
        except ChildProcessError:
            # Somebody else reaped it (a SIGCHLD=SIG_IGN setting, or os.wait()):
            # the status is lost, like in the stdlib.
            return 255
        if got == 0:
            return None
        return os.waitstatus_to_exitcode(status)


def cpu_count() -> int:
    count = os.cpu_count()
    if count is None:
        raise NotImplementedError("cannot determine number of cpus")
    return count


def close_fds(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def interpreter_flags() -> list[str]:
    """Command-line options that reproduce this interpreter's flags (-O, -E, -X ...)."""
    # A private helper of ``subprocess`` (not of multiprocessing); stable since 3.3.
    # Imported here, not at the top: spawned children never need it, and
    # their startup time is what users wait for.
    import subprocess

    return list(subprocess._args_from_interpreter_flags())  # type: ignore[attr-defined]


def spawn_child(
    executable: str, argv: Sequence[str], pass_fds: Iterable[int], *, new_session: bool = False
) -> int:
    """Start ``executable`` with ``argv``; the child keeps only std streams and ``pass_fds``.

    ``new_session``: the child leads a session of its own (``setsid``), so a
    Ctrl-C or signal sent to our process group does not reach it.

    Uses posix_spawn (vfork-fast on glibc).  Our fds are close-on-exec, so the
    ones to pass are made inheritable for the duration of the call only.
    """
    made_inheritable = []
    try:
        for fd in pass_fds:
            if not os.get_inheritable(fd):
                os.set_inheritable(fd, True)
                made_inheritable.append(fd)
        return os.posix_spawn(executable, list(argv), os.environ, setsid=new_session)
    finally:
        for fd in made_inheritable:
            os.set_inheritable(fd, False)


def send_fds(sock: socket.socket, data: bytes, fds: Sequence[int]) -> None:
    """Send ``data`` with ``fds`` attached (SCM_RIGHTS) in one message."""
    import socket  # here (as below): ``import phalanx`` does not load socket

    socket.send_fds(sock, [data], list(fds))


def recv_fds(sock: socket.socket, bufsize: int, maxfds: int) -> tuple[bytes, list[int]]:
    """Receive one message sent by :func:`send_fds`; the fds come back close-on-exec."""
    import socket
    import struct

    # socket.recv_fds() drops its flags argument (3.11-3.13): call recvmsg
    # ourselves so the kernel sets close-on-exec atomically.
    data, ancdata, _flags, _addr = sock.recvmsg(
        bufsize, socket.CMSG_LEN(maxfds * _INT_SIZE), socket.MSG_CMSG_CLOEXEC
    )
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % _INT_SIZE
            fds.extend(struct.unpack(f"{usable // _INT_SIZE}i", payload[:usable]))
    return data, fds


_INT_SIZE = 4  # a C int on every platform phalanx supports (ILP32, LP64)


def wait_readable(fds: Sequence[int], timeout: float | None) -> list[int]:
    """The subset of ``fds`` that is readable (or hung up) within ``timeout`` seconds.

    ``timeout=None`` blocks; a negative timeout is treated as 0.  A long wait
    polls in slices of ``INTERRUPT_CHECK`` seconds: a signal that lands just
    before poll() blocks is otherwise handled (Ctrl-C raised) only once the
    wait is over, for CPython runs Python handlers when the main thread wakes.
    """
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    slice_ms = math.ceil(INTERRUPT_CHECK * 1000)
    ms = None if timeout is None else max(0, math.ceil(timeout * 1000))
    while ms is None or ms > slice_ms:
        ready = poller.poll(slice_ms)
        if ready:
            return [fd for fd, _ev in ready]
        if ms is not None:
            ms -= slice_ms
    return [fd for fd, _ev in poller.poll(ms)]


INTERRUPT_CHECK = 0.25  # seconds a blocking wait goes without looking for signals


def spare_cpu() -> bool:
    """Whether a CPU is free for a waiter to poll on a moment before it sleeps.

    No instantaneous count of runnable tasks here (``os.getloadavg()`` is a
    one-minute mean): always yes, the waits stay short (50 us).
    """
    return True


def pipe_reader_gone(fd: int) -> bool:
    """Whether every reader of the pipe that ``fd`` writes to has closed it.

    Asked of the write end with a zero-timeout poll (Linux reports POLLERR,
    macOS POLLHUP, old macOS POLLNVAL): unlike a probe written down the pipe,
    it does not wake the reader.  An fd closed under us counts as gone too.
    """
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    gone = select.POLLERR | select.POLLHUP | select.POLLNVAL
    return any(events & gone for _fd, events in poller.poll(0))


def grow_pipe(fd: int, size: int = 1 << 20) -> None:
    """Enlarge a pipe's buffer where the OS allows it (not on this platform)."""


def release_pages(mapping: mmap.mmap, offset: int, length: int) -> None:
    """Give the memory of a shared mapping's range back, where the OS can (not here)."""


def process_start_time(pid: int) -> int | None:
    """0 if ``pid`` exists, None if not (no start time here: pid reuse goes unnoticed)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return 0


def drop_silent_peer(sock: socket.socket, after: float) -> None:
    """Fail ``sock`` once its peer has not answered for about ``after`` seconds.

    For connections across machines: a peer whose host lost power or was cut
    off the network sends no FIN, and without this a reader waits for it for
    hours.  Keep-alive probes (answered by the peer's kernel, however busy its
    process) cover an idle connection; ``TCP_USER_TIMEOUT`` (Linux) covers
    data sent and never acknowledged.  Options the system lacks are skipped.
    """
    import socket

    idle = max(1, int(after / 3))
    interval = max(1, int(after / 6))
    options = [
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        # macOS names the idle time TCP_KEEPALIVE
        (
            socket.IPPROTO_TCP,
            getattr(socket, "TCP_KEEPIDLE", getattr(socket, "TCP_KEEPALIVE", None)),
            idle,
        ),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", None), interval),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", None), 3),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", None), int(after * 1000)),
    ]
    for level, name, value in options:
        if name is None:
            continue
        try:
            sock.setsockopt(level, name, value)
        except OSError:
            pass
