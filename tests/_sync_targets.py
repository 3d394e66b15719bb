"""Child targets for ``test_synchronize``, ``test_sharedctypes`` and ``test_shared_memory``.

Targets live here, in an importable module, so spawn and forkserver children
can unpickle them by reference.  A child reports through a JSON file
(``write_json``) or through the synchronization objects under test; every
blocking call it makes has a deadline (``DEADLINE``), so a failed test never
leaves a child blocked forever; the few that wait to be killed say so.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import signal
import time
import warnings
from typing import Any

from _targets import DEADLINE, sleep_forever, write_json
from phalanx import _tracker, shared_memory
from phalanx.errors import AbandonedLockWarning

# --- locks --------------------------------------------------------------------------------


def increment(counter: Any, lock: Any, n: int) -> None:
    """``counter.value += 1`` under ``lock``, ``n`` times (a read-modify-write race without it)."""
    for _ in range(n):
        with lock:
            counter.value += 1


def hold_then_sleep(lock: Any, ready: str, times: int = 1) -> None:
    """Acquire ``lock`` (``times`` times: RLock recursion), report, then wait to be killed."""
    for _ in range(times):
        if not lock.acquire(timeout=DEADLINE):
            raise SystemExit("could not acquire the lock")
    sleep_forever(ready)


def take(sem: Any) -> None:
    """Take one unit of ``sem`` for good (a token consumed), and exit normally."""
    if not sem.acquire(timeout=DEADLINE):
        raise SystemExit("could not take a unit")


def hold_until(lock: Any, ready: str, done: Any) -> None:
    """Acquire ``lock``, report ``repr(lock)``, hold it until ``done`` is set, release."""
    if not lock.acquire(timeout=DEADLINE):
        raise SystemExit("could not acquire the lock")
    write_json(ready, {"repr": repr(lock), "pid": os.getpid()})
    done.wait(DEADLINE)
    lock.release()


def recover(lock: Any, path: str, timeout: float, done: Any, started: Any) -> None:
    """Race to take ``lock`` over from a dead owner; report whether we got it and warned.

    The winner keeps the lock until ``done`` is set, so the losers time out
    instead of recovering it from the winner.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        started.release()
        t0 = time.monotonic()
        got = lock.acquire(timeout=timeout)
        at = time.monotonic()
    warned = [str(w.message) for w in caught if issubclass(w.category, AbandonedLockWarning)]
    write_json(path, {"got": got, "warned": warned, "elapsed": at - t0, "at": at})
    if got:
        done.wait(DEADLINE)
        lock.release()


def try_acquire(lock: Any, path: str, timeout: float) -> None:
    """Report what ``lock.acquire(timeout=...)`` returned and how long it took."""
    t0 = time.monotonic()
    got = lock.acquire(timeout=timeout)
    write_json(path, {"got": got, "elapsed": time.monotonic() - t0})
    if got:
        lock.release()


def use_primitives(path: str, lock: Any, rlock: Any, sem: Any, bsem: Any, event: Any) -> None:
    """Use each primitive received as an argument; report what happened."""
    result: dict[str, Any] = {}
    with lock:
        result["lock_free_inside"] = lock.acquire(False)
    result["lock_after"] = lock.acquire(False)
    lock.release()
    rlock.acquire()
    rlock.acquire()
    result["rlock_repr"] = repr(rlock)
    rlock.release()
    rlock.release()
    result["sem_value"] = sem.get_value()
    sem.release()  # the parent sees value + 1
    result["bsem_got"] = bsem.acquire(timeout=DEADLINE)  # the parent sees value - 1
    event.set()
    write_json(path, result)


# --- conditions ---------------------------------------------------------------------------


def cond_waiter(cond: Any, sleeping: Any, woken: Any, timeout: float = DEADLINE) -> None:
    """The stdlib suite's waiter: announce sleep, ``wait``, announce wake-up."""
    with cond:
        sleeping.release()
        cond.wait(timeout)
        woken.release()


def cond_wait_timeout(cond: Any, path: str, timeout: float) -> None:
    """Report what ``cond.wait(timeout)`` returns when nobody notifies."""
    with cond:
        t0 = time.monotonic()
        result = cond.wait(timeout)
        write_json(path, {"result": result, "elapsed": time.monotonic() - t0})


def cond_step_value(cond: Any, value: Any, steps: int, go: Any) -> None:
    """Raise ``value`` to 1, 2 .. ``steps`` under ``cond``, notifying each time.

    Each step waits for the parent to release ``go`` so that it lands while
    the parent is (or may be) in ``wait_for``.
    """
    for i in range(1, steps + 1):
        if not go.acquire(timeout=DEADLINE):
            return
        with cond:
            value.value = i
            cond.notify_all()


# --- barriers -----------------------------------------------------------------------------


def bump(counter: Any) -> None:
    """A barrier action: count the rounds (runs in the last party to arrive)."""
    counter.value += 1


def barrier_rounds(barrier: Any, path: str, rounds: int, counter: Any) -> None:
    """Pass ``barrier`` ``rounds`` times; report the arrival indices and what the action did."""
    indices, seen = [], []
    for _ in range(rounds):
        indices.append(barrier.wait(DEADLINE))
        seen.append(counter.value)  # the action ran before anyone was released
    write_json(path, {"indices": indices, "seen": seen})


def barrier_wait_report(barrier: Any, path: str, timeout: float | None = DEADLINE) -> None:
    """Wait once; report the index or the exception type."""
    t0 = time.monotonic()
    try:
        index = barrier.wait(timeout)
    except Exception as exc:
        result: dict[str, Any] = {"error": type(exc).__name__}
    else:
        result = {"index": index}
    result["elapsed"] = time.monotonic() - t0
    result["broken"] = barrier.broken
    write_json(path, result)


def barrier_wait_twice(barrier: Any, path: str) -> None:
    """Wait (expecting a reset to break it), then wait again for a full round."""
    outcomes = []
    for _ in range(2):
        try:
            outcomes.append(barrier.wait(DEADLINE))
        except Exception as exc:
            outcomes.append(type(exc).__name__)
    write_json(path, {"outcomes": outcomes})


# --- events -------------------------------------------------------------------------------


def event_wait_report(event: Any, path: str, timeout: float = DEADLINE) -> None:
    t0 = time.monotonic()
    result = event.wait(timeout)
    write_json(path, {"result": result, "elapsed": time.monotonic() - t0, "set": event.is_set()})


def event_set(event: Any) -> None:
    event.set()


def event_ping_pong(ping: Any, pong: Any, rounds: int) -> None:
    """Wait for ``ping``, clear it, set ``pong``; ``rounds`` times."""
    for _ in range(rounds):
        if not ping.wait(DEADLINE):
            return
        ping.clear()
        pong.set()


# --- sharedctypes -------------------------------------------------------------------------


class Point(ctypes.Structure):
    """A ctypes structure from an importable module (spawn children rebuild it by name)."""

    _fields_ = (("x", ctypes.c_int), ("y", ctypes.c_double))


def same_lock(path: str, value: Any, array: Any) -> None:
    """Report whether ``array``'s lock is taken while we hold ``value``'s."""
    with value.get_lock():
        free = array.get_lock().acquire(False)
        if free:
            array.get_lock().release()
    write_json(path, {"array_lock_free": free})


def fill_shared(path: str, value: Any, array: Any, chars: Any, point: Any, raw: Any) -> None:
    """Read the shared objects received as arguments, report, then change each of them."""
    with value.get_lock():
        old_value = value.value
        value.value = old_value * 2
    with array.get_lock():
        old_array = list(array[:])
        array[:] = [x * 10 for x in old_array]
    old_chars = chars.value.decode()
    chars.value = b"from child"
    old_point = [point.x, point.y]
    point.x, point.y = -1, 0.25
    old_raw = list(raw)
    raw[0] = 99
    write_json(
        path,
        {
            "value": old_value,
            "array": old_array,
            "chars": old_chars,
            "point": old_point,
            "raw": old_raw,
            "lock_type": type(value.get_lock()).__name__,
        },
    )


def add_under_lock(value: Any, n: int) -> None:
    """``value.value += 1`` under ``value.get_lock()``, ``n`` times."""
    for _ in range(n):
        with value.get_lock():
            value.value += 1


# --- shared memory ------------------------------------------------------------------------


def attach_and_write(name: str, path: str, data: bytes) -> None:
    """Attach to segment ``name``; report its size and first bytes; write ``data`` at 0."""
    shm = shared_memory.SharedMemory(name)
    try:
        write_json(
            path,
            {
                "size": shm.size,
                "name": shm.name,
                "head": bytes(shm.buf[:16]).hex(),
            },
        )
        shm.buf[: len(data)] = data
    finally:
        shm.close()


def create_segment(path: str, size: int, data: bytes) -> None:
    """Create a segment, fill it with ``data`` and report its name (the parent unlinks it)."""
    shm = shared_memory.SharedMemory(create=True, size=size, track=False)
    shm.buf[: len(data)] = data
    write_json(path, {"name": shm.name})
    shm.close()


def attach_list(name: str, path: str) -> None:
    """Attach to a ShareableList by name; report it, then change two items."""
    sl = shared_memory.ShareableList(name=name)
    try:
        write_json(path, {"items": list(sl), "len": len(sl), "format": sl.format})
        sl[0] = sl[0] + 1
        sl[-1] = "child"
    finally:
        sl.shm.close()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def create_segment_tracked(path: str, size: int, data: bytes) -> None:
    """Create a tracked segment, fill it, report its name and our tracker's pid, and exit."""
    shm = shared_memory.SharedMemory(create=True, size=size)
    shm.buf[: len(data)] = data
    write_json(path, {"name": shm.name, "tracker": _tracker.tracker_pid()})
    shm.close()


def segments_then_sleep(path: str, n: int, ignore_signals: bool = False) -> None:
    """Create ``n`` tracked segments, report their names, then wait to be killed.

    ``ignore_signals``: ignore SIGINT and SIGTERM (only SIGKILL ends us), and
    let go of the inherited stdout/stderr so that a parent reading them to EOF
    does not wait for us.
    """
    if ignore_signals:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)
    segments = [shared_memory.SharedMemory(create=True, size=4096) for _ in range(n)]
    write_json(path, {"names": [s.name for s in segments], "pid": os.getpid()})
    while True:
        time.sleep(3600)


def increment_and_report(counter: Any, lock: Any, n: int, path: str) -> None:
    """``increment``, after saying which path this process's lock takes."""
    from phalanx import _fast

    write_json(path, {"core": type(lock._semlock).__name__, "pure": _fast.speedups is None})
    increment(counter, lock, n)


def try_held_rlock(rlock: Any, path: str) -> None:
    """A forked child of the RLock's holder: it is not the owner, whatever the parent held."""
    write_json(path, {"mine": rlock._semlock._is_mine(), "got": rlock.acquire(False)})
