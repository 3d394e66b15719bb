"""Round-trip latency distributions: phalanx against the stdlib, Queue and Pipe.

    python benchmarks/bench_latency.py [--repeat N] [--n N] [--busy]

Each round times every one of ``--n`` round trips of a small object to a forked
echo child and back, and prints the median, the 99th percentile and the slowest.
Medians of per-run means (the other scripts) hide a bimodal wait; this shows it:
on a busy machine a waiter that polls before sleeping can take milliseconds
where it should take microseconds.  Ratios are phalanx / stdlib in time (below
1.0: phalanx is faster), of the medians over the rounds.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from typing import Any

import phalanx
from _load import Results, add_busy_flag, busy, describe, place_peer

WARM_UP = 200


def _queue_echo(inq: Any, outq: Any) -> None:
    while (item := inq.get()) is not None:
        outq.put(item)


def _pipe_echo(conn: Any) -> None:
    while (item := conn.recv()) is not None:
        conn.send(item)


def _time_round_trips(child: Any, send: Any, recv: Any, n: int) -> list[float]:
    """Start ``child`` (the echo), time ``n`` round trips after a warm-up, stop it."""
    child.start()
    place_peer(child.pid)
    times = []
    for i in range(WARM_UP + n):
        t0 = time.perf_counter()
        send(1)
        recv()
        if i >= WARM_UP:
            times.append(time.perf_counter() - t0)
    send(None)
    child.join()
    return times


def queue_round_trips(ctx: Any, n: int) -> list[float]:
    inq, outq = ctx.Queue(), ctx.Queue()
    child = ctx.Process(target=_queue_echo, args=(inq, outq))
    return _time_round_trips(child, inq.put, outq.get, n)


def pipe_round_trips(ctx: Any, n: int) -> list[float]:
    ours, theirs = ctx.Pipe()
    child = ctx.Process(target=_pipe_echo, args=(theirs,))
    return _time_round_trips(child, ours.send, ours.recv, n)


def summary(times: list[float]) -> tuple[float, float, float]:
    times = sorted(times)
    return times[len(times) // 2], times[int(len(times) * 0.99)], times[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="rounds per library")
    parser.add_argument("--n", type=int, default=3000, help="round trips per round")
    add_busy_flag(parser)
    args = parser.parse_args()
    libs = {
        "stdlib": multiprocessing.get_context("fork"),
        "phalanx": phalanx.get_context("fork"),
    }
    with busy(args.busy, placement=args.placement) as hogs:
        print(describe(hogs))
        print(
            f"{'case':<11} {'library':<8} {'p50':>9} {'p99':>9} {'slowest':>9}  (median of rounds)"
        )
        results = Results("bench_latency", args)
        for case, run in (("Queue", queue_round_trips), ("Pipe", pipe_round_trips)):
            rows: dict[str, list[tuple[float, float, float]]] = {name: [] for name in libs}
            for _ in range(args.repeat):
                for name, ctx in libs.items():
                    rows[name].append(summary(run(ctx, args.n)))
            medians = {
                name: tuple(statistics.median(r[k] for r in rounds) for k in range(3))
                for name, rounds in rows.items()
            }
            for name, (p50, p99, slowest) in medians.items():
                print(
                    f"{case:<11} {name:<8} {p50 * 1e6:>7.1f}us {p99 * 1e6:>7.1f}us "
                    f"{slowest * 1e6:>7.0f}us"
                )
            for k, what in enumerate(("p50", "p99", "slowest")):
                results.add(
                    f"{case} ping-pong {what}",
                    {name: medians[name][k] for name in ("stdlib", "phalanx")},
                )
            ratios = [medians["phalanx"][k] / medians["stdlib"][k] for k in range(3)]
            print(f"{case:<11} {'ratio':<8} {ratios[0]:>9.2f} {ratios[1]:>9.2f} {ratios[2]:>9.2f}")
        results.write()


if __name__ == "__main__":
    main()
