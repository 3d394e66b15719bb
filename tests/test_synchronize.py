"""Locks, semaphores, conditions, events and barriers across processes (``phalanx.synchronize``).

Every cross-process test runs under each start method (the ``ctx`` fixture).
Nothing synchronizes with sleeps: children report through JSON files
(``wait_for_json``) or through the primitives under test, and every blocking
call has a deadline.  Timeouts are checked against generous bounds only.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import re
import signal
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import _sync_targets as targets
import phalanx
from _conn_targets import Background
from _targets import (
    DEADLINE,
    finish,
    kill,
    python_code,
    run_python,
    start,
    wait_for_json,
    wait_until,
)
from phalanx import synchronize
from phalanx.context import BaseContext
from phalanx.errors import AbandonedLockWarning, LockStateError
from phalanx.process import BaseProcess
from phalanx.reduction import ForkingPickler

# A timeout that must expire: long enough to be measured, short enough to be cheap.
SHORT = 0.2
# Upper bound for a call that should return after SHORT (loaded CI machines are slow).
SLACK = 5.0


def try_in_thread(lock: Any, *args: Any) -> Any:
    """``lock.acquire(*args)`` in another thread (released there if taken); what it returned."""

    def attempt() -> Any:
        got = lock.acquire(*args)
        if got:
            lock.release()
        return got

    return Background(attempt).result()


class HeldInThread:
    """Hold ``lock`` in another thread until ``stop()``."""

    def __init__(self, lock: Any) -> None:
        self._taken = threading.Event()
        self._stop = threading.Event()
        self._bg = Background(self._hold, lock)
        assert self._taken.wait(DEADLINE)

    def _hold(self, lock: Any) -> None:
        lock.acquire()
        self._taken.set()
        self._stop.wait(DEADLINE)
        lock.release()

    def stop(self) -> None:
        self._stop.set()
        self._bg.result()


def assert_times_out(call: Callable[[], Any], expected: Any = False) -> float:
    """``call()`` returns ``expected`` after roughly SHORT seconds; returns the time taken."""
    t0 = time.monotonic()
    assert call() is expected
    elapsed = time.monotonic() - t0
    assert SHORT * 0.9 <= elapsed < SLACK
    return elapsed


# --- mutual exclusion -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_counter_under_a_lock_is_exact(ctx: BaseContext, kind: str) -> None:
    counter = ctx.Value("i", 0, lock=False)
    lock = getattr(ctx, kind)()
    procs = [start(ctx, targets.increment, counter, lock, 20_000) for _ in range(4)]
    for p in procs:
        finish(p)
    assert counter.value == 80_000


def test_value_lock_makes_increments_exact(ctx: BaseContext) -> None:
    value = ctx.Value("q", 0)
    procs = [start(ctx, targets.add_under_lock, value, 5_000) for _ in range(2)]
    targets.add_under_lock(value, 5_000)
    for p in procs:
        finish(p)
    assert value.value == 15_000


def test_threads_and_processes_share_one_lock(ctx: BaseContext) -> None:
    counter = ctx.RawValue("i", 0)
    lock = ctx.Lock()
    procs = [start(ctx, targets.increment, counter, lock, 5_000) for _ in range(2)]
    threads = [Background(targets.increment, counter, lock, 5_000) for _ in range(2)]
    for t in threads:
        t.result()
    for p in procs:
        finish(p)
    assert counter.value == 20_000


# --- acquire(block, timeout) ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["Lock", "RLock", "Semaphore", "BoundedSemaphore"])
def test_acquire_block_and_timeout(kind: str) -> None:
    lock = getattr(phalanx, kind)()
    assert lock.acquire() is True
    # From another thread: an RLock would let its owner in again.
    assert try_in_thread(lock, False) is False
    t0 = time.monotonic()
    assert try_in_thread(lock, True, SHORT) is False
    assert SHORT * 0.9 <= time.monotonic() - t0 < SLACK
    # Non-blocking ignores the timeout; a zero or negative timeout does not wait.
    for args in [(False, 10.0), (True, 0), (True, -1.0)]:
        t0 = time.monotonic()
        assert try_in_thread(lock, *args) is False
        assert time.monotonic() - t0 < 1.0
    lock.release()
    assert try_in_thread(lock, False) is True
    assert try_in_thread(lock, True, SHORT) is True
    assert lock.acquire(True, SHORT) is True
    lock.release()


def test_lock_released_by_another_thread() -> None:
    """A plain Lock (unlike an RLock) may be released by any thread, as in the stdlib."""
    lock = phalanx.Lock()
    lock.acquire()
    Background(lock.release).result()
    assert lock.acquire(False)
    lock.release()


@pytest.mark.parametrize("kind", ["Lock", "RLock", "Semaphore", "BoundedSemaphore"])
def test_context_manager(kind: str) -> None:
    lock = getattr(phalanx, kind)()
    with lock as entered:
        assert entered is True
        assert try_in_thread(lock, False) is False
    assert try_in_thread(lock, False) is True


def test_context_manager_releases_on_error() -> None:
    lock = phalanx.Lock()
    with pytest.raises(KeyError), lock:
        raise KeyError("inside")
    assert lock.acquire(False)
    lock.release()


def test_lock_timeout_while_a_child_holds_it(ctx: BaseContext, tmp_path: Path) -> None:
    lock, done = ctx.Lock(), ctx.Event()
    p = start(ctx, targets.hold_until, lock, str(tmp_path / "ready"), done)
    try:
        wait_for_json(tmp_path / "ready")
        assert lock.acquire(False) is False
        assert_times_out(lambda: lock.acquire(timeout=SHORT))
    finally:
        done.set()
    assert lock.acquire(timeout=DEADLINE)  # handed back by the child
    lock.release()
    finish(p)


def test_child_times_out_while_the_parent_holds_the_lock(ctx: BaseContext, tmp_path: Path) -> None:
    lock = ctx.RLock()
    with lock:
        p = start(ctx, targets.try_acquire, lock, str(tmp_path / "out"), SHORT)
        result = wait_for_json(tmp_path / "out")
        finish(p)
    assert result["got"] is False
    assert SHORT * 0.9 <= result["elapsed"] < SLACK
    p = start(ctx, targets.try_acquire, lock, str(tmp_path / "out2"), DEADLINE)
    assert wait_for_json(tmp_path / "out2")["got"] is True
    finish(p)


def test_a_waiting_child_gets_the_lock_when_it_is_released(
    ctx: BaseContext, tmp_path: Path
) -> None:
    lock = ctx.Lock()
    lock.acquire()
    p = start(ctx, targets.try_acquire, lock, str(tmp_path / "out"), DEADLINE)
    lock.release()
    result = wait_for_json(tmp_path / "out")
    finish(p)
    assert result["got"] is True


# --- RLock ------------------------------------------------------------------------------------


def test_rlock_recursion() -> None:
    lock = phalanx.RLock()
    for _ in range(3):
        assert lock.acquire() is True
    assert repr(lock) == "<RLock(MainProcess, 3)>"
    assert try_in_thread(lock, False) is False
    for _ in range(2):
        lock.release()
    assert repr(lock) == "<RLock(MainProcess, 1)>"
    assert try_in_thread(lock, False) is False  # still held once
    lock.release()
    assert repr(lock) == "<RLock(None, 0)>"
    with pytest.raises(LockStateError, match="not owned"):
        lock.release()


def test_rlock_released_by_another_thread_is_an_error() -> None:
    lock = phalanx.RLock()
    lock.acquire()
    err = Background(lock.release).exception()
    assert isinstance(err, LockStateError)
    assert isinstance(err, AssertionError) and isinstance(err, RuntimeError)
    assert "not owned" in str(err)
    assert try_in_thread(lock, False) is False  # still ours
    lock.release()


def test_lock_state_error_is_both_assertion_and_runtime_error() -> None:
    assert issubclass(LockStateError, AssertionError)
    assert issubclass(LockStateError, RuntimeError)
    lock = phalanx.RLock()
    with pytest.raises(AssertionError):
        lock.release()
    with pytest.raises(RuntimeError):
        lock.release()


def test_rlock_in_a_child_is_its_own(ctx: BaseContext, tmp_path: Path) -> None:
    """A child's recursion count does not leak into the parent's view."""
    lock, rlock, sem, bsem, event = (
        ctx.Lock(),
        ctx.RLock(),
        ctx.Semaphore(3),
        ctx.BoundedSemaphore(2),
        ctx.Event(),
    )
    p = start(ctx, targets.use_primitives, str(tmp_path / "out"), lock, rlock, sem, bsem, event)
    result = wait_for_json(tmp_path / "out")
    finish(p)
    assert result == {
        "lock_free_inside": False,
        "lock_after": True,
        "rlock_repr": f"<RLock({p.name}, 2)>",
        "sem_value": 3,
        "bsem_got": True,
    }
    assert sem.get_value() == 4
    assert bsem.get_value() == 1
    assert event.is_set()
    assert rlock.acquire(False)
    rlock.release()


# --- Semaphore / BoundedSemaphore -------------------------------------------------------------


def test_semaphore_counts() -> None:
    sem = phalanx.Semaphore(2)
    assert sem.get_value() == 2
    assert sem.acquire() and sem.acquire(False)
    assert sem.get_value() == 0
    assert sem.acquire(False) is False
    assert_times_out(lambda: sem.acquire(timeout=SHORT))
    for _ in range(5):
        sem.release()  # unbounded: may go above the initial value
    assert sem.get_value() == 5
    assert phalanx.Semaphore().get_value() == 1
    assert phalanx.Semaphore(0).acquire(False) is False


def test_bounded_semaphore_counts() -> None:
    sem = phalanx.BoundedSemaphore(3)
    assert sem.get_value() == 3
    sem.acquire()
    sem.acquire()
    assert sem.get_value() == 1
    sem.release()
    sem.release()
    assert sem.get_value() == 3
    with pytest.raises(ValueError, match="released too many times"):
        sem.release()
    assert sem.get_value() == 3


def test_semaphore_between_processes(ctx: BaseContext, tmp_path: Path) -> None:
    """A child blocked on a zero semaphore wakes up when the parent releases it."""
    sem = ctx.Semaphore(0)
    p = start(ctx, targets.try_acquire, sem, str(tmp_path / "out"), DEADLINE)
    sem.release()
    assert wait_for_json(tmp_path / "out")["got"] is True
    finish(p)
    assert sem.get_value() == 1  # try_acquire gave it back


# --- reprs ------------------------------------------------------------------------------------


def test_semaphore_reprs() -> None:
    sem = phalanx.Semaphore(4)
    assert repr(sem) == "<Semaphore(value=4)>"
    sem.acquire()
    assert repr(sem) == "<Semaphore(value=3)>"
    bsem = phalanx.BoundedSemaphore(2)
    bsem.acquire()
    assert repr(bsem) == "<BoundedSemaphore(value=1, maxvalue=2)>"


def test_lock_repr_names_the_owner(ctx: BaseContext, tmp_path: Path) -> None:
    lock = ctx.Lock()
    assert repr(lock) == "<Lock(owner=None)>"
    with lock:
        assert repr(lock) == "<Lock(owner=MainProcess)>"

    seen: list[str] = []

    def in_thread() -> None:
        lock.acquire()
        seen.append(repr(lock))

    t = threading.Thread(target=in_thread, name="T1")
    t.start()
    t.join(DEADLINE)
    assert seen == ["<Lock(owner=MainProcess|T1)>"]
    assert repr(lock) == "<Lock(owner=SomeOtherThread)>"
    lock.release()

    done = ctx.Event()
    p = ctx.Process(target=targets.hold_until, args=(lock, str(tmp_path / "ready"), done))
    p.name = "P1"
    p.start()
    try:
        assert wait_for_json(tmp_path / "ready")["repr"] == "<Lock(owner=P1)>"
        assert repr(lock) == "<Lock(owner=SomeOtherProcess)>"
    finally:
        done.set()
    finish(p)


def test_rlock_repr_held_by_another_thread() -> None:
    lock = phalanx.RLock()
    holder = HeldInThread(lock)
    try:
        assert re.fullmatch(r"<RLock\(SomeOtherThread, (nonzero|1)\)>", repr(lock)), repr(lock)
    finally:
        holder.stop()
    assert repr(lock) == "<RLock(None, 0)>"


def test_rlock_repr_held_by_another_process(ctx: BaseContext, tmp_path: Path) -> None:
    lock, done = ctx.RLock(), ctx.Event()
    p = start(ctx, targets.hold_until, lock, str(tmp_path / "ready"), done)
    try:
        wait_for_json(tmp_path / "ready")
        text = repr(lock)
    finally:
        done.set()
        finish(p)
    assert text == "<RLock(SomeOtherProcess, nonzero)>"


def test_event_repr() -> None:
    event = phalanx.Event()
    assert re.fullmatch(r"<Event at 0x[0-9a-f]+ unset>", repr(event))
    event.set()
    assert repr(event) == f"<Event at {id(event):#x} set>"


# --- Condition --------------------------------------------------------------------------------


def test_condition_notify_n_and_notify_all(ctx: BaseContext) -> None:
    cond = ctx.Condition()
    sleeping, woken = ctx.Semaphore(0), ctx.Semaphore(0)
    procs = [start(ctx, targets.cond_waiter, cond, sleeping, woken) for _ in range(3)]
    threads = [Background(targets.cond_waiter, cond, sleeping, woken) for _ in range(3)]
    try:
        for _ in range(6):
            assert sleeping.acquire(timeout=DEADLINE)
        # Each waiter holds the lock from its announcement until wait() releases
        # it: once we hold the lock, all six are waiting.
        with cond:
            assert repr(cond).endswith(", 6)>")
            cond.notify(2)
            assert repr(cond).endswith(", 4)>")
        for _ in range(2):
            assert woken.acquire(timeout=DEADLINE)
        assert woken.acquire(timeout=SHORT) is False  # nobody else woke up
        with cond:
            cond.notify(1)
        assert woken.acquire(timeout=DEADLINE)
        assert woken.acquire(timeout=SHORT) is False
        with cond:
            cond.notify_all()
            assert repr(cond).endswith(", 0)>")
        for _ in range(3):
            assert woken.acquire(timeout=DEADLINE)
    finally:
        with cond:
            cond.notify_all()  # a failed assertion must not leave anyone waiting
    for t in threads:
        t.result()
    for p in procs:
        finish(p)


def test_condition_on_a_plain_lock(ctx: BaseContext) -> None:
    cond = ctx.Condition(ctx.Lock())
    sleeping, woken = ctx.Semaphore(0), ctx.Semaphore(0)
    procs = [start(ctx, targets.cond_waiter, cond, sleeping, woken) for _ in range(2)]
    for _ in range(2):
        assert sleeping.acquire(timeout=DEADLINE)
    with cond:
        cond.notify_all()
    for _ in range(2):
        assert woken.acquire(timeout=DEADLINE)
    for p in procs:
        finish(p)


def test_condition_wait_timeout_returns_false(ctx: BaseContext, tmp_path: Path) -> None:
    cond = ctx.Condition()
    with cond:
        assert_times_out(lambda: cond.wait(SHORT))
        # The lock is held again after the timeout, recursion count included.
        assert try_in_thread(cond, False) is False
    with cond, cond:
        assert cond.wait(SHORT) is False
        assert repr(cond) == "<Condition(<RLock(MainProcess, 2)>, 0)>"
    p = start(ctx, targets.cond_wait_timeout, cond, str(tmp_path / "out"), SHORT)
    result = wait_for_json(tmp_path / "out")
    finish(p)
    assert result["result"] is False
    assert SHORT * 0.9 <= result["elapsed"] < SLACK


def test_condition_after_timed_out_waiters(ctx: BaseContext) -> None:
    """Waiters that timed out do not absorb a later notify meant for a real waiter."""
    cond = ctx.Condition()
    sleeping, woken = ctx.Semaphore(0), ctx.Semaphore(0)
    quitters = [start(ctx, targets.cond_waiter, cond, sleeping, woken, SHORT) for _ in range(2)]
    for _ in range(2):
        assert woken.acquire(timeout=DEADLINE)  # both timed out
    for p in quitters:
        finish(p)
    with cond:
        cond.notify()  # nobody is waiting: returns at once
    for _ in range(2):
        assert sleeping.acquire(timeout=DEADLINE)
    p = start(ctx, targets.cond_waiter, cond, sleeping, woken)
    assert sleeping.acquire(timeout=DEADLINE)
    with cond:
        cond.notify()
    assert woken.acquire(timeout=DEADLINE)
    finish(p)


def test_condition_wait_for_a_shared_value(ctx: BaseContext) -> None:
    cond, value, go = ctx.Condition(), ctx.Value("i", 0, lock=False), ctx.Semaphore(0)
    p = start(ctx, targets.cond_step_value, cond, value, 3, go)
    seen: list[int] = []

    def predicate() -> Any:
        seen.append(value.value)
        return value.value == 3 and "done"

    with cond:
        for _ in range(3):
            go.release()  # the child needs the lock for each step: only wait() lets it in
        result = cond.wait_for(predicate, timeout=DEADLINE)
    finish(p)
    assert result == "done"  # the predicate's own value
    assert seen[0] == 0 and seen[-1] == 3
    assert seen == sorted(seen)


def test_condition_wait_for_times_out() -> None:
    cond = phalanx.Condition()
    calls = []

    def never() -> int:
        calls.append(1)
        return 0

    with cond:
        t0 = time.monotonic()
        assert cond.wait_for(never, timeout=SHORT) == 0
        assert SHORT * 0.9 <= time.monotonic() - t0 < SLACK
        assert cond.wait_for(lambda: "ready", timeout=0) == "ready"
    assert len(calls) >= 2


def test_condition_between_threads() -> None:
    cond = phalanx.Condition()
    items: list[int] = []

    def consumer() -> list[int]:
        with cond:
            assert cond.wait_for(lambda: len(items) == 5, timeout=DEADLINE)
            return list(items)

    readers = [Background(consumer) for _ in range(4)]
    for i in range(5):
        with cond:
            items.append(i)
            cond.notify_all()
    for r in readers:
        assert r.result() == [0, 1, 2, 3, 4]


# --- Barrier ----------------------------------------------------------------------------------


def test_barrier_with_an_action_across_processes(ctx: BaseContext, tmp_path: Path) -> None:
    rounds = 5
    counter = ctx.Value("i", 0, lock=False)
    barrier = ctx.Barrier(3, action=functools.partial(targets.bump, counter))
    assert barrier.parties == 3
    paths = [str(tmp_path / f"child{i}") for i in range(2)]
    procs = [start(ctx, targets.barrier_rounds, barrier, path, rounds, counter) for path in paths]
    mine, seen = [], []
    for _ in range(rounds):
        mine.append(barrier.wait(DEADLINE))
        seen.append(counter.value)
    results = [wait_for_json(path) for path in paths]
    for p in procs:
        finish(p)
    assert counter.value == rounds  # one action per round
    assert seen == list(range(1, rounds + 1))
    for r in results:
        assert r["seen"] == seen
    for i in range(rounds):
        assert sorted([mine[i], *(r["indices"][i] for r in results)]) == [0, 1, 2]
    assert barrier.n_waiting == 0 and not barrier.broken


def test_barrier_n_waiting(ctx: BaseContext, tmp_path: Path) -> None:
    barrier = ctx.Barrier(3)
    paths = [str(tmp_path / f"child{i}") for i in range(2)]
    procs = [start(ctx, targets.barrier_wait_report, barrier, path) for path in paths]
    wait_until(lambda: barrier.n_waiting == 2, what="two parties waiting")
    assert re.fullmatch(r"<Barrier at 0x[0-9a-f]+: waiters=2/3>", repr(barrier))
    index = barrier.wait(DEADLINE)
    results = [wait_for_json(path) for path in paths]
    for p in procs:
        finish(p)
    assert sorted([index, *(r["index"] for r in results)]) == [0, 1, 2]
    assert barrier.n_waiting == 0


def test_barrier_timeout_breaks_it_for_everyone(ctx: BaseContext, tmp_path: Path) -> None:
    barrier = ctx.Barrier(3)
    p = start(ctx, targets.barrier_wait_report, barrier, str(tmp_path / "out"))
    wait_until(lambda: barrier.n_waiting == 1, what="the child waiting")
    t0 = time.monotonic()
    with pytest.raises(threading.BrokenBarrierError):
        barrier.wait(timeout=SHORT)
    assert SHORT * 0.9 <= time.monotonic() - t0 < SLACK
    result = wait_for_json(tmp_path / "out")
    finish(p)
    assert result["error"] == "BrokenBarrierError"
    assert barrier.broken
    with pytest.raises(synchronize.BrokenBarrierError):
        barrier.wait(DEADLINE)  # at once: broken stays broken
    assert re.fullmatch(r"<Barrier at 0x[0-9a-f]+: broken>", repr(barrier))
    barrier.reset()
    assert not barrier.broken
    assert barrier.n_waiting == 0


def test_barrier_default_timeout() -> None:
    barrier = phalanx.Barrier(2, timeout=SHORT)
    t0 = time.monotonic()
    with pytest.raises(threading.BrokenBarrierError):
        barrier.wait()
    assert SHORT * 0.9 <= time.monotonic() - t0 < SLACK
    assert barrier.broken


def test_barrier_abort(ctx: BaseContext, tmp_path: Path) -> None:
    barrier = ctx.Barrier(2)
    p = start(ctx, targets.barrier_wait_report, barrier, str(tmp_path / "out"))
    wait_until(lambda: barrier.n_waiting == 1, what="the child waiting")
    barrier.abort()
    result = wait_for_json(tmp_path / "out")
    finish(p)
    assert result["error"] == "BrokenBarrierError"
    assert result["broken"] is True
    assert barrier.broken
    with pytest.raises(threading.BrokenBarrierError):
        barrier.wait(DEADLINE)


def test_barrier_reset_releases_waiters_and_is_reusable(ctx: BaseContext, tmp_path: Path) -> None:
    barrier = ctx.Barrier(2)
    p = start(ctx, targets.barrier_wait_twice, barrier, str(tmp_path / "out"))
    wait_until(lambda: barrier.n_waiting == 1, what="the child waiting")
    barrier.reset()
    index = barrier.wait(DEADLINE)  # the child's second wait and ours make a full round
    result = wait_for_json(tmp_path / "out")
    finish(p)
    assert result["outcomes"][0] == "BrokenBarrierError"
    assert sorted([index, result["outcomes"][1]]) == [0, 1]
    assert not barrier.broken


def _fail() -> None:
    raise KeyError("action failed")


def test_barrier_failing_action_breaks_it() -> None:
    barrier = phalanx.Barrier(2, action=_fail)
    other = Background(barrier.wait, DEADLINE)
    wait_until(lambda: barrier.n_waiting == 1, what="the thread waiting")
    with pytest.raises(KeyError, match="action failed"):
        barrier.wait(DEADLINE)
    assert isinstance(other.exception(), threading.BrokenBarrierError)
    assert barrier.broken


def test_barrier_between_threads_many_rounds() -> None:
    barrier = phalanx.Barrier(4)
    log: list[tuple[int, int]] = []
    lock = threading.Lock()

    def party(n: int) -> None:
        for r in range(20):
            with lock:
                log.append((r, n))
            barrier.wait(DEADLINE)

    parties = [Background(party, n) for n in range(4)]
    for b in parties:
        b.result()
    # Nobody starts round r+1 before everybody has started round r.
    rounds = [r for r, _ in log]
    for i in range(0, len(rounds), 4):
        assert rounds[i : i + 4] == [i // 4] * 4


# --- Event ------------------------------------------------------------------------------------


def test_event_set_wakes_a_waiting_child(ctx: BaseContext, tmp_path: Path) -> None:
    event = ctx.Event()
    p = start(ctx, targets.event_wait_report, event, str(tmp_path / "out"))
    event.set()
    result = wait_for_json(tmp_path / "out")
    finish(p)
    assert result["result"] is True and result["set"] is True


def test_event_set_by_a_child(ctx: BaseContext) -> None:
    event = ctx.Event()
    assert not event.is_set()
    p = start(ctx, targets.event_set, event)
    assert event.wait(DEADLINE) is True
    finish(p)
    assert event.is_set()


def test_event_clear_and_timeout(ctx: BaseContext, tmp_path: Path) -> None:
    event = ctx.Event()
    assert_times_out(lambda: event.wait(SHORT))
    event.set()
    assert event.wait(0) is True and event.wait() is True  # set: no waiting
    event.clear()
    assert not event.is_set()
    p = start(ctx, targets.event_wait_report, event, str(tmp_path / "out"), SHORT)
    result = wait_for_json(tmp_path / "out")
    finish(p)
    assert result["result"] is False and result["set"] is False
    assert SHORT * 0.9 <= result["elapsed"] < SLACK


def test_event_ping_pong(ctx: BaseContext) -> None:
    ping, pong = ctx.Event(), ctx.Event()
    p = start(ctx, targets.event_ping_pong, ping, pong, 20)
    for _ in range(20):
        ping.set()
        assert pong.wait(DEADLINE)
        pong.clear()
    finish(p)
    assert not ping.is_set() and not pong.is_set()


def test_event_wakes_many_waiters(ctx: BaseContext, tmp_path: Path) -> None:
    event = ctx.Event()
    paths = [str(tmp_path / f"out{i}") for i in range(3)]
    procs = [start(ctx, targets.event_wait_report, event, path) for path in paths]
    threads = [Background(event.wait, DEADLINE) for _ in range(3)]
    event.set()
    for t in threads:
        assert t.result() is True
    for path in paths:
        assert wait_for_json(path)["result"] is True
    for p in procs:
        finish(p)


# --- owner death ------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "times"), [("Lock", 1), ("RLock", 2)])
def test_lock_of_a_killed_owner_is_recovered(
    ctx: BaseContext, tmp_path: Path, kind: str, times: int
) -> None:
    lock = getattr(ctx, kind)()
    p = start(ctx, targets.hold_then_sleep, lock, str(tmp_path / "ready"), times)
    try:
        wait_for_json(tmp_path / "ready")
        assert lock.acquire(False) is False
    finally:
        kill(p)
    assert p.exitcode == -signal.SIGKILL
    t0 = time.monotonic()
    with pytest.warns(AbandonedLockWarning, match=rf"pid {p.pid}\b") as record:
        assert lock.acquire(timeout=5) is True
    assert time.monotonic() - t0 < 3.0
    assert len(record) == 1
    assert issubclass(AbandonedLockWarning, RuntimeWarning)
    # Ours now, like any acquired lock.
    assert try_in_thread(lock, False) is False
    lock.release()
    assert lock.acquire(False) is True
    lock.release()


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_waiter_blocked_before_the_owner_dies_recovers(
    ctx: BaseContext, tmp_path: Path, kind: str
) -> None:
    """The owner is SIGKILLed while we wait, and stays an unreaped zombie meanwhile."""
    lock = getattr(ctx, kind)()
    p = start(ctx, targets.hold_then_sleep, lock, str(tmp_path / "ready"))
    try:
        wait_for_json(tmp_path / "ready")
        with pytest.warns(AbandonedLockWarning):
            waiter = Background(try_in_thread, lock, True, 10.0)
            assert not waiter.done(SHORT)  # blocked on a live owner
            os.kill(p.pid, signal.SIGKILL)  # no join: the owner is a zombie until later
            t0 = time.monotonic()
            assert waiter.result() is True
        assert time.monotonic() - t0 < 3.0
    finally:
        kill(p)
    assert lock.acquire(False)
    lock.release()


def test_abandoned_lock_warning_as_error_leaves_the_lock_released(
    ctx: BaseContext, tmp_path: Path
) -> None:
    lock = ctx.Lock()
    p = start(ctx, targets.hold_then_sleep, lock, str(tmp_path / "ready"))
    try:
        wait_for_json(tmp_path / "ready")
    finally:
        kill(p)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AbandonedLockWarning)
        t0 = time.monotonic()
        with pytest.raises(AbandonedLockWarning, match="died without releasing"):
            lock.acquire(timeout=5)
        assert time.monotonic() - t0 < 3.0
    assert lock.acquire(False) is True  # released, and no owner left to recover from
    lock.release()
    assert lock.acquire(False) is True
    lock.release()


def test_racing_waiters_recover_the_lock_exactly_once(ctx: BaseContext, tmp_path: Path) -> None:
    lock, done, started = ctx.Lock(), ctx.Event(), ctx.Semaphore(0)
    owner = start(ctx, targets.hold_then_sleep, lock, str(tmp_path / "ready"))
    waiters: list[BaseProcess] = []
    try:
        wait_for_json(tmp_path / "ready")
        paths = [str(tmp_path / f"waiter{i}") for i in range(3)]
        waiters = [start(ctx, targets.recover, lock, path, 2.5, done, started) for path in paths]
        for _ in waiters:
            assert started.acquire(timeout=DEADLINE)
        os.kill(owner.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        results = [wait_for_json(path) for path in paths]
    finally:
        done.set()
        kill(owner)
        for w in waiters:
            finish(w)
    winners = [r for r in results if r["got"]]
    assert len(winners) == 1, results
    assert len(winners[0]["warned"]) == 1
    assert f"(pid {owner.pid})" in winners[0]["warned"][0]
    assert all(not r["warned"] for r in results if not r["got"]), results
    assert winners[0]["at"] - killed_at < 2.0  # CLOCK_MONOTONIC is system-wide
    assert lock.acquire(timeout=DEADLINE)  # released by the winner, no warning
    lock.release()


def test_a_released_lock_of_a_dead_process_is_not_reported(ctx: BaseContext) -> None:
    """A child that took and released the lock before dying leaves nothing to recover."""
    counter, lock = ctx.RawValue("i", 0), ctx.Lock()
    p = start(ctx, targets.increment, counter, lock, 10)
    finish(p)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lock.acquire(timeout=DEADLINE)
    lock.release()


def test_semaphores_do_not_track_owners(ctx: BaseContext, tmp_path: Path) -> None:
    """Only locks are recovered: a semaphore unit taken by a dead process stays taken."""
    sem = ctx.Semaphore(1)
    p = start(ctx, targets.hold_then_sleep, sem, str(tmp_path / "ready"))
    try:
        wait_for_json(tmp_path / "ready")
    finally:
        kill(p)
    assert_times_out(lambda: sem.acquire(timeout=SHORT + 0.3))


def test_a_bounded_semaphore_of_one_is_not_a_lock(ctx: BaseContext) -> None:
    sem = ctx.BoundedSemaphore(1)
    p = start(ctx, targets.take, sem)  # takes the only unit for good and exits
    finish(p)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sem.acquire(timeout=SHORT + 0.3) is False


# A condition variable whose waiter was SIGKILLed: can anyone still notify it?
# Run in a child interpreter: the notify may block for good.
NOTIFY_AFTER_A_DEAD_WAITER = """
import json, os, sys, threading
import phalanx, _sync_targets

if __name__ == "__main__":
    ctx = phalanx.get_context(sys.argv[1])
    cond, sleeping, woken = ctx.Condition(), ctx.Semaphore(0), ctx.Semaphore(0)
    p = ctx.Process(target=_sync_targets.cond_waiter, args=(cond, sleeping, woken))
    p.start()
    assert sleeping.acquire(timeout=30)
    with cond:
        pass  # the waiter held the lock until wait() released it: it is waiting
    p.kill()
    p.join(30)

    def notify():
        with cond:
            cond.notify_all()

    t = threading.Thread(target=notify, daemon=True)
    t.start()
    t.join(5.0)
    print(json.dumps({"returned": not t.is_alive()}), flush=True)
    os._exit(0)
"""


def test_notify_all_after_a_waiter_was_killed() -> None:
    """The stdlib's notify_all() waits forever for a dead waiter to wake; ours does not."""
    result = run_python(["-c", python_code(NOTIFY_AFTER_A_DEAD_WAITER), "fork"])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"returned": True}


# --- pickling ---------------------------------------------------------------------------------

FACTORIES = ["Lock", "RLock", "Semaphore", "BoundedSemaphore", "Condition", "Event", "Barrier"]


def _make(name: str) -> Any:
    return getattr(phalanx, name)(2) if name == "Barrier" else getattr(phalanx, name)()


@pytest.mark.parametrize("name", FACTORIES)
def test_pickling_outside_process_start_is_refused(name: str) -> None:
    obj = _make(name)
    with pytest.raises(RuntimeError, match="inheritance"):
        ForkingPickler.dumps(obj)
    with pytest.raises(RuntimeError, match="inheritance"):
        pickle.dumps(obj)


@pytest.mark.parametrize("name", ["Lock", "Event"])
def test_sending_a_lock_over_a_pipe_is_refused(name: str) -> None:
    a, b = phalanx.Pipe()
    with a, b:
        with pytest.raises(RuntimeError, match="inheritance"):
            a.send(_make(name))
        a.send("still usable")
        assert b.poll(DEADLINE) and b.recv() == "still usable"


# --- bad input --------------------------------------------------------------------------------


def test_releasing_an_unlocked_lock() -> None:
    lock = phalanx.Lock()
    with pytest.raises(ValueError, match="released too many times"):
        lock.release()
    lock.acquire()
    lock.release()
    with pytest.raises(ValueError, match="released too many times"):
        lock.release()
    assert lock.acquire(False)  # still a working lock
    lock.release()


def test_bounded_semaphore_over_its_bound() -> None:
    sem = phalanx.BoundedSemaphore(1)
    with pytest.raises(ValueError, match="released too many times"):
        sem.release()


@pytest.mark.parametrize("factory", ["Semaphore", "BoundedSemaphore"])
@pytest.mark.parametrize("value", [-1, -100, 2**31])
def test_semaphore_value_out_of_range(factory: str, value: int) -> None:
    with pytest.raises(ValueError, match=rf"\(got {value}\)"):
        getattr(phalanx, factory)(value)


@pytest.mark.parametrize("value", ["x", 1.5, None])
def test_semaphore_value_of_the_wrong_type(value: Any) -> None:
    with pytest.raises(TypeError, match=re.escape(repr(value))):
        phalanx.Semaphore(value)


@pytest.mark.parametrize("parties", [0, -1, "3", 2.0])
def test_barrier_parties_must_be_a_positive_int(parties: Any) -> None:
    with pytest.raises(ValueError, match=re.escape(f"(got {parties!r})")):
        phalanx.Barrier(parties)


def test_barrier_action_must_be_callable() -> None:
    with pytest.raises(TypeError, match="callable"):
        phalanx.Barrier(2, action="not a function")


@pytest.mark.parametrize("call", ["wait", "notify", "notify_all", "wait_for"])
def test_condition_used_without_its_lock(call: str) -> None:
    cond = phalanx.Condition()
    args = (lambda: False,) if call == "wait_for" else ()
    with pytest.raises(LockStateError, match="must acquire"):
        getattr(cond, call)(*args, **({"timeout": SHORT} if call == "wait_for" else {}))


def test_condition_held_by_another_thread_is_not_ours() -> None:
    cond = phalanx.Condition()
    with cond:
        err = Background(cond.notify).exception()
    assert isinstance(err, LockStateError)
    assert isinstance(err, AssertionError) and isinstance(err, RuntimeError)
