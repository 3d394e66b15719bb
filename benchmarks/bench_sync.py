"""Locks and shared values: phalanx against the stdlib in one run.

    python benchmarks/bench_sync.py [--repeat N] [--busy]

* lock: uncontended ``Lock`` acquire/release pairs per second, one process;
* value: two processes each do ``with v.get_lock(): v.value += 1`` N times
  (the result must be exact); time per increment.

Prints medians and the ratio phalanx/stdlib in *time* (below 1.0: phalanx is faster).
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from typing import Any

import phalanx
from _load import add_busy_flag, busy, compare_rows

PAIRS = 200_000
INCREMENTS = 20_000


def lock_pairs(lib: Any) -> float:
    lock = lib.get_context("fork").Lock()
    acquire, release = lock.acquire, lock.release
    t0 = time.perf_counter()
    for _ in range(PAIRS):
        acquire()
        release()
    return (time.perf_counter() - t0) / PAIRS


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
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - t0
    if v.value != 2 * INCREMENTS:
        raise AssertionError(f"{lib.__name__}: lost updates: {v.value} != {2 * INCREMENTS}")
    return elapsed / (2 * INCREMENTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    add_busy_flag(parser)
    args = parser.parse_args()
    with busy(args.busy) as hogs:
        print("idle" if not hogs else f"busy: {hogs} CPU-bound processes beside")
        print(f"{'case':<28} {'stdlib':>12} {'phalanx':>12} {'time ratio':>10}")
        cases = [
            ("uncontended Lock pair", lock_pairs, lambda t: f"{1 / t / 1e6:7.2f}M/s"),
            ("Value += 1 by 2 processes", value_increments, lambda t: f"{t * 1e6:8.2f}us"),
        ]
        compare_rows(cases, (multiprocessing, phalanx), args.repeat, 28, 12)


if __name__ == "__main__":
    main()
