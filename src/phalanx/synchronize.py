"""Locks and friends across processes, under the stdlib's ``multiprocessing.synchronize`` names.

``Lock``, ``RLock``, ``Semaphore``, ``BoundedSemaphore`` wrap one ``SemLock``
(a POSIX semaphore in shared memory, see ``_semlock``); ``Condition``,
``Event`` and ``Barrier`` are built from those.  All of them can be passed to
child processes as ``Process`` arguments under every start method; like the
stdlib, they refuse to be pickled for anything else.

Beyond the stdlib: a process that dies holding a ``Lock`` or ``RLock`` does not
block the others forever; a waiter takes the lock over within about a quarter
of a second and an ``AbandonedLockWarning`` says so.  A process that dies
waiting on a ``Condition`` (so on an ``Event``, or inside ``Barrier.wait()``)
does not hang ``notify()``, ``Event.set()`` or the barrier's other parties.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from . import _heap, _runtime, process
from ._semlock import RECURSIVE_MUTEX, SEM_VALUE_MAX, SEMAPHORE
from ._semlock import SemLock as _SemLockCore
from ._waiters import SLOTS, Counter, WaitList, is_dead, my_start_time
from .errors import AbandonedLockWarning, LockStateError

__all__ = (
    "SEM_VALUE_MAX",
    "AbandonedLockWarning",
    "Barrier",
    "BoundedSemaphore",
    "BrokenBarrierError",
    "Condition",
    "Event",
    "Lock",
    "RLock",
    "Semaphore",
)

_T = TypeVar("_T")

BrokenBarrierError = threading.BrokenBarrierError


class SemLock:
    """Base of the lock classes: ``acquire``/``release`` and the context manager."""

    def __init__(
        self, kind: int, value: int, maxvalue: int, *, ctx: Any = None, lock: bool = False
    ) -> None:
        self._semlock = _SemLockCore(kind, value, maxvalue, lock=lock)
        self._make_methods()

    if TYPE_CHECKING:  # set per instance by _make_methods

        def acquire(self, block: bool = True, timeout: float | None = None) -> bool: ...

        def release(self) -> None: ...

    def _make_methods(self) -> None:
        # Bound methods of the core: no extra Python frame per call.
        vars(self).update(acquire=self._semlock.acquire, release=self._semlock.release)

    # Through the bound methods _make_methods keeps on this object: one lookup
    # fewer than through _semlock (35 ns of the 250 a `with lock:` took).
    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *args: object) -> None:
        self.release()

    def __getstate__(self) -> Any:
        return self._semlock

    def __setstate__(self, state: Any) -> None:
        self._semlock = state
        self._make_methods()


class Semaphore(SemLock):
    """A counter of available units: ``acquire`` takes one (blocking at zero)."""

    def __init__(self, value: int = 1, *, ctx: Any = None) -> None:
        _check_value(value)
        super().__init__(SEMAPHORE, value, -1, ctx=ctx)

    def get_value(self) -> int:
        """The current count (racy by nature: for diagnostics)."""
        return self._semlock._get_value()

    def __repr__(self) -> str:
        try:
            value: object = self._semlock._get_value()
        except Exception:
            value = "unknown"
        return f"<{type(self).__name__}(value={value})>"


class BoundedSemaphore(Semaphore):
    """A ``Semaphore`` whose ``release`` refuses to exceed the initial value."""

    def __init__(self, value: int = 1, *, ctx: Any = None) -> None:
        _check_value(value)
        SemLock.__init__(self, SEMAPHORE, value, value, ctx=ctx)

    def __repr__(self) -> str:
        try:
            value: object = self._semlock._get_value()
        except Exception:
            value = "unknown"
        return f"<{type(self).__name__}(value={value}, maxvalue={self._semlock.maxvalue})>"


def _check_value(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"semaphore value must be an int (got {value!r})")
    if value < 0 or value > SEM_VALUE_MAX:
        raise ValueError(
            f"semaphore initial value must be >= 0 and <= {SEM_VALUE_MAX} (got {value})"
        )


def _owner_name(lock: _SemLockCore) -> str:
    if lock._is_mine():
        name = process.current_process().name
        thread = threading.current_thread().name
        return name if thread == "MainThread" else f"{name}|{thread}"
    if not lock._is_zero():
        return "None"
    if lock._count() > 0:
        return "SomeOtherThread"
    return "SomeOtherProcess"


class Lock(SemLock):
    """A mutual-exclusion lock shared between processes (any thread may release it)."""

    def __init__(self, *, ctx: Any = None) -> None:
        super().__init__(SEMAPHORE, 1, 1, ctx=ctx, lock=True)

    def __repr__(self) -> str:
        try:
            name = _owner_name(self._semlock)
        except Exception:
            name = "unknown"
        return f"<{type(self).__name__}(owner={name})>"


class RLock(SemLock):
    """A lock that its owning thread may acquire again; released as many times."""

    def __init__(self, *, ctx: Any = None) -> None:
        super().__init__(RECURSIVE_MUTEX, 1, 1, ctx=ctx, lock=True)

    def __repr__(self) -> str:
        count: object
        try:
            name = _owner_name(self._semlock)
            count = self._semlock._count() if self._semlock._is_mine() else 0
            if name in ("SomeOtherThread", "SomeOtherProcess"):
                count = "nonzero"
        except Exception:
            name, count = "unknown", 0
        return f"<{type(self).__name__}({name}, {count})>"


class Condition:
    """A condition variable across processes (``wait``/``notify`` under ``lock``).

    Each waiter has a slot of its own in shared memory (see ``_waiters``):
    ``notify(n)`` wakes the n oldest waiters still alive and never waits for
    them, so a waiter killed while waiting cannot hang the notifier (the
    stdlib's ``notify()`` waits for every sleeper it woke, forever).
    """

    def __init__(self, lock: Any = None, *, ctx: Any = None) -> None:
        self._lock = lock or RLock(ctx=ctx)
        self._waiters = WaitList()
        self._make_methods()

    def __getstate__(self) -> Any:
        return (self._lock, self._waiters)

    def __setstate__(self, state: Any) -> None:
        self._lock, self._waiters = state
        self._make_methods()

    if TYPE_CHECKING:  # set per instance by _make_methods: the lock's own

        def acquire(self, block: bool = True, timeout: float | None = None) -> bool: ...

        def release(self) -> None: ...

    def _make_methods(self) -> None:
        vars(self).update(acquire=self._lock.acquire, release=self._lock.release)

    def __enter__(self) -> bool:
        return bool(self._lock.__enter__())

    def __exit__(self, *args: object) -> None:
        self._lock.__exit__(*args)

    # The stdlib counts sleepers in three semaphores, and CPython's suite reads
    # them: the same numbers, from the table of waiters.
    @property
    def _sleeping_count(self) -> Counter:
        return Counter(self._waiters.waiting)

    @property
    def _woken_count(self) -> Counter:
        return Counter(int)

    @property
    def _wait_semaphore(self) -> Counter:
        return Counter(int)

    def __repr__(self) -> str:
        try:
            waiters: object = self._waiters.waiting()
        except Exception:
            waiters = "unknown"
        return f"<{type(self).__name__}({self._lock}, {waiters})>"

    def _check_owned(self, what: str) -> None:
        if not self._lock._semlock._is_mine():
            raise LockStateError(f"must acquire() condition before using {what}()")

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, wait for a notify (or ``timeout``), re-acquire; False on timeout."""
        self._check_owned("wait")
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        lock = self._lock
        # Release the lock completely, however many times we hold it.
        count = lock._semlock._count()
        polls = 0
        while True:
            slot = self._waiters.enter()
            for _ in range(count):
                lock.release()
            try:
                self._waiters.sleep(slot, deadline, polls)
            finally:
                for _ in range(count):
                    lock.acquire()
                notified = self._waiters.leave(slot)
            if notified or slot is not None:
                return notified
            # No slot (too many waiters): that was one poll; go on until the deadline.
            if deadline is not None and time.monotonic() >= deadline:
                return False
            polls += 1

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` waiters, oldest first (the caller holds the lock)."""
        self._check_owned("notify")
        self._waiters.notify(n)

    def notify_all(self) -> None:
        """Wake every waiter."""
        self.notify(n=SEM_VALUE_MAX)

    def wait_for(self, predicate: Callable[[], _T], timeout: float | None = None) -> _T:
        """Wait until ``predicate()`` is true or ``timeout`` passes; returns its last value."""
        return _runtime.wait_for(self.wait, predicate, timeout)


def _condition(lock: Any, slots: int) -> Condition:
    """A ``Condition`` on ``lock`` with room for ``slots`` waiters."""
    cond = Condition.__new__(Condition)
    cond._lock = lock
    cond._waiters = WaitList(slots)
    cond._make_methods()
    return cond


class Event:
    """A flag across processes: ``set``, ``clear``, ``is_set`` and ``wait`` for it."""

    def __init__(self, *, ctx: Any = None) -> None:
        self._cond = Condition(Lock(ctx=ctx), ctx=ctx)
        self._flag = Semaphore(0, ctx=ctx)

    def is_set(self) -> bool:
        """Whether the flag is set."""
        with self._cond:
            if self._flag.acquire(False):
                self._flag.release()
                return True
            return False

    def set(self) -> None:
        """Set the flag and wake every process waiting for it."""
        with self._cond:
            self._flag.acquire(False)
            self._flag.release()
            self._cond.notify_all()

    def clear(self) -> None:
        """Reset the flag: ``wait()`` blocks again until the next ``set()``."""
        with self._cond:
            self._flag.acquire(False)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the flag is set or ``timeout`` passes; returns the flag."""
        with self._cond:
            if self._flag.acquire(False):
                self._flag.release()
            else:
                self._cond.wait(timeout)
            if self._flag.acquire(False):
                self._flag.release()
                return True
            return False

    def __repr__(self) -> str:
        state = "set" if self.is_set() else "unset"
        return f"<{type(self).__name__} at {id(self):#x} {state}>"


# Barrier states, kept in shared memory, then a seat per party: who is inside
# wait() (pid and start time; 0: empty).  How many are inside is how many
# seats are taken: arriving and leaving are one store each, so a party killed
# at any moment is either in (and noticed once dead) or not.
_FILLING, _DRAINING, _RESETTING, _BROKEN = 0, 1, -1, -2
_STATE = struct.Struct("ii")
_SEAT = struct.Struct("iiQ")  # pid, pad, start
_DEAD_PARTY_CHECK = 0.25  # seconds between looks for parties that died inside wait()


class Barrier:
    """``parties`` processes (or threads) wait until all have arrived, then go on together.

    A party killed inside ``wait()`` still counts as arrived for its cycle;
    the others are not held up by it (its seat is cleared once the cycle is
    over), where the stdlib's barrier would hang.
    """

    def __init__(
        self,
        parties: int,
        action: Callable[[], object] | None = None,
        timeout: float | None = None,
        *,
        ctx: Any = None,
    ) -> None:
        if isinstance(parties, bool) or not isinstance(parties, int) or parties < 1:
            raise ValueError(f"parties must be an int >= 1 (got {parties!r})")
        if action is not None and not callable(action):
            raise TypeError(f"action must be callable or None (got {action!r})")
        self._parties = parties
        self._action = action
        self._timeout = timeout
        # Room for every party to wait in the condition (and a cycle's worth more).
        self._cond = _condition(Lock(ctx=ctx), max(SLOTS, 2 * parties))
        self._shared = _heap.malloc(_STATE.size + _SEAT.size * parties)

    def __getstate__(self) -> Any:
        return (self._parties, self._action, self._timeout, self._cond, self._shared)

    def __setstate__(self, state: Any) -> None:
        self._parties, self._action, self._timeout, self._cond, self._shared = state

    def _get(self) -> tuple[int, int]:
        state, count = _STATE.unpack_from(self._shared.view())
        return state, count

    @property
    def _state(self) -> int:
        return self._get()[0]

    @_state.setter
    def _state(self, value: int) -> None:
        _STATE.pack_into(self._shared.view(), 0, value, self._get()[1])

    @property
    def _count(self) -> int:
        """Parties inside wait(): the seats taken (a seat is taken and left in one store)."""
        view = self._shared.view()
        seats = range(_STATE.size, _STATE.size + _SEAT.size * self._parties, _SEAT.size)
        return sum(1 for offset in seats if _SEAT.unpack_from(view, offset)[0])

    def wait(self, timeout: float | None = None) -> int:
        """Wait for all parties; returns this party's arrival index (0 .. parties-1).

        Raises ``BrokenBarrierError`` if the barrier is (or gets) broken, reset
        or aborted, or if ``timeout`` (default: the barrier's) passes.
        """
        if timeout is None:
            timeout = self._timeout
        with self._cond:
            self._enter()
            index = self._count
            seat = self._sit()  # arrived: a party killed from here on still counts
            try:
                if index + 1 == self._parties:
                    self._release()
                else:
                    self._wait(timeout)
                return index
            finally:
                self._stand(seat)
                self._exit()

    def _enter(self) -> None:
        while self._state in (_DRAINING, _RESETTING):
            # The previous cycle is still leaving; a party that died inside it
            # never will: look for those now and then.
            if not self._cond.wait(_DEAD_PARTY_CHECK):
                self._clear_dead_seats()
        if self._state < 0:
            raise BrokenBarrierError

    def _sit(self) -> int | None:
        view = self._shared.view()
        for seat in range(self._parties):
            offset = _STATE.size + _SEAT.size * seat
            if _SEAT.unpack_from(view, offset)[0] == 0:
                _SEAT.pack_into(view, offset, os.getpid(), 0, my_start_time())
                return seat
        return None  # (cannot happen: at most ``parties`` are inside at once)

    def _stand(self, seat: int | None) -> None:
        if seat is not None:
            _SEAT.pack_into(self._shared.view(), _STATE.size + _SEAT.size * seat, 0, 0, 0)

    def _clear_dead_seats(self) -> None:
        """Parties that died inside wait() leave now: the cycle can end without them."""
        view = self._shared.view()
        for seat in range(self._parties):
            pid, _pad, start = _SEAT.unpack_from(view, _STATE.size + _SEAT.size * seat)
            if pid and is_dead(pid, start):
                self._stand(seat)
        self._exit()

    def _release(self) -> None:
        try:
            if self._action is not None:
                self._action()
            self._state = _DRAINING
            self._cond.notify_all()
        except BaseException:
            self._break()
            raise

    def _wait(self, timeout: float | None) -> None:
        if not self._cond.wait_for(lambda: self._state != _FILLING, timeout):
            self._break()
            raise BrokenBarrierError
        if self._state < 0:
            raise BrokenBarrierError

    def _exit(self) -> None:
        if self._count == 0 and self._state in (_RESETTING, _DRAINING):
            self._state = _FILLING
            self._cond.notify_all()

    def reset(self) -> None:
        """Return to the empty state; current waiters get ``BrokenBarrierError``."""
        with self._cond:
            if self._count > 0:
                if self._state in (_FILLING, _BROKEN):
                    self._state = _RESETTING
            else:
                self._state = _FILLING
            self._cond.notify_all()

    def abort(self) -> None:
        """Break the barrier: current and future waiters get ``BrokenBarrierError``."""
        with self._cond:
            self._break()

    def _break(self) -> None:
        self._state = _BROKEN
        self._cond.notify_all()

    @property
    def parties(self) -> int:
        """How many processes (or threads) must call ``wait()`` to pass the barrier."""
        return self._parties

    @property
    def n_waiting(self) -> int:
        """How many parties are waiting now."""
        return self._count if self._state == _FILLING else 0

    @property
    def broken(self) -> bool:
        """Whether the barrier is broken (``abort()``, or a waiter timed out)."""
        return self._state == _BROKEN

    def __repr__(self) -> str:
        if self.broken:
            return f"<{type(self).__name__} at {id(self):#x}: broken>"
        return f"<{type(self).__name__} at {id(self):#x}: waiters={self.n_waiting}/{self.parties}>"
