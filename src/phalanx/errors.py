"""phalanx's exceptions and warnings, all in one public module.

Every layer raises these (this module imports nothing of phalanx), and the
public modules re-export them where the stdlib has them
(``multiprocessing.ProcessError``, ``multiprocessing.pool.MaybeEncodingError``,
``multiprocessing.managers.RemoteError`` ...).  Their ``__module__`` is this
module, so tracebacks and pickles name ``phalanx.errors``, a path that stays.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import types
    from typing import Any

__all__ = (
    "AbandonedLockWarning",
    "AuthenticationError",
    "BufferTooShort",
    "ClusterSemanticsWarning",
    "ExceptionWithTraceback",
    "LockStateError",
    "MaybeEncodingError",
    "PoolTerminatedError",
    "ProcessError",
    "ProcessStateError",
    "ProtocolError",
    "RemoteError",
    "RemoteTraceback",
    "ServerGoneError",
    "TaskTimeoutError",
    "TimeoutError",
    "WorkerLostError",
    "rebuild_exc",
)


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


class RemoteTraceback(Exception):
    """A pool worker's traceback as text; the ``__cause__`` of an error it raised."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


def rebuild_exc(exc: BaseException, tb: str) -> BaseException:
    """``exc`` with its remote traceback text attached as its cause (unpickling side)."""
    exc.__cause__ = RemoteTraceback(tb)
    return exc


class ExceptionWithTraceback:
    """Carries an exception and its traceback text across processes.

    (Here, not beside the pool that uses it: its pickles name ``rebuild_exc``,
    and a worker pickling a failed task's error must not have to import the
    pool to find it.)
    """

    def __init__(self, exc: BaseException, tb: types.TracebackType | None) -> None:
        import traceback  # (only when a task fails: ``import phalanx`` stays light)

        text = "".join(traceback.format_exception(type(exc), exc, tb))
        self.exc: BaseException = exc
        self.tb: str = f'\n"""\n{text}"""'

    def __reduce__(self) -> tuple[Any, ...]:
        return rebuild_exc, (self.exc, self.tb)


class MaybeEncodingError(Exception):
    """A pool task's result (or exception) could not be pickled to travel back from the worker."""

    exc: str  # repr() of the error
    value: str  # repr() of the result

    def __init__(self, exc: object, value: object) -> None:
        self.exc = repr(exc)
        self.value = repr(value)
        super().__init__(self.exc, self.value)

    def __str__(self) -> str:
        return f"Error sending result: '{self.value}'. Reason: '{self.exc}'"

    def __reduce__(self) -> tuple[object, ...]:
        # Rebuilt from the reprs as they are (the stdlib's, remade through
        # __init__, quotes them a second time on the way back from a worker).
        return _rebuild_encoding_error, (type(self), self.exc, self.value)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self}>"


class RemoteError(Exception):
    """A manager's server could not run a request; ``args[0]`` is its explanation or traceback."""

    def __str__(self) -> str:
        return "\n" + "-" * 75 + "\n" + str(self.args[0]) + "-" * 75


class ServerGoneError(RemoteError, ConnectionError):
    """A manager's server went away (killed, shut down, network lost) during a request."""

    def __str__(self) -> str:
        return str(self.args[0])


class ProtocolError(OSError):
    """A connection's byte stream is not a valid sequence of messages (corrupt or hostile)."""


class ClusterSemanticsWarning(RuntimeWarning):
    """A promise of the local pool that a cluster engine cannot keep (the message says which)."""


def _rebuild_encoding_error(
    cls: type[MaybeEncodingError], exc: str, value: str
) -> MaybeEncodingError:
    made = cls.__new__(cls)
    made.exc, made.value = exc, value
    made.args = (exc, value)
    return made
