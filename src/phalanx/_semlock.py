"""``SemLock``: the one synchronization primitive everything else is built on (layer 2).

A 128-byte slot of the shared heap::

    offset  field
    0       sem_t        the semaphore (a lock's: its doorbell, see below)
    32      owner_pid    int32: who holds a lock (0: nobody)
    36      (padding)
    40      owner_tid    uint64: the owner's thread ident
    48      owner_start  uint64: the owner's process start time (pid reuse guard)
    56      kind         int32: RECURSIVE_MUTEX or SEMAPHORE
    60      maxvalue     int32: 1 for locks, -1 unbounded
    64      guard        a robust mutex (guarded locks), else a sem_t (recovery guard)
    120     waiters      int32: a lock's sleepers on its semaphore
    124     protocol     int32: a lock's, PROTOCOL_GUARDED or PROTOCOL_ATOMIC

Semaphores are a POSIX semaphore (``sem_init`` with pshared=1); their units
are anybody's.

**Locks** (``lock=True``) record their owner, so that taking the lock and
recording who took it are one step: a process killed at any moment leaves
the lock either free or held by a dead owner on record.  Made where the C
extension is loaded, a lock is *atomic*: ``owner_pid`` and the word after it
are one 64-bit owner word (the pid, and the low half of the process start
time where the padding was), taken by compare-and-swap from 0 and given back
by exchange, all in ``_speedups.c`` (which says how waiters sleep and take
over from a dead owner).  A process on the pure path handed an atomic lock
loads the extension for it (``_fast.load``).  Made on the pure path, where
robust mutexes exist (Linux), a lock is *guarded*: it is held when
``owner_pid`` is set, and that word only changes under the guard, a robust
process-shared mutex held for a few instructions; a guard that a process
died holding is handed to the next one (``EOWNERDEAD``).  Waiters sleep on
the semaphore, which a release posts when someone sleeps.  Elsewhere a lock
is the semaphore itself, with
the owner recorded right after it is taken and cleared right before it is
given back (a process killed between the two steps goes unnoticed there, and
the lock stays taken, as with the stdlib).

**Owner death.**  A blocked waiter wakes every ``OWNER_CHECK_INTERVAL``
seconds and checks that the recorded owner still exists (pid and start
time).  If it is gone, exactly one waiter takes the lock over and an
``AbandonedLockWarning`` is issued: the data the lock protected may be
half-updated.  The recoverer records itself as the owner before it warns, so
a recoverer that dies in turn (even inside the warning) is taken over from
like any owner.
"""

from __future__ import annotations

import ctypes
import os
import struct
import threading
import time
import warnings
from typing import Any

from . import _heap, _platform, _runtime
from ._fast import load as _load_speedups
from ._fast import speedups as _speedups
from ._wire.pickling import get_spawning_popen
from .errors import AbandonedLockWarning, LockStateError

__all__ = ("RECURSIVE_MUTEX", "SEMAPHORE", "SEM_VALUE_MAX", "SemLock")

RECURSIVE_MUTEX = 0
SEMAPHORE = 1
SEM_VALUE_MAX = 2**31 - 1
OWNER_CHECK_INTERVAL = 0.25
_SLOT_SIZE = 128


class _Slot(ctypes.Structure):
    _fields_ = (
        ("sem", ctypes.c_byte * 32),
        ("owner_pid", ctypes.c_int32),
        ("_pad", ctypes.c_int32),
        ("owner_tid", ctypes.c_uint64),
        ("owner_start", ctypes.c_uint64),
        ("kind", ctypes.c_int32),
        ("maxvalue", ctypes.c_int32),
        ("guard", ctypes.c_byte * 32),
    )


# Bound once: the uncontended acquire/release pair is the hot path.
_trywait = _platform.raw_sem_trywait
_post = _platform.raw_sem_post
_get_ident = threading.get_ident
_mutex_trylock = _platform.mutex_trylock
_mutex_unlock = _platform.mutex_unlock
_GUARDED = _platform.HAVE_ROBUST_MUTEX  # locks under a robust guard (see the docstring)
# A guard is held for a few bytecodes; if its holder is not running (a busy
# machine), spinning only takes the CPU it needs: sleep on it soon.
_GUARD_SPINS = 4
# Reads of a held lock's owner word (a few microseconds of them) before a waiter
# sleeps, where a CPU is free: a critical section such as a Value's ``+= 1`` ends
# sooner than a sleep on the semaphore and its wake-up would (two processes
# taking turns at a Value: 3.2 us a turn against 3.7 without).
_OWNER_WATCH = 200

_OWNER = slice(32, 56)  # owner_pid .. owner_start, written in one copy
_OWNER_RECORD = struct.Struct("=iiQQ")
_WAITERS = slice(120, 124)
_PROTOCOL = slice(124, 128)
PROTOCOL_GUARDED = 0  # (and every semaphore, and a lock where robust mutexes are missing)
PROTOCOL_ATOMIC = 1
# Locks made here are atomic where the extension is loaded (and has the protocol).
_MAKE_ATOMIC = _speedups is not None and hasattr(_speedups, "MODE_ATOMIC")

# The owner record of each thread of this process, built once (the process
# start time costs a read of /proc).  Forgotten in a forked child.
_owner_records: dict[int, bytes] = {}


def _owner_record(tid: int) -> bytes:
    record = _owner_records.get(tid)
    if record is None:
        pid = os.getpid()
        start = _platform.process_start_time(pid) or 0
        record = _owner_records[tid] = _OWNER_RECORD.pack(pid, 0, tid, start)
    return record


os.register_at_fork(after_in_child=_owner_records.clear)


def _gone(pid: int, start: int, mask: int = -1) -> bool:
    """Whether process ``pid``, started at ``start`` (0: unknown; ``mask``: the bits of the
    start time kept), is gone: no such process, or its pid is another process's now."""
    if pid <= 0 or pid == os.getpid():
        return False
    now = _platform.process_start_time(pid)
    return now is None or bool(start and now & mask != start)


def _dead_owner(word: int) -> int:
    """The pid of an atomic lock's owner ``word`` if that process is gone, else 0."""
    pid = word & 0xFFFFFFFF
    return pid if _gone(pid, word >> 32, 0xFFFFFFFF) else 0


def _warn_took_over(dead: int) -> None:
    """An atomic lock was taken over from ``dead`` (called by the C code, which
    hands the lock back if this raises)."""
    warnings.warn(_abandoned(dead), stacklevel=2)


def _abandoned(dead: int) -> AbandonedLockWarning:
    return AbandonedLockWarning(
        f"the process holding this lock (pid {dead}) died without releasing "
        f"it; pid {os.getpid()} took it over. Data the lock protected may be "
        "inconsistent."
    )


class SemLock:
    """A counting semaphore or a (recursive) lock, shared between processes.

    ``acquire(block, timeout)`` / ``release()`` follow the stdlib's SemLock:
    a recursive mutex counts re-acquisitions by its owning thread; a bounded
    semaphore refuses to go above ``maxvalue``.
    """

    def __init__(self, kind: int, value: int, maxvalue: int, *, lock: bool = False) -> None:
        if kind not in (RECURSIVE_MUTEX, SEMAPHORE):
            raise ValueError(f"unrecognized kind {kind!r}")
        if not isinstance(value, int) or value < 0 or value > SEM_VALUE_MAX:
            raise ValueError(f"semaphore initial value must be >= 0 and <= {SEM_VALUE_MAX}")
        block = _heap.malloc(_SLOT_SIZE)
        slot = _Slot.from_buffer(block.arena.buffer, block.offset)
        if lock and _MAKE_ATOMIC:  # free: owner word 0; the semaphore is the doorbell
            _platform.sem_init(ctypes.c_void_p(ctypes.addressof(slot.sem)), 0)
            block.view()[_PROTOCOL].cast("i")[0] = PROTOCOL_ATOMIC
        elif lock and _GUARDED:  # free: no owner; the semaphore is the waiters' doorbell
            _platform.sem_init(ctypes.c_void_p(ctypes.addressof(slot.sem)), 0)
            _platform.mutex_init(ctypes.c_void_p(ctypes.addressof(slot.guard)))
        else:
            _platform.sem_init(ctypes.c_void_p(ctypes.addressof(slot.sem)), value)
            _platform.sem_init(ctypes.c_void_p(ctypes.addressof(slot.guard)), 1)
        slot.kind = kind
        slot.maxvalue = maxvalue
        self._setup(block, kind, maxvalue, lock)

    def _setup(self, block: _heap.Block, kind: int, maxvalue: int, lock: bool) -> None:
        if type(self) is not SemLock:  # (unpickled: _compile decides again, below)
            self.__class__ = SemLock
        self._block = block
        self._slot = _Slot.from_buffer(block.arena.buffer, block.offset)
        view = block.view()
        self._owner_view = view[_OWNER]
        self._owner_pid = view[_OWNER.start : _OWNER.start + 4].cast("i")
        self._sem = ctypes.c_void_p(ctypes.addressof(self._slot.sem))
        self._guard = ctypes.c_void_p(ctypes.addressof(self._slot.guard))
        self.kind = kind
        self.maxvalue = maxvalue
        # Only locks have owners; a semaphore's units are anybody's.
        self._tracks_owner = lock
        self._held = 0
        self._last_tid = 0
        if lock and view[_PROTOCOL].cast("i")[0] == PROTOCOL_ATOMIC:
            self._get_value = self._guarded_value  # type: ignore[method-assign]
            speedups = _speedups or _load_speedups()
            if speedups is None:
                raise RuntimeError(
                    "this lock was made by a process that uses phalanx's C extension "
                    "(phalanx._speedups), and only that code can take it; this process "
                    "cannot import the extension: run it from the same phalanx install"
                )
            _compile(self, block, speedups, atomic=True)
        elif lock and _GUARDED:
            self._waiters = view[_WAITERS].cast("i")
            self.acquire = self._acquire_guarded  # type: ignore[method-assign]
            self.release = self._release_guarded  # type: ignore[method-assign]
            self._get_value = self._guarded_value  # type: ignore[method-assign]
            if _speedups is not None:
                _compile(self, block, _speedups)
        elif _speedups is not None and not lock:
            _compile(self, block, _speedups)
        _runtime.register_after_fork(self, SemLock._after_fork)

    def _after_fork(self) -> None:
        fast = self.__dict__.get("_fast")
        if fast is not None:
            fast.forget()  # its count, and its owner record, were the parent's
        else:
            self._held = 0  # the forked child's thread holds nothing

    # -- pickling: to children being started only, as in the stdlib ---------------------

    def __getstate__(self) -> tuple[Any, ...]:
        if get_spawning_popen() is None:
            raise RuntimeError(
                f"{type(self).__name__} objects should only be shared between processes "
                "through inheritance: pass it as an argument of Process(...) (or to a Pool "
                "initializer), not through a queue or a pipe"
            )
        return self._block, self.kind, self.maxvalue, self._tracks_owner

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self._setup(*state)

    def __reduce__(self) -> tuple[Any, ...]:
        # Always rebuilt as a SemLock: the receiving process picks its own path.
        return _rebuild, self.__getstate__()

    # -- acquire / release -----------------------------------------------------------------

    # _held_by_one_thread: the hold count and its owner's name (``_held``,
    # ``_last_tid``) are read by every thread of this process without a lock, to
    # tell a recursive acquire.  Only a holder writes them: an acquire names the
    # owner before it counts the hold (no thread sees a count under a previous
    # owner's name), and a release counts down before it frees the lock (from
    # then on another thread may take it and count its own hold).

    def _is_mine(self) -> bool:
        return self._held > 0 and self._last_tid == threading.get_ident()

    def _count(self) -> int:
        return self._held

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Take the lock (or one unit); False if it could not within ``timeout``."""
        tid = _get_ident()
        if self._held and self.kind == RECURSIVE_MUTEX and self._last_tid == tid:
            self._held += 1
            return True
        if _trywait(self._sem) != 0:  # hot path: one ctypes call when free
            if not block:
                return False
            if not self._wait(timeout):
                return False
        if self._tracks_owner:
            self._owner_view[:] = _owner_record(tid)
        self._last_tid = tid  # (named first: see _held_by_one_thread)
        self._held += 1
        return True

    def _wait(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return False
            until = now + OWNER_CHECK_INTERVAL
            if deadline is not None and deadline < until:
                until = deadline
            if _platform.sem_wait_until(self._sem, until):
                return True
            if self._tracks_owner and self._take_over_from_dead_owner():
                return True

    def _owner_is_dead(self) -> int:
        """The pid of the recorded owner if it no longer exists, else 0."""
        pid = int(self._slot.owner_pid)
        return pid if _gone(pid, int(self._slot.owner_start)) else 0

    def _take_over_from_dead_owner(self) -> bool:
        dead = self._owner_is_dead()
        if not dead or not _platform.sem_trywait(self._guard):
            return False
        try:
            if self._slot.owner_pid != dead or not self._owner_is_dead():
                return False  # another waiter recovered it first
            # We own it from here on, on record, before anything that can block
            # or be interrupted (the warning may write to a full pipe): if we die
            # too, the next waiter takes it over from us.
            self._owner_view[:] = _owner_record(_get_ident())
        finally:
            _platform.sem_post(self._guard)
        try:
            warnings.warn(_abandoned(dead), stacklevel=4)
        except BaseException:
            # The program turned the warning into an error: hand the lock back
            # before raising, so nobody is left waiting for a dead owner again.
            _platform.sem_post(self._sem)
            raise
        return True

    def release(self) -> None:
        """Release the lock (or give back one unit)."""
        if self.kind == RECURSIVE_MUTEX:
            if not self._is_mine():
                raise LockStateError("attempt to release recursive lock not owned by thread")
            if self._held > 1:
                self._held -= 1
                return
        if self._tracks_owner:
            if self._owner_pid[0] == 0 and _platform.sem_getvalue(self._sem) >= 1:
                raise ValueError("semaphore or lock released too many times")
            self._owner_pid[0] = 0
        elif self.maxvalue != -1 and _platform.sem_getvalue(self._sem) >= self.maxvalue:
            raise ValueError("semaphore or lock released too many times")
        # Our bookkeeping first: the moment the semaphore is posted (ctypes
        # drops the GIL) another thread of this process may take the lock and
        # write its own.
        if self._held:
            self._held -= 1
        if _post(self._sem) != 0:
            self._held += 1
            err = ctypes.get_errno()
            raise OSError(err, f"sem_post: {os.strerror(err)}")

    def _get_value(self) -> int:
        return _platform.sem_getvalue(self._sem)

    # -- guarded locks (robust mutexes: Linux) -----------------------------------------------

    def _lock_guard(self, tried: int = -1) -> None:
        """Take the guard (``tried``: what a first trylock said, if the caller tried)."""
        if tried == -1:
            tried = _mutex_trylock(self._guard)
            if not tried:
                return
        # Busy (a few instructions: wait), or its holder died (ours now; what it
        # guards is consistent at every step, see the module docstring).
        _platform.mutex_lock(self._guard, tried, _GUARD_SPINS)

    def _acquire_guarded(self, block: bool = True, timeout: float | None = None) -> bool:
        tid = _get_ident()
        if self._held and self.kind == RECURSIVE_MUTEX and self._last_tid == tid:
            self._held += 1
            return True
        guard = self._guard
        tried = _mutex_trylock(guard)
        if tried:
            self._lock_guard(tried)
        if self._owner_pid[0] == 0:  # the hot path: free
            # The commit: held, by us.  Killed half-way through the copy, we
            # leave either no owner (free) or a dead one.
            self._owner_view[:] = _owner_record(tid)
            _mutex_unlock(guard)
            self._last_tid = tid  # (named first: see _held_by_one_thread)
            self._held += 1
            return True
        _mutex_unlock(self._guard)
        if not block or not self._wait_guarded(timeout, tid):
            return False
        self._last_tid = tid  # (named first: see _held_by_one_thread)
        self._held += 1
        return True

    def _wait_guarded(self, timeout: float | None, tid: int) -> bool:
        """Sleep on the semaphore until the lock is ours (True) or ``timeout`` passes.

        Registered as a waiter (so that a release posts) from the first look
        at the lock to the last, under the guard at each look: one guard
        round trip per wake-up.  The owner is checked for death every
        ``OWNER_CHECK_INTERVAL`` seconds.
        """
        if _OWNER_WATCH and _platform.spare_cpu() and self._watch_owner(tid):
            return True
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        waiters = self._waiters
        checked = time.monotonic()
        self._lock_guard()
        waiters[0] += 1
        while True:
            now = time.monotonic()
            dead = 0
            if self._owner_pid[0] and now - checked >= OWNER_CHECK_INTERVAL:
                dead = self._owner_is_dead()
                checked = now
            if not self._owner_pid[0] or dead:
                waiters[0] = max(0, waiters[0] - 1)
                self._owner_view[:] = _owner_record(tid)  # the commit
                _mutex_unlock(self._guard)
                if dead:
                    self._warn_taken_over(dead)
                return True
            if deadline is not None and now >= deadline:
                waiters[0] = max(0, waiters[0] - 1)
                _mutex_unlock(self._guard)
                return False
            _mutex_unlock(self._guard)
            until = checked + OWNER_CHECK_INTERVAL
            if deadline is not None and deadline < until:
                until = deadline
            try:
                _platform.sem_wait_until(self._sem, until)
            except BaseException:  # (Ctrl-C): leave the count of waiters right
                self._lock_guard()
                waiters[0] = max(0, waiters[0] - 1)
                _mutex_unlock(self._guard)
                raise
            self._lock_guard()

    def _watch_owner(self, tid: int) -> bool:
        """Watch the owner word a moment (a CPU is free: the owner runs) and take
        the lock if it is let go meanwhile; False if it is not (then sleep).

        Not when a thread of this process holds it: it needs the GIL this loop
        keeps to let go."""
        owner = self._owner_pid
        if owner[0] == os.getpid():
            return False
        for _ in range(_OWNER_WATCH):  # noqa: SIM110 (a spin: no generator frame a read)
            if not owner[0] and self._take_if_free(tid):
                return True
        return False

    def _take_if_free(self, tid: int) -> bool:
        """Take the lock for thread ``tid`` if it is free: one look under the guard."""
        guard = self._guard
        tried = _mutex_trylock(guard)
        if tried:
            self._lock_guard(tried)
        if self._owner_pid[0] == 0:
            self._owner_view[:] = _owner_record(tid)  # the commit
            _mutex_unlock(guard)
            return True
        _mutex_unlock(guard)
        return False

    def _warn_taken_over(self, dead: int) -> None:
        try:
            warnings.warn(_abandoned(dead), stacklevel=5)
        except BaseException:
            # The program turned the warning into an error: hand the lock back
            # before raising, so nobody is left waiting for a dead owner again.
            # (Not counted as held yet: only the shared state goes back.)
            self._slow_release_guarded()
            raise

    def _slow_acquire_guarded(self, block: bool = True, timeout: float | None = None) -> bool:
        """The compiled path's way when a guarded lock is not taken at once (its guard
        busy, or the lock held): ``_acquire_guarded`` without the hold count and the
        recursion, which FastLock keeps."""
        tid = _get_ident()
        return self._take_if_free(tid) or (bool(block) and self._wait_guarded(timeout, tid))

    def _slow_release_guarded(self) -> None:
        """Free a guarded lock in shared memory, waking a sleeper (no hold count)."""
        guard = self._guard
        tried = _mutex_trylock(guard)
        if tried:
            self._lock_guard(tried)
        if self._owner_pid[0] == 0:
            _mutex_unlock(guard)
            raise ValueError("semaphore or lock released too many times")
        self._owner_pid[0] = 0  # the commit: free
        waiters = self._waiters[0]
        _mutex_unlock(guard)
        if waiters:
            _post(self._sem)

    def _release_guarded(self) -> None:
        # The pure path's release: _slow_release_guarded's steps written out here, not
        # called, as the hot path is (a Python call is a tenth of the pair's time).
        if self.kind == RECURSIVE_MUTEX:
            if not self._is_mine():
                raise LockStateError("attempt to release recursive lock not owned by thread")
            if self._held > 1:
                self._held -= 1
                return
        # Our count first, while the lock is still ours: from the commit on, another
        # thread of this process may take it and count its own hold.
        held = self._held
        if held:
            self._held = held - 1
        guard = self._guard
        tried = _mutex_trylock(guard)
        if tried:
            self._lock_guard(tried)
        if self._owner_pid[0] == 0:
            _mutex_unlock(guard)
            self._held = held
            raise ValueError("semaphore or lock released too many times")
        self._owner_pid[0] = 0  # the commit: free
        waiters = self._waiters[0]
        _mutex_unlock(guard)
        if waiters:
            _post(self._sem)

    def _guarded_value(self) -> int:
        return 0 if self._owner_pid[0] else 1

    def _is_zero(self) -> bool:
        return self._get_value() == 0

    def _owner(self) -> tuple[int, int] | None:
        """(pid, thread ident) of the recorded owner of a lock, if any."""
        pid = self._slot.owner_pid
        return (pid, self._slot.owner_tid) if pid > 0 else None

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class _CompiledSemLock(SemLock):
    """A ``SemLock`` whose ``acquire``/``release`` are ``_speedups.FastLock``'s (one C
    call each when nothing waits).  FastLock keeps the hold count, in single steps
    that the other threads of this process cannot split; when it cannot decide at
    once it calls back ``SemLock``'s own code for the shared state only (waiting,
    recovering a dead owner)."""

    _fast: Any

    @property
    def _held(self) -> int:  # type: ignore[override]
        return int(self._fast.held)

    @property
    def _last_tid(self) -> int:  # type: ignore[override]
        return int(self._fast.last_tid)


def _compile(lock: SemLock, block: _heap.Block, speedups: Any, *, atomic: bool = False) -> None:
    """Move ``lock`` (set up, holding nothing) onto the compiled path of ``speedups``."""
    # The slow path's callbacks: guarded locks only (the other modes wait in C).
    slow_acquire: Any = None
    slow_release: Any = None
    if atomic:
        mode = speedups.MODE_ATOMIC
    elif lock._tracks_owner:
        mode = speedups.MODE_GUARDED
        slow_acquire, slow_release = lock._slow_acquire_guarded, lock._slow_release_guarded
    else:
        mode = speedups.MODE_SEMAPHORE
    fast = speedups.FastLock(
        block.arena.buffer,
        block.offset,
        lock.kind,
        mode,
        lock.maxvalue,
        slow_acquire,
        slow_release,
        _owner_record,
        LockStateError,
        _dead_owner,
        _warn_took_over,
    )
    del lock._held, lock._last_tid  # FastLock's now (see _CompiledSemLock)
    lock.__class__ = _CompiledSemLock
    lock._fast = fast  # type: ignore[attr-defined]
    lock.acquire = fast.acquire  # type: ignore[method-assign]
    lock.release = fast.release  # type: ignore[method-assign]


def _rebuild(block: _heap.Block, kind: int, maxvalue: int, lock: bool) -> SemLock:
    semlock = SemLock.__new__(SemLock)
    semlock._setup(block, kind, maxvalue, lock)
    return semlock
