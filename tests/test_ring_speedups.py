"""The queue ring's compiled hot path (``_speedups.FastRing``): taken, and crash-safe.

``test_queues`` kills processes at each Python step of a put and a get (with
the compiled path switched off in the dying process); here processes die
inside the compiled steps instead: SIGKILLed at random moments of a tight
loop of puts or gets, or holding one of the ring's mutexes.  Whatever the
moment, every item is whole, each producer's items come in order, none twice,
and the ring goes on working.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

import _queue_targets as targets
import phalanx
from _targets import DEADLINE, finish, kill, start
from phalanx import _fast, _ring

compiled = pytest.mark.skipif(
    getattr(_fast.speedups, "FastRing", None) is None, reason="phalanx._speedups is not built"
)


@compiled
def test_rings_take_the_compiled_path_where_it_is_built() -> None:
    q = phalanx.Queue()
    try:
        assert q._transport.ring._fast is not None
        q.put("x")
        assert q.get(timeout=DEADLINE) == "x"
    finally:
        q.close()
        q.join_thread()


def test_phalanx_pure_python_leaves_rings_on_the_python_path() -> None:
    code = "import phalanx; q = phalanx.Queue(); print(q._transport.ring._fast is None)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PHALANX_PURE_PYTHON": "1"},
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=True,
    )
    assert out.stdout.strip() == "True"


@compiled
@pytest.mark.parametrize("maxsize", [0, 3])
def test_the_compiled_path_keeps_order_bounds_and_wraps(maxsize: int) -> None:
    """Records of every size around the end of the ring (the compiled path hands the
    wrapping ones to Python), a bound, and growth: the items come out as they went in."""
    q = phalanx.get_context("fork").Queue(maxsize)
    ring = q._transport.ring
    rng = random.Random(7)
    try:
        sent = 0
        got = 0
        for _round in range(400):
            for _ in range(rng.randint(1, maxsize or 8)):
                if maxsize and ring.qsize() >= maxsize:
                    assert q.full()
                    break
                size = rng.choice([0, 1, 7, 100, 1000, 5000])
                q.put((sent, targets.payload(sent, size)), timeout=DEADLINE)
                sent += 1
            while got < sent and (rng.random() < 0.7 or maxsize):
                i, data = q.get(timeout=DEADLINE)
                assert i == got and targets.intact(i, data, len(data))
                got += 1
        while got < sent:
            i, data = q.get(timeout=DEADLINE)
            assert i == got
            got += 1
        assert q.empty() and ring.qsize() == 0
    finally:
        q.close()
        q.join_thread()


def _still_works(q: Any) -> None:
    """No mutex is left held and nothing is torn: one more item goes through, and the
    queue is empty after it."""
    q.put("after")
    assert q.get(timeout=DEADLINE) == "after"
    assert q.empty() and q.qsize() == 0


def _drain(q: Any) -> list[tuple[int, int, bytes]]:
    items = []
    while True:
        try:
            items.append(q.get(timeout=0.2))
        except Exception:
            return items


@compiled
def test_writers_killed_at_random_moments_of_compiled_puts() -> None:
    ctx = phalanx.get_context("fork")
    q = ctx.Queue()
    rng = random.Random(11)
    pad = 64
    seen: dict[int, int] = {}
    try:
        for tag in range(25):
            ready = ctx.Semaphore(0)
            p = start(ctx, targets.put_counted_forever, q, tag, pad, ready)
            try:
                assert ready.acquire(timeout=DEADLINE)
                time.sleep(rng.uniform(0.0005, 0.01))
            finally:
                kill(p)
            assert p.exitcode == -signal.SIGKILL
            for got_tag, i, data in _drain(q):
                assert got_tag == tag and data == targets.payload(tag, pad)
                assert i == seen.get(tag, -2) + 1  # in order, none twice, none skipped
                seen[tag] = i
        _still_works(q)
    finally:
        q.close()
        q.join_thread()


@compiled
def test_readers_killed_at_random_moments_of_compiled_gets() -> None:
    ctx = phalanx.get_context("fork")
    q = ctx.Queue()
    rng = random.Random(13)
    try:
        for round_ in range(20):
            n = 3000
            for i in range(n):
                q.put((round_, i))
            ready = ctx.Semaphore(0)
            p = start(ctx, targets.get_forever, q, ready)
            try:
                assert ready.acquire(timeout=DEADLINE)
                time.sleep(rng.uniform(0.0, 0.003))
            finally:
                kill(p)
            left = _drain(q)
            # What the reader took is gone with it; the rest comes whole, in order,
            # and ends with the last item put (nothing after the kill is lost).
            if left:
                first = left[0][1]
                assert left == [(round_, i) for i in range(first, n)]
        _still_works(q)
    finally:
        q.close()
        q.join_thread()


@compiled
@pytest.mark.parametrize("readers", [False, True], ids=["writers", "readers"])
def test_a_mutex_whose_holder_died_is_repaired_from_the_compiled_path(readers: bool) -> None:
    """The compiled trylock hears that the holder died (EOWNERDEAD): the Python path
    takes the mutex over, recounts, and the put or get goes on."""
    if readers and _ring._MUTEXES_SHARED:
        pytest.skip("one mutex for both sides here")
    ctx = phalanx.get_context("fork")
    q = ctx.Queue()
    try:
        q.put("before")
        p = start(ctx, targets.die_holding_ring_mutex, q, readers)
        finish(p, -signal.SIGKILL)
        q.put("after")
        assert q.get(timeout=DEADLINE) == "before"
        assert q.get(timeout=DEADLINE) == "after"
        assert q.qsize() == 0
    finally:
        q.close()
        q.join_thread()
