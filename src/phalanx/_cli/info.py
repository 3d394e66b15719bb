"""``phalanx info``: what this installation of phalanx runs on, and what it uses.

One line per fact: the versions, the platform, the start methods and the
default one, and the operating-system features phalanx takes when it finds
them (pidfd sentinels, memfd segments, robust mutexes for locks whose owner
died, the compiled fast path), and the size of /dev/shm, where shared memory
lives (a container's default of 64 MiB is a common cause of failures).
"""

from __future__ import annotations

import os
import platform
import sys

import phalanx

from .. import _fast, _platform


def _yes(flag: bool, yes: str, no: str) -> str:
    return f"yes ({yes})" if flag else f"no ({no})"


def _memfd() -> bool:
    try:
        fd = _platform.memfd_create("phalanx-info")
    except OSError:
        return False
    os.close(fd)
    return hasattr(os, "memfd_create")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")


def _shm() -> str:
    try:
        stat = os.statvfs("/dev/shm")
    except OSError as exc:
        return f"not available ({exc.strerror}): shared memory uses temporary files"
    total, free = stat.f_blocks * stat.f_frsize, stat.f_bavail * stat.f_frsize
    line = f"{_size(total)} ({_size(free)} free)"
    if total < 256 * 1024 * 1024:
        line += "; small: large queue messages and arrays may not fit (docker run --shm-size)"
    return line


def facts() -> list[tuple[str, str]]:
    """(name, value) pairs, in the order printed."""
    if _fast.speedups is not None:
        fast = "compiled (phalanx._speedups)"
    elif _fast.PURE_PYTHON:
        fast = "pure Python (PHALANX_PURE_PYTHON=1 is set)"
    else:
        fast = "pure Python (the extension was not built: no C compiler at install time?)"
    methods = phalanx.get_all_start_methods()
    try:
        robust = bool(_platform.HAVE_ROBUST_MUTEX)
    except (AttributeError, OSError):  # no libc symbol for it
        robust = False
    return [
        ("phalanx", phalanx.__version__),
        ("python", f"{platform.python_version()} ({platform.python_implementation()}, "
                   f"{sys.executable})"),
        ("platform", f"{platform.system()} {platform.release()} {platform.machine()}"),
        ("cpus", f"{os.cpu_count()} (usable by this process: {phalanx.cpu_count()})"),
        ("start methods", f"{', '.join(methods)} (default: {phalanx.get_start_method()})"),
        ("fast path", fast),
        ("pidfd", _yes(_platform.HAVE_PIDFD, "process sentinels cannot be recycled pids",
                       "sentinels are pipes")),
        ("memfd", _yes(_memfd(), "large messages travel in anonymous memory",
                       "large messages use /dev/shm files")),
        ("robust mutexes", _yes(robust, "a holder killed mid-update never wedges a queue or lock",
                                "the pure path's locks record their owner in two steps")),
        ("/dev/shm", _shm()),
    ]  # fmt: skip


def run() -> int:
    rows = facts()
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0
