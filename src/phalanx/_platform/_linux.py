"""Linux specifics: pidfds (5.3+) and memfds."""

from __future__ import annotations

import os
import signal

from . import _posix

TYPE_CHECKING = False  # typing is not imported at run time: see phalanx/context.py
if TYPE_CHECKING:
    import mmap

# Up to 3.13 the stdlib defaults to fork on Linux (3.14 moves to forkserver).
DEFAULT_START_METHOD = "fork"
START_METHODS: tuple[str, ...] = ("fork", "spawn", "forkserver")
# AF_UNIX names starting with a NUL byte live outside the filesystem.
HAVE_ABSTRACT_SOCKETS = True


def _probe_pidfd() -> bool:
    try:
        fd = os.pidfd_open(os.getpid())
    except (AttributeError, OSError):
        return False
    os.close(fd)
    return True


HAVE_PIDFD = _probe_pidfd()


def pidfd_open(pid: int) -> int | None:
    """A close-on-exec pidfd that polls readable when ``pid`` exits; None if unsupported."""
    if not HAVE_PIDFD:
        return None
    return os.pidfd_open(pid)  # the kernel makes pidfds close-on-exec


def pidfd_send_signal(pidfd: int, signum: int) -> None:
    """Signal through a pidfd: immune to pid reuse."""
    signal.pidfd_send_signal(pidfd, signum)


def memfd_create(name: str) -> int:
    try:
        return os.memfd_create(name, os.MFD_CLOEXEC)
    except OSError:  # pragma: no cover - very old kernels or seccomp
        return _posix.memfd_create(name)


def grow_pipe(fd: int, size: int = 1 << 20) -> None:
    """Enlarge a pipe's buffer (fewer context switches for bulk data); best effort."""
    import fcntl  # here, as mmap below: most programs never call these

    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    except OSError:
        pass  # above /proc/sys/fs/pipe-max-size for an unprivileged user


def release_pages(mapping: mmap.mmap, offset: int, length: int) -> None:
    """Give the memory of a shared mapping's range back (it reads as zeros after)."""
    import mmap

    try:
        mapping.madvise(mmap.MADV_REMOVE, offset, length)
    except OSError:  # pragma: no cover - a filesystem without hole punching
        pass


def process_start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or None if there is no such process.

    With the pid it identifies a process for good: a recycled pid has another
    start time.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces and parentheses: skip past it.
    fields = stat[stat.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return None  # a zombie is dead for our purposes
    return int(fields[19])
