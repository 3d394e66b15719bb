"""Third-party libraries handed phalanx contexts, side by side with the stdlib (issue 14).

Each test runs the library on a phalanx context and, where the point is
parity, on the stdlib's context of the same start method.  Marked
``interop``: CI runs them once, on one Python (they need the ``test`` extra's
joblib, loky and pebble).  pebble's own test suite runs against phalanx in
CI through ``tools/interop_pebble.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import _pool_targets as t
from _targets import DEADLINE, TESTS_DIR, run_python

pytestmark = pytest.mark.interop

SQUARES = [x * x for x in range(50)]


def test_joblib_with_a_context_as_its_backend(any_ctx: Any) -> None:
    joblib = pytest.importorskip("joblib")
    out = joblib.Parallel(n_jobs=2, backend=any_ctx)(joblib.delayed(t.square)(x) for x in range(50))
    assert out == SQUARES


def test_loky_with_a_context(any_ctx: Any) -> None:
    loky = pytest.importorskip("loky")
    executor = loky.ProcessPoolExecutor(2, context=any_ctx)
    try:
        assert list(executor.map(t.square, range(50))) == SQUARES
        with pytest.raises(ValueError):
            executor.submit(t.raise_value_error, 3).result(timeout=DEADLINE)
    finally:
        executor.shutdown(wait=True)


def test_tqdm_process_map(any_ctx: Any) -> None:
    concurrent = pytest.importorskip("tqdm.contrib.concurrent")
    if any_ctx.get_start_method() != "fork":
        # tqdm's lock is a stdlib RLock of the default (fork) context, which the
        # stdlib refuses to send to a spawn or forkserver child: the same with
        # either library.
        with pytest.raises(RuntimeError, match="fork context"):
            concurrent.process_map(t.square, range(5), mp_context=any_ctx, disable=True)
        return
    out = concurrent.process_map(
        t.square, range(50), max_workers=2, mp_context=any_ctx, disable=True
    )
    assert out == SQUARES


def test_pebble_process_pool(any_ctx: Any) -> None:
    pebble = pytest.importorskip("pebble")
    with pebble.ProcessPool(max_workers=2, context=any_ctx) as pool:
        future = pool.map(t.square, range(50), timeout=DEADLINE)
        assert list(future.result()) == SQUARES
        slow = pool.schedule(t.sleep_then_return, args=(5, "late"), timeout=0.5)
        with pytest.raises(TimeoutError):
            slow.result(timeout=DEADLINE)


PEBBLE_AT_EXIT = """\
import sys
sys.path.insert(0, {tests!r})
import pebble, phalanx
import _pool_targets as t

if __name__ == "__main__":
    pool = pebble.ProcessPool(max_workers=2, context=phalanx.get_context(sys.argv[1]))
    print(pool.schedule(t.square, args=(7,)).result(timeout=30), flush=True)
    # Left running: pebble's exit hook stops the workers it finds through the
    # stdlib's active_children(), which must list phalanx's.
"""


def test_a_pebble_pool_left_running_at_exit(start_method: str, tmp_path: Path) -> None:
    pytest.importorskip("pebble")
    script = tmp_path / "pebble_at_exit.py"
    script.write_text(PEBBLE_AT_EXIT.format(tests=TESTS_DIR), encoding="utf-8")
    result = run_python([str(script), start_method], timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "49"
