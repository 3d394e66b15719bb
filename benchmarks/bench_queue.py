"""Queues: phalanx against the stdlib in one run.

    python benchmarks/bench_queue.py [--repeat N] [--busy]

* ping-pong: round trip of a small object between two processes over two queues;
* ints: one-way throughput of 200,000 small ints from a child to the parent;
* bytes / numpy: one-way transfer of a 64 MiB ``bytes`` and a 64 MiB numpy array.

Prints medians and the ratio phalanx/stdlib in *time* (below 1.0: phalanx is faster).
Children are forked so that start-up is not measured.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from typing import Any

import phalanx
from _load import Results, add_busy_flag, busy, compare_rows, describe, place_peer

PINGS = 2000
INTS = 200_000
SIZE = 64 * 1024 * 1024


def echo(inq: Any, outq: Any) -> None:
    while True:
        obj = inq.get()
        if obj is None:
            return
        outq.put(obj)


def ping_pong(lib: Any) -> float:
    ctx = lib.get_context("fork")
    a, b = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=echo, args=(a, b))
    p.start()
    place_peer(p.pid)
    for _ in range(100):
        a.put(1)
        b.get()
    t0 = time.perf_counter()
    for _ in range(PINGS):
        a.put(1)
        b.get()
    elapsed = (time.perf_counter() - t0) / PINGS
    a.put(None)
    p.join(30)
    return elapsed


def produce(q: Any, what: str) -> None:
    if what == "ints":
        for i in range(INTS):
            q.put(i)
    elif what == "bytes":
        q.put(bytes(SIZE))
    else:
        import numpy as np

        q.put(np.ones(SIZE // 8))


def one_way(lib: Any, what: str) -> float:
    ctx = lib.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=produce, args=(q, what))
    t0 = time.perf_counter()
    p.start()
    place_peer(p.pid)
    for _ in range(INTS if what == "ints" else 1):
        q.get()
    elapsed = time.perf_counter() - t0
    p.join(30)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    add_busy_flag(parser)
    args = parser.parse_args()
    with busy(args.busy, placement=args.placement) as hogs:
        print(describe(hogs))
        cases = [
            ("ping-pong", ping_pong, lambda t: f"{t * 1e6:8.1f}us"),
            ("200k ints", lambda lib: one_way(lib, "ints"), lambda t: f"{INTS / t / 1e3:6.0f}k/s"),
            (
                "bytes 64MiB",
                lambda lib: one_way(lib, "bytes"),
                lambda t: f"{SIZE / t / 1e9:6.2f}GB/s",
            ),
        ]
        try:
            import numpy  # noqa: F401

            cases.append(
                (
                    "numpy 64MiB",
                    lambda lib: one_way(lib, "numpy"),
                    lambda t: f"{SIZE / t / 1e9:6.2f}GB/s",
                )
            )
        except ImportError:
            print("numpy not installed: numpy case skipped")
        print(f"{'case':<12} {'stdlib':>10} {'phalanx':>10} {'time ratio':>10}")
        results = Results("bench_queue", args)
        compare_rows(cases, (multiprocessing, phalanx), args.repeat, 12, 10, results)
        results.write()


if __name__ == "__main__":
    main()
