"""The operating-system layer: the only place in phalanx that branches on the OS.

Everything above this package calls these functions and never looks at
``sys.platform``.  Linux gets pidfds and memfds; other POSIX systems (macOS) get
the portable fallbacks in :mod:`._posix`.
"""

from __future__ import annotations

import sys

if sys.platform.startswith("linux"):
    from ._linux import (
        DEFAULT_START_METHOD,
        HAVE_ABSTRACT_SOCKETS,
        HAVE_PIDFD,
        START_METHODS,
        grow_pipe,
        memfd_create,
        pidfd_open,
        pidfd_send_signal,
        process_start_time,
        release_pages,
        spare_cpu,
    )
elif sys.platform == "win32":  # pragma: no cover - not a supported platform yet
    raise ImportError("phalanx supports POSIX systems only (Linux, macOS); got win32")
else:  # pragma: no cover - macOS and other POSIX systems
    from ._posix import (
        DEFAULT_START_METHOD,
        HAVE_ABSTRACT_SOCKETS,
        HAVE_PIDFD,
        START_METHODS,
        grow_pipe,
        memfd_create,
        pidfd_open,
        pidfd_send_signal,
        process_start_time,
        release_pages,
        spare_cpu,
    )

from ._posix import (
    INTERRUPT_CHECK,
    close_fds,
    cpu_count,
    drop_silent_peer,
    exitcode_to_name,
    ignore_sigint,
    interpreter_flags,
    pipe_reader_gone,
    recv_fds,
    reset_child_signals,
    send_fds,
    signal_name,
    spawn_child,
    wait_exitcode,
    wait_readable,
)

TYPE_CHECKING = False  # typing is not imported at run time: see phalanx/context.py
if TYPE_CHECKING:
    from typing import Any

# libc through ctypes (semaphores, robust mutexes, shm_open, raw socket calls) is
# loaded on first use: a program that only starts processes never pays for ctypes.
if TYPE_CHECKING:
    from ._libc import (
        HAVE_ROBUST_MUTEX,
        HAVE_UNNAMED_SEMAPHORES,
        MUTEX_SIZE,
        SEM_T_SIZE,
        TOTAL_STORE_ORDER,
        DatagramReader,
        drain,
        mutex_init,
        mutex_lock,
        mutex_trylock,
        mutex_unlock,
        poke,
        raw_sem_post,
        raw_sem_trywait,
        recv_bytes_waitall,
        recv_into_address,
        sem_destroy,
        sem_getvalue,
        sem_init,
        sem_post,
        sem_trywait,
        sem_wait_until,
        send_nowait,
        shm_open,
        shm_unlink,
    )


if not TYPE_CHECKING:  # hidden from type checkers: they would miss typos

    def __getattr__(name: str) -> Any:
        # (Private names are not libc's: ``from . import _libc`` itself asks for one.)
        if not name.startswith("_"):
            __import__(f"{__name__}._libc")
            libc = sys.modules[f"{__name__}._libc"]
            if name in libc.__all__:
                value = getattr(libc, name)
                globals()[name] = value
                return value
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = (
    "DEFAULT_START_METHOD",
    "HAVE_ABSTRACT_SOCKETS",
    "HAVE_PIDFD",
    "HAVE_ROBUST_MUTEX",
    "HAVE_UNNAMED_SEMAPHORES",
    "INTERRUPT_CHECK",
    "MUTEX_SIZE",
    "SEM_T_SIZE",
    "START_METHODS",
    "TOTAL_STORE_ORDER",
    "DatagramReader",
    "close_fds",
    "cpu_count",
    "drain",
    "drop_silent_peer",
    "exitcode_to_name",
    "grow_pipe",
    "ignore_sigint",
    "interpreter_flags",
    "memfd_create",
    "mutex_init",
    "mutex_lock",
    "mutex_trylock",
    "mutex_unlock",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe_reader_gone",
    "poke",
    "process_start_time",
    "raw_sem_post",
    "raw_sem_trywait",
    "recv_bytes_waitall",
    "recv_fds",
    "recv_into_address",
    "release_pages",
    "reset_child_signals",
    "sem_destroy",
    "sem_getvalue",
    "sem_init",
    "sem_post",
    "sem_trywait",
    "sem_wait_until",
    "send_fds",
    "send_nowait",
    "shm_open",
    "shm_unlink",
    "signal_name",
    "spare_cpu",
    "spawn_child",
    "wait_exitcode",
    "wait_readable",
)
