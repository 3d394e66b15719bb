"""The optional compiled hot path (``phalanx._speedups``) and its pure-Python fallback.

The whole suite runs on whichever path the install has (CI runs it once more on
an install built without a compiler); these tests check that the right path is
taken, that ``PHALANX_PURE_PYTHON=1`` forces the fallback, and that the two
paths share one lock exactly (a child may take the other path).
"""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import _sync_targets as targets
import phalanx
from _targets import (
    DEADLINE,
    finish,
    kill,
    python_code,
    run_python,
    start,
    threads_switching_at_every_bytecode,
    wait_for_json,
    wait_until,
)
from phalanx import _fast, _platform, _semlock
from phalanx.errors import AbandonedLockWarning, LockStateError

compiled = pytest.mark.skipif(_fast.speedups is None, reason="phalanx._speedups is not built")
KINDS = ("Lock", "RLock", "Semaphore", "BoundedSemaphore")


def _core_types(env: dict[str, str]) -> dict[str, Any]:
    code = (
        "import json, phalanx, phalanx._fast as f;"
        f"print(json.dumps({{'pure': f.speedups is None, **{{k: type(getattr(phalanx, k)()"
        f"._semlock).__name__ for k in {KINDS!r}}}}}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=True,
    )
    return dict(json.loads(out.stdout))


@compiled
def test_locks_take_the_compiled_path_where_it_is_built() -> None:
    got = _core_types({"PHALANX_PURE_PYTHON": ""})
    assert got == {"pure": False, **{kind: "_CompiledSemLock" for kind in KINDS}}


def test_phalanx_pure_python_forces_the_fallback() -> None:
    got = _core_types({"PHALANX_PURE_PYTHON": "1"})
    assert got == {"pure": True, **{kind: "SemLock" for kind in KINDS}}


@pytest.mark.parametrize("child_pure", ["1", ""])
def test_a_child_on_the_other_path_shares_the_lock_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, child_pure: str
) -> None:
    """A spawned child inherits the environment: set there, it takes the other path
    from its parent's (when this process is compiled), on the same shared slot."""
    ctx = phalanx.get_context("spawn")
    counter, lock = ctx.Value("i", 0, lock=False), ctx.Lock()
    monkeypatch.setenv("PHALANX_PURE_PYTHON", child_pure)
    p = start(ctx, targets.increment_and_report, counter, lock, 3000, str(tmp_path / "core"))
    monkeypatch.delenv("PHALANX_PURE_PYTHON")
    try:
        report = wait_for_json(tmp_path / "core")
        targets.increment(counter, lock, 3000)
        finish(p)
    finally:
        kill(p)
    assert report["pure"] == bool(child_pure) or _fast.speedups is None
    # A lock made here is atomic where the extension is loaded: only its code takes
    # it, so a child on the pure path loads the extension for that lock.  Made here
    # on the pure path (guarded), a child with the extension takes it compiled too.
    compiled_here = _fast.speedups is not None
    built = importlib.util.find_spec("phalanx._speedups") is not None
    child_compiled = compiled_here or (built and not child_pure)
    assert report["core"] == ("_CompiledSemLock" if child_compiled else "SemLock")
    assert counter.value == 6000


@compiled
def test_a_pure_parents_guarded_lock_is_shared_with_a_compiled_child(tmp_path: Path) -> None:
    """The other direction: a lock made on the pure path (guarded by a robust mutex)
    taken by a compiled child, which speaks that protocol too."""
    code = python_code(
        f"""
import json, os, phalanx, _sync_targets as targets, _targets
if __name__ == "__main__":
    ctx = phalanx.get_context("spawn")
    counter, lock = ctx.Value("i", 0, lock=False), ctx.Lock()
    mine = type(lock._semlock).__name__
    os.environ["PHALANX_PURE_PYTHON"] = ""
    report = {str(tmp_path / "c")!r}
    p = _targets.start(ctx, targets.increment_and_report, counter, lock, 3000, report)
    targets.increment(counter, lock, 3000)
    p.join(_targets.DEADLINE)
    print(json.dumps({{"mine": mine, "exitcode": p.exitcode, "value": counter.value}}))
"""
    )
    out = run_python(["-c", code], env={**os.environ, "PHALANX_PURE_PYTHON": "1"})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"mine": "SemLock", "exitcode": 0, "value": 6000}
    assert wait_for_json(tmp_path / "c") == {"core": "_CompiledSemLock", "pure": False}


@compiled
def test_an_atomic_lock_without_the_extension_is_refused_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lock = phalanx.Lock()
    core = lock._semlock
    monkeypatch.setattr(_semlock, "_speedups", None)
    monkeypatch.setattr(_semlock, "_load_speedups", lambda: None)
    with pytest.raises(RuntimeError, match=r"C extension.*same phalanx install"):
        _semlock._rebuild(core._block, core.kind, core.maxvalue, True)


def _owner_word(lock: Any) -> memoryview:
    return lock._semlock._block.view()[32:40].cast("Q")


def _waiters(lock: Any) -> int:
    return int(lock._semlock._block.view()[120:124].cast("i")[0])


@compiled
def test_a_live_owner_is_waited_for_and_a_reused_pid_is_taken_over() -> None:
    """The owner word holds a pid and the low half of that process's start time: a live
    process with that start is waited for; the same pid with another start time (the pid
    reused since) is a dead owner's."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start_time = _platform.process_start_time(sleeper.pid)
        assert start_time is not None
        lock = phalanx.Lock()
        word = _owner_word(lock)
        word[0] = sleeper.pid | (start_time & 0xFFFFFFFF) << 32
        assert lock.acquire(True, 0.6) is False  # alive: waited for, not taken
        assert _waiters(lock) == 0
        word[0] = sleeper.pid | ((start_time + 1) & 0xFFFFFFFF) << 32
        with pytest.warns(AbandonedLockWarning, match=rf"pid {sleeper.pid}\b"):
            assert lock.acquire(True, 5) is True
        assert word[0] & 0xFFFFFFFF == os.getpid()
        lock.release()
    finally:
        sleeper.kill()
        sleeper.wait(DEADLINE)


class _Interrupted(Exception):
    pass


@compiled
@pytest.mark.parametrize("kind", ["Lock", "Semaphore"])
def test_a_signal_handler_runs_during_a_compiled_wait(kind: str) -> None:
    """The wait happens in C with the GIL released: a signal's Python handler still runs
    at once, its exception ends the wait (the lock's waiter count put back), and a
    handler that returns lets the wait go on to its timeout."""
    lock = getattr(phalanx, kind)()
    if kind == "Semaphore":
        assert lock.acquire(False)
    else:
        _owner_word(lock)[0] = os.getppid()  # held by a live process (pytest's parent)
    calls: list[float] = []

    def interrupt(signum: int, frame: Any) -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise _Interrupted

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        t0 = time.monotonic()
        with pytest.raises(_Interrupted):
            lock.acquire(True, 10)
        assert time.monotonic() - t0 < 5
        if kind == "Lock":
            assert _waiters(lock) == 0
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        t0 = time.monotonic()
        assert lock.acquire(True, 0.5) is False
        assert len(calls) == 2 and time.monotonic() - t0 >= 0.45
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    if kind == "Lock":
        _owner_word(lock)[0] = 0
        assert lock.acquire(False)
    lock.release()


@compiled
def test_a_killed_waiter_leaves_the_doorbell_small(tmp_path: Path) -> None:
    """A waiter SIGKILLed while registered leaves the waiter count up for good: every
    release then posts the semaphore, but only while no post is pending, so it stays
    at most 1 and a later waiter does not spin through a backlog."""
    ctx = phalanx.get_context("fork")
    lock = ctx.Lock()
    assert lock.acquire(False)
    p = start(ctx, targets.try_acquire, lock, str(tmp_path / "never"), DEADLINE)
    try:
        wait_until(lambda: _waiters(lock) == 1, what="the child waits")
    finally:
        kill(p)
    for _ in range(1000):
        lock.release()
        assert lock.acquire(False)
    sem = lock._semlock._sem
    assert _platform.sem_getvalue(sem) <= 1
    lock.release()
    q = start(ctx, targets.increment, ctx.Value("i", 0, lock=False), lock, 2000)
    targets.increment(ctx.Value("i", 0, lock=False), lock, 2000)
    finish(q)


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_threads_and_a_process_contend_exactly(tmp_path: Path, kind: str) -> None:
    """Contention sends callers through the slow path and back: nothing is lost.

    The threads switch at every bytecode: on the pure path a hold count that two
    threads of one process wrote at once (a release counting down after it had freed
    the lock, as a new holder counted up) once kept an RLock taken for good."""
    ctx = phalanx.get_context("fork")
    counter, lock = ctx.Value("i", 0, lock=False), getattr(ctx, kind)()
    p = start(ctx, targets.increment, counter, lock, 4000)
    threads = [
        threading.Thread(target=targets.increment, args=(counter, lock, 4000), daemon=True)
        for _ in range(3)
    ]
    try:
        with threads_switching_at_every_bytecode():
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(DEADLINE)
        assert not any(thread.is_alive() for thread in threads), "a thread waits for good"
        finish(p)
    finally:
        kill(p)
    assert counter.value == 16000


def test_a_forked_child_of_an_rlock_owner_does_not_own_it(tmp_path: Path) -> None:
    ctx = phalanx.get_context("fork")
    rlock = ctx.RLock()
    rlock.acquire()
    rlock.acquire()
    try:
        p = start(ctx, targets.try_held_rlock, rlock, str(tmp_path / "child"))
        finish(p)
        assert wait_for_json(tmp_path / "child") == {"mine": False, "got": False}
        assert rlock._semlock._is_mine() and rlock._semlock._count() == 2
    finally:
        rlock.release()
        rlock.release()
    assert rlock.acquire(False)
    rlock.release()


@pytest.mark.parametrize("kind", KINDS)
def test_acquire_takes_the_stdlib_arguments(kind: str) -> None:
    ours, theirs = getattr(phalanx, kind)(), getattr(multiprocessing, kind)()
    for lock in (ours, theirs):
        assert lock.acquire(True, 0.5) is True
        lock.release()
        assert lock.acquire(block=False) is True
        lock.release()
        assert lock.acquire(timeout=0.1) is True
        lock.release()
        with pytest.raises(TypeError):
            lock.acquire(blocking=False)
        with pytest.raises(TypeError):
            lock.acquire(True, None, 1)


def test_errors_come_from_the_slow_path_on_both_paths() -> None:
    rlock = phalanx.RLock()
    with pytest.raises(LockStateError, match="not owned"):
        rlock.release()
    lock = phalanx.Lock()
    with pytest.raises(ValueError, match="released too many times"):
        lock.release()
    bounded = phalanx.BoundedSemaphore(2)
    with pytest.raises(ValueError, match="released too many times"):
        bounded.release()
    assert bounded.acquire(False) and bounded.acquire(False) and not bounded.acquire(False)
    bounded.release()
    bounded.release()


@compiled
@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_a_dead_owners_lock_is_recovered_on_the_compiled_path(tmp_path: Path, kind: str) -> None:
    """The owner is SIGKILLed holding the lock: the next acquire (compiled, then the
    slow path it falls back to) takes it over with the warning."""
    ctx = phalanx.get_context("fork")
    lock = getattr(ctx, kind)()
    assert type(lock._semlock).__name__ == "_CompiledSemLock"
    p = start(ctx, targets.hold_then_sleep, lock, str(tmp_path / "ready"))
    try:
        wait_for_json(tmp_path / "ready")
        assert lock.acquire(False) is False
    finally:
        kill(p)
    with pytest.warns(AbandonedLockWarning, match=rf"pid {p.pid}\b"):
        assert lock.acquire(True, 5) is True
    lock.release()
    assert lock.acquire(False) is True
    lock.release()


@compiled
@pytest.mark.parametrize("kind", ["Lock", "Semaphore"])
def test_a_signal_another_thread_received_ends_a_compiled_wait_within_a_slice(
    kind: str,
) -> None:
    """The kernel may hand a process's signal to any of its threads: the main thread,
    asleep in C, is not woken by it, and runs the handler at its next slice (0.25 s)."""
    lock = getattr(phalanx, kind)()
    if kind == "Semaphore":
        assert lock.acquire(False)
    else:
        _owner_word(lock)[0] = os.getppid()  # held by a live process

    def interrupt(signum: int, frame: Any) -> None:
        raise _Interrupted

    def signal_myself() -> None:
        time.sleep(0.1)
        signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)

    old = signal.signal(signal.SIGUSR1, interrupt)
    helper = threading.Thread(target=signal_myself)
    try:
        helper.start()
        t0 = time.monotonic()
        with pytest.raises(_Interrupted):
            lock.acquire(True, 10)
        assert time.monotonic() - t0 < 2
    finally:
        helper.join(DEADLINE)
        signal.signal(signal.SIGUSR1, old)
    if kind == "Lock":
        _owner_word(lock)[0] = 0
        assert lock.acquire(False)
    lock.release()
