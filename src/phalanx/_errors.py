"""Exceptions shared by every layer (re-exported by the public modules)."""

from __future__ import annotations


class ProcessError(Exception):
    """Base class of phalanx's errors (same name and role as the stdlib's)."""


class BufferTooShort(ProcessError):
    """``recv_bytes_into`` got a message longer than the buffer (``args[0]`` holds it)."""


class TimeoutError(ProcessError):
    """A blocking call ran out of time."""


class AuthenticationError(ProcessError):
    """The peer failed (or refused) the challenge/response handshake."""


class ProcessStateError(ProcessError, ValueError, AssertionError):
    """A process method was called in a state where it makes no sense.

    (``start()`` twice, ``join()`` before ``start()``, use after ``close()`` ...)
    The stdlib raises a bare ``AssertionError`` or ``ValueError`` for these
    depending on the method; this class derives from both so every existing
    ``except`` clause keeps working, and unlike an ``assert`` it is raised
    under ``python -O`` too.
    """


class AbandonedLockWarning(RuntimeWarning):
    """A lock was taken over from a process that died while holding it.

    The data the lock protected may be half-updated.  Turn it into an error
    with ``warnings.simplefilter("error", AbandonedLockWarning)``: the
    ``acquire()`` that recovered the lock then raises it and leaves the lock
    released.
    """


class LockStateError(ProcessError, AssertionError, RuntimeError):
    """A lock or condition was used by a thread that does not hold it.

    The stdlib raises ``AssertionError`` here and ``threading`` raises
    ``RuntimeError``; this class is both, and is raised under ``python -O`` too.
    """


class WorkerLostError(ProcessError):
    """A pool worker died while it held a task; that task fails with this error.

    Raised in the caller for exactly the tasks the dead worker held (the pool
    replaces the worker and goes on).  ``pid``, ``exitcode`` (negative: killed
    by a signal) and ``signal`` (its name, or None) describe the death;
    ``task`` describes the task.
    """

    def __init__(
        self,
        message: str,
        pid: int | None = None,
        exitcode: int | None = None,
        signal: str | None = None,
        task: str | None = None,
    ) -> None:
        super().__init__(message)
        self.pid = pid
        self.exitcode = exitcode
        self.signal = signal
        self.task = task

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.args[0], self.pid, self.exitcode, self.signal, self.task))


class TaskTimeoutError(TimeoutError):
    """A pool task ran longer than its ``timeout=``: its worker was killed and replaced."""


class PoolTerminatedError(ProcessError):
    """The pool was terminated (or broken) before this task could finish."""
