"""Locks and shared values: phalanx against the stdlib in one run.

    python benchmarks/bench_sync.py [--repeat N] [--busy]
    PHALANX_PURE_PYTHON=1 python benchmarks/bench_sync.py   # without the C extension

* lock, rlock, semaphore: uncontended acquire/release pairs per second, one process,
  timed in CPU time of the thread (``time.thread_time``): an uncontended pair never
  waits, and on a busy machine the wall time of a 7 ms sample is mostly whether a
  neighbour's time slice fell into it (0.5-1.5x from run to run, either way);
* value: two processes each do ``with v.get_lock(): v.value += 1`` N times
  (the result must be exact); time per increment.

Prints medians and the ratio phalanx/stdlib in *time* (below 1.0: phalanx is faster).
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from collections.abc import Callable
from typing import Any

import phalanx
from _load import Results, add_busy_flag, busy, compare_rows, describe, place_peer

PAIRS = 200_000
INCREMENTS = 20_000


def pairs(kind: str) -> Callable[[Any], float]:
    def measure(lib: Any) -> float:
        return lock_pairs(getattr(lib.get_context("fork"), kind)())

    return measure


def lock_pairs(lock: Any) -> float:
    acquire, release = lock.acquire, lock.release
    t0 = time.thread_time()
    for _ in range(PAIRS):
        acquire()
        release()
    return (time.thread_time() - t0) / PAIRS


def bump(v: Any, n: int) -> None:
    for _ in range(n):
        with v.get_lock():
            v.value += 1


def value_increments(lib: Any) -> float:
    ctx = lib.get_context("fork")
    v = ctx.Value("i", 0)
    procs = [ctx.Process(target=bump, args=(v, INCREMENTS)) for _ in range(2)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    place_peer(procs[1].pid)  # (the two incrementers are the round trip here)
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - t0
    if v.value != 2 * INCREMENTS:
        raise AssertionError(f"{lib.__name__}: lost updates: {v.value} != {2 * INCREMENTS}")
    return elapsed / (2 * INCREMENTS)


def per_second(t: float) -> str:
    return f"{1 / t / 1e6:7.2f}M/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    add_busy_flag(parser)
    args = parser.parse_args()
    with busy(args.busy, placement=args.placement) as hogs:
        print(describe(hogs))
        print(f"{'case':<28} {'stdlib':>12} {'phalanx':>12} {'time ratio':>10}")
        cases = [
            ("uncontended Lock pair", pairs("Lock"), per_second),
            ("uncontended RLock pair", pairs("RLock"), per_second),
            ("uncontended Semaphore pair", pairs("Semaphore"), per_second),
            ("Value += 1 by 2 processes", value_increments, lambda t: f"{t * 1e6:8.2f}us"),
        ]
        results = Results("bench_sync", args)
        compare_rows(cases, (multiprocessing, phalanx), args.repeat, 28, 12, results)
        results.write()


if __name__ == "__main__":
    main()
