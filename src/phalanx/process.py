"""Process objects: ``BaseProcess``, the current and parent process, and children.

Layer 1.  A ``BaseProcess`` delegates the OS work to a *Popen* object chosen by
its start method (see ``_popen/``); the Popen protocol is::

    pid: int            sentinel: int            returncode: int | None
    poll() -> int | None                         wait(timeout) -> int | None
    terminate() / kill() / close()

``_bootstrap`` is what every start method runs in the child.
"""

from __future__ import annotations

import atexit
import itertools
import math
import os
import signal
import sys
import threading
import time
from _weakrefset import WeakSet
from collections.abc import Callable, Iterable, Mapping

from . import _platform, _runtime, _stdlib
from ._wire.pickling import get_spawning_popen
from .errors import ProcessStateError

TYPE_CHECKING = False  # typing is not imported at run time: see context.py
if TYPE_CHECKING:
    from typing import Any, Protocol

__all__ = (
    "AuthenticationString",
    "BaseProcess",
    "active_children",
    "current_process",
    "parent_process",
)

try:
    ORIGINAL_DIR: str | None = os.path.abspath(os.getcwd())
except OSError:
    ORIGINAL_DIR = None


if TYPE_CHECKING:

    class Popen(Protocol):
        """What a start method provides for one started child."""

        pid: int
        sentinel: int
        returncode: int | None

        def poll(self) -> int | None: ...
        def wait(self, timeout: float | None = None) -> int | None: ...
        def terminate(self) -> None: ...
        def kill(self) -> None: ...
        def close(self) -> None: ...


class AuthenticationString(bytes):
    """An authkey: bytes that refuse to be pickled except to start a child."""

    def __reduce__(self) -> tuple[Any, ...]:
        # (Or for the stdlib's, which sees phalanx's current process in a
        # phalanx child and pickles its authkey for a stdlib child.)
        if get_spawning_popen() is None and not _stdlib.spawning():
            raise TypeError(
                "Pickling an AuthenticationString object is disallowed for security reasons"
            )
        return AuthenticationString, (bytes(self),)


def check_timeout(timeout: object) -> float | None:
    """Validate a timeout argument: None, or a real number (negative means 'do not wait')."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None (got {timeout!r})")
    if math.isnan(timeout):
        raise ValueError(f"timeout must be a number of seconds or None (got {timeout!r})")
    return float(timeout)


class BaseProcess:
    """A process object, with the API of ``threading.Thread``.

    Args:
        group: Always None (there for ``threading.Thread``'s signature).
        target: The callable ``run()`` calls in the child.  Lambdas, closures and
            functions of ``__main__`` work under every start method.
        name: The process's name (default ``Process-N``, ``N`` a counter).
        args: Positional arguments for ``target``.
        kwargs: Keyword arguments for ``target``.
        daemon: A daemonic child is terminated (not joined) when its parent
            exits, and ends with its parent even when the parent is killed.
            Default: inherited from the creating process.

    Subclasses override ``run()`` instead of passing ``target``.  ``start()``
    starts the child, ``join()`` waits for it, ``exitcode`` says how it ended
    (``-N``: killed by signal ``N``).  The start method is the default one, or
    the context's (``get_context("spawn").Process``).  ``_Popen`` (set by the
    context classes) starts the child.

    Example::

        p = Process(target=print, args=("hello",))
        p.start()
        p.join()
        print(p.exitcode)  # 0
    """

    _start_method: str | None = None
    _exits_with_parent = False  # it watches its parent itself (pool workers): see start()
    # Ends when its parent dies, however the parent dies (SIGKILL included):
    # set for the manager's server; daemonic children always do (see _bootstrap).
    _ends_with_parent = False
    _config: dict[str, Any]
    _popen: Popen | None

    @staticmethod
    def _Popen(process_obj: BaseProcess) -> Popen:
        raise NotImplementedError("BaseProcess has no start method; use Process")

    def __init__(
        self,
        group: None = None,
        target: Callable[..., object] | None = None,
        name: str | None = None,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] = {},  # the stdlib's signature; never mutated
        *,
        daemon: bool | None = None,
    ) -> None:
        if group is not None:
            raise ValueError(f"group argument must be None for now (got {group!r})")
        if target is not None and not callable(target):
            raise TypeError(f"target must be callable or None (got {target!r})")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a string (got {name!r})")
        count = next(_counter)
        self._identity: tuple[int, ...] = (*_current_process._identity, count)
        self._config = _current_process._config.copy()
        self._parent_pid: int | None = os.getpid()
        self._parent_name = _current_process.name
        self._popen = None
        self._closed = False
        self._target = target
        self._args = tuple(args)
        self._kwargs = dict(kwargs) if kwargs else {}
        self._name = name or type(self).__name__ + "-" + ":".join(str(i) for i in self._identity)
        if daemon is not None:
            self.daemon = daemon
        _dangling.add(self)

    def _check_closed(self) -> None:
        if self._closed:
            raise ProcessStateError(f"process object {self._name!r} is closed")

    def _check_started(self, what: str) -> Popen:
        if self._parent_pid != os.getpid():
            raise ProcessStateError(f"can only {what} a child process ({self._name!r} is not ours)")
        if self._popen is None:
            raise ProcessStateError(f"can only {what} a started process ({self._name!r} is not)")
        return self._popen

    def run(self) -> None:
        """The code run in the child: calls ``target(*args, **kwargs)``.  Override freely."""
        if self._target:
            self._target(*self._args, **self._kwargs)

    def start(self) -> None:
        """Start the child process (non-blocking).  Once only per process object."""
        self._check_closed()
        if self._popen is not None:
            raise ProcessStateError(f"cannot start a process twice ({self._name!r} is started)")
        if self._parent_pid != os.getpid():
            raise ProcessStateError(
                f"can only start a process object created by the current process "
                f"({self._name!r} was created by pid {self._parent_pid})"
            )
        # A daemonic process is killed at its parent's exit, which would orphan
        # its children; a child that exits with its parent by itself (a pool
        # worker) is safe, so nested pools work.
        if _current_process._config.get("daemon") and not self._exits_with_parent:
            raise ProcessStateError(
                "daemonic processes are not allowed to have children "
                f"({_current_process.name!r} is daemonic)"
            )
        _cleanup()
        self._popen = self._Popen(self)
        self._sentinel: int | None = self._popen.sentinel
        # Drop the target and its arguments so the parent does not keep them
        # alive (bpo-30775); the child has its own copy.
        del self._target, self._args, self._kwargs
        _children.add(self)
        _stdlib.child_started(self)

    def terminate(self) -> None:
        """Send SIGTERM to the child; returns at once (use ``join()`` to wait)."""
        self._check_closed()
        self._check_started("terminate").terminate()

    def kill(self) -> None:
        """Send SIGKILL to the child; returns at once (use ``join()`` to wait)."""
        self._check_closed()
        self._check_started("kill").kill()

    def join(self, timeout: float | None = None) -> None:
        """Wait until the child ends, or ``timeout`` seconds (``None``: forever; < 0: no wait).

        Returns None either way: check ``exitcode`` or ``is_alive()`` to tell.
        """
        self._check_closed()
        seconds = check_timeout(timeout)
        popen = self._check_started("join")
        if popen.wait(seconds) is not None:
            _forget_child(self)

    def is_alive(self) -> bool:
        """Whether the child has started and not ended yet (non-blocking)."""
        self._check_closed()
        if self is _current_process:
            return True
        if self._parent_pid != os.getpid():
            raise ProcessStateError(f"can only test a child process ({self._name!r} is not ours)")
        if self._popen is None:
            return False
        if self._popen.poll() is None:
            return True
        _forget_child(self)
        return False

    def close(self) -> None:
        """Release the resources held for the child.  Raises if it is still running."""
        if self._popen is not None:
            if self._popen.poll() is None:
                raise ProcessStateError(
                    f"Cannot close a process while it is still running ({self._name!r}). "
                    "You should first call join() or terminate()."
                )
            self._popen.close()
            self._popen = None
            del self._sentinel
            _forget_child(self)
        self._closed = True

    @property
    def name(self) -> str:
        return self._name

    @name.setter
    def name(self, name: str) -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be a string (got {name!r})")
        self._name = name

    @property
    def daemon(self) -> bool:
        """Daemonic children are terminated, not joined, when their parent exits."""
        return bool(self._config.get("daemon", False))

    @daemon.setter
    def daemon(self, daemonic: bool) -> None:
        if self._popen is not None:
            raise ProcessStateError(f"process has already started ({self._name!r})")
        self._config["daemon"] = daemonic

    @property
    def authkey(self) -> bytes:
        return self._config["authkey"]  # type: ignore[no-any-return]

    @authkey.setter
    def authkey(self, authkey: bytes) -> None:
        if not isinstance(authkey, (bytes, bytearray)):
            raise TypeError(f"authkey must be bytes (got {type(authkey).__name__})")
        self._config["authkey"] = AuthenticationString(authkey)

    @property
    def exitcode(self) -> int | None:
        """None while running; else the exit code, or ``-N`` if killed by signal N."""
        self._check_closed()
        if self._popen is None:
            return None
        return self._popen.poll()

    @property
    def ident(self) -> int | None:
        self._check_closed()
        if self is _current_process:
            return os.getpid()
        return self._popen.pid if self._popen is not None else None

    pid = ident

    @property
    def sentinel(self) -> int:
        """An fd that becomes readable when the child ends (a pidfd on Linux)."""
        self._check_closed()
        sentinel: int | None = getattr(self, "_sentinel", None)
        if sentinel is None:
            raise ProcessStateError(f"process not started ({self._name!r})")
        return sentinel

    def __repr__(self) -> str:
        exitcode = None
        if self is _current_process:
            status = "started"
        elif self._closed:
            status = "closed"
        elif self._parent_pid != os.getpid():
            status = "unknown"
        elif self._popen is None:
            status = "initial"
        else:
            exitcode = self._popen.poll()
            status = "started" if exitcode is None else "stopped"
        info = [type(self).__name__, f"name={self._name!r}"]
        if self._popen is not None:
            info.append(f"pid={self._popen.pid}")
        info.append(f"parent={self._parent_pid}")
        info.append(status)
        if exitcode is not None:
            info.append(f"exitcode={_platform.exitcode_to_name(exitcode)}")
        if self.daemon:
            info.append("daemon")
        return "<{}>".format(" ".join(info))

    # -- child side -------------------------------------------------------------------

    def _watches_parent(self) -> bool:
        """Whether the child ends when its parent dies (see ``_end_with_parent``)."""
        return (self.daemon or self._ends_with_parent) and not self._exits_with_parent

    def _bootstrap(self, parent_sentinel: int | None = None, after_fork: bool = False) -> int:
        """Run in the new child: become the current process, ``run()``, clean up.

        Returns the exit code; the start method then ends the process with it.
        """
        global _current_process, _parent_process, _counter, _children
        exitcode = 1
        try:
            _children = set()
            _counter = itertools.count(1)
            _runtime.close_stdin()
            _current_process = self
            _parent_process = _ParentProcess(self._parent_name, self._parent_pid, parent_sentinel)
            if after_fork:
                # The parent's finalizers are not ours; the hooks then register
                # the child's own.  (A spawned child has only its own already,
                # some made while its process object was unpickled.)
                _runtime.clear_finalizers()
                _runtime.run_after_forkers()
            _stdlib.adopt_child(self, _parent_process, after_fork)
            for hook in _bootstrap_hooks:
                hook(self)
            if parent_sentinel is not None and self._watches_parent():
                _end_with_parent(parent_sentinel)
            _runtime.info("child process calling self.run()")
            try:
                self.run()
                exitcode = 0
            finally:
                _exit_function()
                _stdlib.child_exiting()
        except SystemExit as exc:
            exitcode = _exit_status(exc.code)
        except BaseException:
            exitcode = 1
            sys.stderr.write(f"Process {self.name}:\n")
            import traceback

            traceback.print_exc()
        finally:
            _join_threads()
            _runtime.info("process exiting with exitcode %d", exitcode)
            flush_std_streams()
        return exitcode


def _end_with_parent(sentinel: int) -> None:
    """End this process when its parent dies: SIGTERM, then SIGKILL if it lingers.

    What the parent would have done at its own exit (terminate its daemonic
    children, shut its manager down), had it not been killed; else these
    live on as orphans, and the resource tracker waits for them before it
    cleans up.  A thread, not ``PR_SET_PDEATHSIG``: that fires when the
    *thread* that started the child exits, and under forkserver the OS
    parent is the fork server.
    """

    def watch() -> None:
        _platform.wait_readable([sentinel], None)  # EOF: the parent is gone
        _runtime.info("parent process died: ending with it")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(PARENT_DEATH_GRACE)
        os.kill(os.getpid(), signal.SIGKILL)

    # A bare thread: threading.Thread.start() waits until the thread runs (a
    # hand-over of the CPU on the start-up path of every daemonic child and
    # manager); this one needs no bookkeeping, and the interpreter never waits
    # for it (as for a daemon thread), nor does threading.enumerate() list it.
    import _thread

    _thread.start_new_thread(watch, ())


PARENT_DEATH_GRACE = 2.0  # seconds from SIGTERM to SIGKILL once the parent is gone


def _exit_status(code: object) -> int:
    """Map ``sys.exit(code)`` to an exit status the way the interpreter does."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    try:
        sys.stderr.write(str(code) + "\n")
    except Exception:
        pass
    return 1


def flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (AttributeError, ValueError, OSError):
            pass


def _join_threads() -> None:
    """Wait for the non-daemon threads the child started, as interpreter exit does."""
    me = threading.current_thread()
    while True:
        pending = [t for t in threading.enumerate() if t is not me and not t.daemon]
        pending = [t for t in pending if t.is_alive()]
        if not pending:
            return
        for thread in pending:
            thread.join()


class _MainProcess(BaseProcess):
    def __init__(self) -> None:
        self._identity = ()
        self._name = "MainProcess"
        self._parent_pid = None
        self._popen = None
        self._closed = False
        self._config = {"authkey": AuthenticationString(os.urandom(32)), "semprefix": "/mp"}

    def close(self) -> None:
        pass


class _ParentProcess(BaseProcess):
    """The parent as seen from a child: name, pid, and a sentinel for its death."""

    def __init__(self, name: str, pid: int | None, sentinel: int | None) -> None:
        self._identity = ()
        self._name = name
        self._pid = pid
        self._parent_pid = None
        self._popen = None
        self._closed = False
        self._sentinel = sentinel
        self._config = {}

    def is_alive(self) -> bool:
        if self._sentinel is None:
            return True
        return not _platform.wait_readable([self._sentinel], 0)

    @property
    def ident(self) -> int | None:
        return self._pid

    pid = ident

    def join(self, timeout: float | None = None) -> None:
        """Wait until the parent ends, or ``timeout`` seconds."""
        if self._sentinel is not None:
            _platform.wait_readable([self._sentinel], check_timeout(timeout))


_current_process: BaseProcess = _MainProcess()
_parent_process: BaseProcess | None = None
_counter = itertools.count(1)
_children: set[BaseProcess] = set()
_dangling: WeakSet[BaseProcess] = WeakSet()
# Called with the process object in a new child before run(); the context
# layer uses it to make the child's default start method the parent's choice.
_bootstrap_hooks: list[Callable[[BaseProcess], None]] = []


def current_process() -> BaseProcess:
    """The process object of the running process."""
    return _current_process


def parent_process() -> BaseProcess | None:
    """The parent's process object, or None in the main process."""
    return _parent_process


def active_children() -> list[BaseProcess]:
    """Children that are still running (joins, i.e. reaps, the ones that ended)."""
    _cleanup()
    return list(_children)


def _forget_child(p: BaseProcess) -> None:
    """``p`` ended and was reaped: neither we nor the stdlib's bookkeeping list it."""
    _children.discard(p)
    _stdlib.child_ended(p)


def _cleanup() -> None:
    for p in list(_children):
        if p._popen is not None and p._popen.poll() is not None:
            _forget_child(p)


def _exit_function() -> None:
    """At exit: finalizers, then terminate daemonic children and join the others."""
    if _runtime.is_exiting() or _stdlib.defer_exit(_exit_function):
        return
    _runtime.set_exiting()
    _runtime.run_finalizers(0)
    for p in active_children():
        if p.daemon and p._popen is not None:
            _runtime.info("calling terminate() for daemon %s", p.name)
            p._popen.terminate()
    for p in active_children():
        _runtime.info("calling join() for process %s", p.name)
        p.join()
    _runtime.run_finalizers()


atexit.register(_exit_function)
