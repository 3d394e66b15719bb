"""Public helpers, under the stdlib's ``multiprocessing.util`` names.

The implementation lives in ``_runtime`` (logging, finalizers, after-fork hooks,
the bottom layer); this module adds what needs the process layer.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable

from . import _platform, process
from ._runtime import (
    DEBUG,
    DEFAULT_LOGGING_FORMAT,
    INFO,
    LOGGER_NAME,
    NOTSET,
    SUBDEBUG,
    SUBWARNING,
    Finalize,
    debug,
    get_logger,
    info,
    is_exiting,
    log_to_stderr,
    register_after_fork,
    sub_debug,
    sub_warning,
)

TYPE_CHECKING = False  # typing is not imported at run time: see context.py
if TYPE_CHECKING:
    from typing import Any

__all__ = (
    "DEBUG",
    "DEFAULT_LOGGING_FORMAT",
    "INFO",
    "LOGGER_NAME",
    "NOTSET",
    "SUBDEBUG",
    "SUBWARNING",
    "Finalize",
    "ForkAwareLocal",
    "ForkAwareThreadLock",
    "abstract_sockets_supported",
    "close_all_fds_except",
    "debug",
    "get_logger",
    "get_temp_dir",
    "info",
    "is_abstract_socket_namespace",
    "is_exiting",
    "log_to_stderr",
    "register_after_fork",
    "sub_debug",
    "sub_warning",
)


abstract_sockets_supported = _platform.HAVE_ABSTRACT_SOCKETS


def is_abstract_socket_namespace(address: object) -> bool:
    """Whether an AF_UNIX address names an abstract socket (leading NUL, Linux)."""
    if isinstance(address, bytes):
        return address.startswith(b"\0")
    if isinstance(address, str):
        return address.startswith("\0")
    return False


def get_temp_dir() -> str:
    """A private (0700) temporary directory for this process tree, removed at exit.

    Children inherit the parent's directory; only the process that made it
    removes it.
    """
    config = process.current_process()._config
    tempdir = config.get("tempdir")
    if tempdir is None or not os.path.isdir(tempdir):
        tempdir = _make_private_dir("pymp-")
        info("created temp directory %s", tempdir)
        # After everything else at exit: finalizers may still use the directory.
        Finalize(None, _remove_tree, args=(tempdir,), exitpriority=-100)
        config["tempdir"] = tempdir
    return str(tempdir)


def _make_private_dir(prefix: str) -> str:
    """``tempfile.mkdtemp(prefix=prefix)``, without importing tempfile where it can.

    tempfile brings shutil, random, bz2 and lzma: 0.6 ms of a manager server's
    start when its forked child made the directory for its socket.  The usual
    place (``$TMPDIR``, ``$TEMP``, ``$TMP`` or ``/tmp``, the first set) is tried
    first; tempfile, with its checks and fallbacks, makes it anywhere else.
    """
    import sys

    if "tempfile" not in sys.modules:  # (loaded: its tempfile.tempdir may be set)
        base = next((os.environ[k] for k in ("TMPDIR", "TEMP", "TMP") if os.environ.get(k)), "/tmp")
        for _ in range(4):
            path = os.path.join(base, prefix + os.urandom(6).hex())
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                continue
            except OSError:
                break
            return os.path.abspath(path)
    import tempfile

    return tempfile.mkdtemp(prefix=prefix)


def _remove_tree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


class ForkAwareThreadLock:
    """A ``threading.Lock`` that a forked child gets back released."""

    def __init__(self) -> None:
        self._reset()
        register_after_fork(self, ForkAwareThreadLock._reset)

    if TYPE_CHECKING:  # set per instance by _reset: the lock's own

        def acquire(self, blocking: bool = True, timeout: float = -1) -> bool: ...

        def release(self) -> None: ...

    def _reset(self) -> None:
        self._lock = threading.Lock()
        vars(self).update(acquire=self._lock.acquire, release=self._lock.release)

    def __enter__(self) -> bool:
        return self._lock.__enter__()

    def __exit__(self, *args: Any) -> None:
        self._lock.__exit__(*args)


class ForkAwareLocal(threading.local):
    """A ``threading.local`` emptied in a forked child."""

    def __init__(self) -> None:
        register_after_fork(self, lambda obj: obj.__dict__.clear())

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), ()


def close_all_fds_except(fds: Iterable[int]) -> None:
    """Close every file descriptor of this process but ``fds``."""
    keep = sorted({fd for fd in fds if fd >= 0})
    low = 0
    for fd in [*keep, os.sysconf("SC_OPEN_MAX")]:
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
