"""The optional compiled hot path (``phalanx._speedups``) and its pure-Python fallback.

The whole suite runs on whichever path the install has (CI runs it once more on
an install built without a compiler); these tests check that the right path is
taken, that ``PHALANX_PURE_PYTHON=1`` forces the fallback, and that the two
paths share one lock exactly (a child may take the other path).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import _sync_targets as targets
import phalanx
from _targets import DEADLINE, finish, kill, start, wait_for_json
from phalanx import _fast
from phalanx._errors import AbandonedLockWarning, LockStateError

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
    assert counter.value == 6000


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_threads_and_a_process_contend_exactly(tmp_path: Path, kind: str) -> None:
    """Contention sends callers through the slow path and back: nothing is lost."""
    ctx = phalanx.get_context("fork")
    counter, lock = ctx.Value("i", 0, lock=False), getattr(ctx, kind)()
    p = start(ctx, targets.increment, counter, lock, 4000)
    threads = [
        threading.Thread(target=targets.increment, args=(counter, lock, 4000)) for _ in range(3)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(DEADLINE)
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
