"""Linux specifics: pidfds (5.3+) and memfds."""

from __future__ import annotations

import os
import signal
import time

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


_SPARE_CPU_EVERY = 0.005  # seconds an answer of spare_cpu() is reused
_spare_cpu_at = -1.0
_spare_cpu = True
_CPUS = os.cpu_count() or 1
_quota_cpus: float | None = None  # the cgroup's CPU quota in CPUs, read once


def spare_cpu() -> bool:
    """Whether a CPU is free for a waiter to poll on a moment before it sleeps.

    Polling saves the tens of microseconds of a wake-up when a CPU is idle,
    and costs a time slice of milliseconds when it is not: the waiter then
    runs instead of the process it waits for, or yields to a CPU-bound one.
    Free means no more tasks running or ready to run, machine-wide, than
    CPUs (``/proc/loadavg``'s fourth field, the waiter included), and room
    for two of us at once: a process held to one CPU (``taskset``, a
    cpuset) or to one CPU's worth of a cgroup quota would poll while the
    process it waits for cannot run.  The answer is reused for 5 ms.
    """
    global _spare_cpu_at, _spare_cpu
    now = time.monotonic()
    if now - _spare_cpu_at >= _SPARE_CPU_EVERY:
        _spare_cpu_at = now
        _spare_cpu = _two_cpus_for_us() and _runnable_tasks() <= _CPUS
    return _spare_cpu


def _two_cpus_for_us() -> bool:
    global _quota_cpus
    if _quota_cpus is None:
        _quota_cpus = _cgroup_quota_cpus()
    return len(os.sched_getaffinity(0)) >= 2 and _quota_cpus >= 2


def _runnable_tasks() -> int:
    """Tasks running or ready to run, machine-wide, now (0 if /proc cannot say)."""
    try:
        fd = os.open("/proc/loadavg", os.O_RDONLY | os.O_CLOEXEC)
        try:
            fields = os.read(fd, 128).split()
        finally:
            os.close(fd)
        return int(fields[3].split(b"/")[0])
    except (OSError, IndexError, ValueError):  # pragma: no cover - no /proc
        return 0


def _cgroup_quota_cpus(path: str = "/sys/fs/cgroup/cpu.max") -> float:
    """CPUs' worth of time the cgroup v2 quota grants (``inf`` without a quota)."""
    try:
        with open(path, "rb") as f:
            quota, period = f.read().split()[:2]
        return float("inf") if quota == b"max" else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return float("inf")


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
