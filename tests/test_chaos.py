"""What an adversary broke (issue 13), each defect pinned by a regression test.

Each section is one class of defect: a regression test that drives the race
to the exact point where one can (a hook or a signal at that point), and a
stress test that repeats the abuse for many rounds within a bounded time.
Real processes, real signals, real sockets; every blocking call has a
deadline; each test judges only the processes, ports and segments it made.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import _chaos_targets as c
import _sync_targets
import phalanx
from _targets import DEADLINE, bounded, kill, start, wait_for_json
from phalanx._errors import AbandonedLockWarning
from phalanx.futures import ProcessPoolExecutor
from phalanx.pool import Pool

STOP_WITHIN = 10.0


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
