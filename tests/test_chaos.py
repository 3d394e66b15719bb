"""What an adversary broke (issue 13), each defect pinned by a regression test.

Each section is one class of defect: a regression test that drives the race
to the exact point where one can (a hook or a signal at that point), and a
stress test that repeats the abuse for many rounds within a bounded time.
Real processes, real signals, real sockets; every blocking call has a
deadline; each test judges only the processes, ports and segments it made.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import _chaos_targets as c
import _sync_targets
import _targets
import phalanx
from _targets import DEADLINE, bounded, kill, start, wait_for_json, wait_until
from phalanx._errors import AbandonedLockWarning
from phalanx.futures import ProcessPoolExecutor
from phalanx.pool import Pool, PoolTerminatedError, WorkerLostError

STOP_WITHIN = 10.0


def worker_pids(pool: Pool) -> set[int]:
    return {p.pid for p in pool._pool}


@pytest.fixture
def make_pool(ctx: Any) -> Iterator[Callable[..., Pool]]:
    made: list[Pool] = []

    def make(*args: Any, **kwargs: Any) -> Pool:
        pool = Pool(*args, context=ctx, **kwargs)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.terminate()
        bounded(pool.join, STOP_WITHIN)


# --- a function that is not callable (defect 2) -----------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda p: p.apply_async(None),
        lambda p: p.apply(None, (1,)),
        lambda p: p.map(None, [1, 2]),
        lambda p: p.map_async(42, [1, 2]),
        lambda p: p.starmap(None, [(1,)]),
        lambda p: p.starmap_async("f", [(1,)]),
        lambda p: p.imap(None, [1]),
        lambda p: p.imap_unordered(None, [1]),
    ],
    ids=[
        "apply_async",
        "apply",
        "map",
        "map_async",
        "starmap",
        "starmap_async",
        "imap",
        "imap_unordered",
    ],
)
def test_a_function_that_is_not_callable_is_refused(
    make_pool: Callable[..., Pool], call: Callable[[Pool], Any]
) -> None:
    """It used to reach the worker as "function not sent", which asked again forever."""
    pool = make_pool(1)
    with pytest.raises(TypeError, match="func must be callable"):
        call(pool)
    assert pool.apply_async(c.slow_square, (3,)).get(timeout=DEADLINE) == 9


def test_the_executor_refuses_a_function_that_is_not_callable(ctx: Any) -> None:
    with ProcessPoolExecutor(1, mp_context=ctx) as executor:
        with pytest.raises(TypeError, match="fn must be callable"):
            executor.submit(None)  # type: ignore[arg-type]
        assert executor.submit(c.slow_square, 4).result(timeout=DEADLINE) == 16


# --- lock takeover (defect 8) -----------------------------------------------------------------


def test_a_recoverer_killed_in_its_warning_leaves_the_lock_recoverable(
    ctx: Any, tmp_path: Path
) -> None:
    """The lock is on record as the recoverer's before the warning can block."""
    lock = ctx.Lock()
    owner = start(ctx, _sync_targets.hold_then_sleep, lock, str(tmp_path / "owner"))
    try:
        wait_for_json(tmp_path / "owner")
    finally:
        kill(owner)
    recoverer = start(ctx, c.take_over_then_hang_in_the_warning, lock, str(tmp_path / "rec"))
    try:
        assert "hung" not in wait_for_json(tmp_path / "rec")  # inside the warning
    finally:
        kill(recoverer)
    t0 = time.monotonic()
    with pytest.warns(AbandonedLockWarning, match=rf"pid {recoverer.pid}\b"):
        assert lock.acquire(timeout=5) is True
    assert time.monotonic() - t0 < 3.0
    lock.release()


@pytest.mark.stress
def test_stress_recoverers_killed_at_random_moments(tmp_path: Path) -> None:
    """20 rounds: the owner dies holding the lock, its recoverer dies at a random moment."""
    ctx = phalanx.get_context("fork")
    rng = random.Random(13)
    lock = ctx.Lock()
    owner = start(ctx, _sync_targets.hold_then_sleep, lock, str(tmp_path / "owner"))
    try:
        wait_for_json(tmp_path / "owner")
    finally:
        kill(owner)
    for round_ in range(20):
        ready = str(tmp_path / f"rec{round_}")
        recoverer = start(ctx, c.take_over_then_hang_in_the_warning, lock, ready)
        time.sleep(rng.uniform(0.0, 0.4))  # before, during or after its takeover
        recoverer.kill()
        recoverer.join(DEADLINE)
        assert recoverer.exitcode == -signal.SIGKILL
    # Whoever the last owner on record is, it is dead: the lock comes back.
    t0 = time.monotonic()
    with pytest.warns(AbandonedLockWarning):
        assert lock.acquire(timeout=5) is True
    assert time.monotonic() - t0 < 3.0
    lock.release()


# --- blame: only a task the worker had begun (defect 6) ---------------------------------------


def _sent_to_a_worker(pool: Pool) -> bool:
    return any(w.sent for w in pool._backend.workers)


def test_a_worker_killed_in_its_initializer_blames_no_task(
    make_pool: Callable[..., Pool], tmp_path: Path
) -> None:
    gate = tmp_path / "first"
    pool = make_pool(1, initializer=c.first_worker_hangs_in_init, initargs=(str(gate),))
    result = pool.apply_async(c.slow_square, (3,))
    pid = wait_for_json(gate / "pid.json")["pid"]
    wait_until(lambda: _sent_to_a_worker(pool), what="the task sent to the worker")
    os.kill(pid, signal.SIGKILL)
    assert result.get(timeout=DEADLINE) == 9  # run by the replacement, not blamed


def test_a_worker_killed_idle_blames_no_task(make_pool: Callable[..., Pool]) -> None:
    """The task is in the worker's link, not yet read, when the worker is killed."""
    pool = make_pool(1)
    assert pool.apply(c.slow_square, (2,)) == 4
    (pid,) = worker_pids(pool)
    os.kill(pid, signal.SIGSTOP)  # idle: it cannot read what comes now
    try:
        result = pool.apply_async(c.slow_square, (3,))
        wait_until(lambda: _sent_to_a_worker(pool), what="the task sent to the worker")
    finally:
        os.kill(pid, signal.SIGKILL)
    assert result.get(timeout=DEADLINE) == 9


def test_a_worker_killed_while_unpickling_a_task_does_not_fail_it_at_once(
    make_pool: Callable[..., Pool], tmp_path: Path
) -> None:
    """Killed from outside in the middle of unpickling: the task runs again, alone."""
    pool = make_pool(1)
    assert pool.apply(c.value_of, (1,)) == 1
    result = pool.apply_async(c.value_of, (c.SlowToUnpickleOnce(str(tmp_path / "gate"), 5),))
    pid = wait_for_json(tmp_path / "gate" / "pid.json")["pid"]
    os.kill(pid, signal.SIGKILL)
    assert result.get(timeout=DEADLINE) == 5


@pytest.mark.parametrize("code", [3, -signal.SIGSEGV])
def test_workers_that_always_die_starting_break_the_pool(
    make_pool: Callable[..., Pool], code: int
) -> None:
    """Nothing to blame, but no endless restarts either: the pool breaks, loudly."""
    init: Any = c.exit_in_init if code > 0 else _targets.segfault
    pool = make_pool(1, initializer=init, initargs=(code,) if code > 0 else ())
    result = pool.apply_async(c.slow_square, (3,))
    with pytest.raises(PoolTerminatedError, match="died before they were ready 3 times") as info:
        result.get(timeout=DEADLINE)
    assert isinstance(info.value.__cause__, WorkerLostError)
    assert info.value.__cause__.exitcode == code
    with pytest.raises(PoolTerminatedError):
        pool.apply_async(c.slow_square, (3,))


@pytest.mark.stress
def test_stress_workers_killed_in_their_initializer(tmp_path: Path) -> None:
    """60 workers killed at random moments of their initializer: no task fails or is lost.

    Two of every three workers are killed (never ten in a row, which would
    break the pool); the others do the work.
    """
    rng = random.Random(6)
    starting = tmp_path / "starting"
    starting.mkdir()
    pool = Pool(  # workers retire after 10 tasks: new ones keep starting
        2,
        initializer=c.announce_init,
        initargs=(str(starting), 0.03),
        maxtasksperchild=10,
        context=phalanx.get_context("fork"),
    )
    killed: list[int] = []
    stop_killing = threading.Event()

    def killer() -> None:
        seen: set[str] = set()
        while not stop_killing.is_set() and len(killed) < 60:
            for name in sorted(set(os.listdir(starting)) - seen):
                seen.add(name)
                if len(seen) % 3 == 0:
                    continue  # spared
                time.sleep(rng.uniform(0.0, 0.03))
                try:
                    os.kill(int(name), signal.SIGKILL)
                    killed.append(int(name))
                except ProcessLookupError:
                    pass
            time.sleep(0.002)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while len(killed) < 60 and time.monotonic() < deadline:
            assert bounded(lambda: pool.map(c.value_of, range(40), chunksize=1)) == list(range(40))
            values = bounded(lambda: sorted(pool.imap_unordered(c.value_of, range(20))))
            assert values == list(range(20))
    finally:
        stop_killing.set()
        thread.join(DEADLINE)
        pool.terminate()
        bounded(pool.join, STOP_WITHIN)
    assert len(killed) >= 60
