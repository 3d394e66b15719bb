"""Connections: phalanx against the stdlib in one run.

    python benchmarks/bench_connection.py [--repeat N] [--busy]

* ping-pong: round trip of a small object between two processes (latency);
* bytes: one 64 MiB ``send_bytes`` to a child that reads it with ``recv_bytes``;
* numpy: one 64 MiB float64 array through ``send``/``recv`` (needs numpy).

Prints medians and the ratio phalanx/stdlib in *time* (below 1.0: phalanx is faster).
Children are forked so that start-up is not measured.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from typing import Any

import phalanx
from _load import Results, add_busy_flag, busy, describe, place_peer

SIZE = 64 * 1024 * 1024
PINGS = 2000


def echo(conn: Any) -> None:
    while True:
        obj = conn.recv()
        if obj is None:
            return
        conn.send(obj)


def sink_bytes(conn: Any) -> None:
    while True:
        data = conn.recv_bytes()
        if not data:
            return
        conn.send_bytes(b"k")


def sink_obj(conn: Any) -> None:
    while True:
        obj = conn.recv()
        if obj is None:
            return
        conn.send_bytes(b"k")


def run_child(lib: Any, target: Any, body: Any) -> float:
    ctx = lib.get_context("fork")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=target, args=(child,))
    p.start()
    place_peer(p.pid)
    child.close()
    try:
        return float(body(parent))
    finally:
        parent.send(None) if target is not sink_bytes else parent.send_bytes(b"")
        p.join(30)
        parent.close()


def ping_pong(conn: Any) -> float:
    msg = ("ping", 1, 2.0)
    for _ in range(100):
        conn.send(msg)
        conn.recv()
    t0 = time.perf_counter()
    for _ in range(PINGS):
        conn.send(msg)
        conn.recv()
    return (time.perf_counter() - t0) / PINGS


def bulk_bytes(conn: Any) -> float:
    payload = bytes(SIZE)
    conn.send_bytes(payload)
    conn.recv_bytes()
    t0 = time.perf_counter()
    conn.send_bytes(payload)
    conn.recv_bytes()
    return time.perf_counter() - t0


def bulk_numpy(conn: Any) -> float:
    import numpy as np

    array = np.ones(SIZE // 8)
    conn.send(array)
    conn.recv_bytes()
    t0 = time.perf_counter()
    conn.send(array)
    conn.recv_bytes()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    add_busy_flag(parser)
    args = parser.parse_args()
    with busy(args.busy, placement=args.placement) as hogs:
        print(describe(hogs))
        cases = [
            ("ping-pong", echo, ping_pong, lambda t: f"{t * 1e6:8.1f}us"),
            ("bytes 64MiB", sink_bytes, bulk_bytes, lambda t: f"{SIZE / t / 1e9:6.2f}GB/s"),
        ]
        try:
            import numpy  # noqa: F401

            cases.append(
                ("numpy 64MiB", sink_obj, bulk_numpy, lambda t: f"{SIZE / t / 1e9:6.2f}GB/s")
            )
        except ImportError:
            print("numpy not installed: numpy case skipped")
        print(f"{'case':<12} {'stdlib':>10} {'phalanx':>10} {'time ratio':>10}")
        results = Results("bench_connection", args)
        for name, target, body, fmt in cases:
            samples: dict[str, list[float]] = {"stdlib": [], "phalanx": []}
            for _ in range(args.repeat):
                samples["stdlib"].append(run_child(multiprocessing, target, body))
                samples["phalanx"].append(run_child(phalanx, target, body))
            std = statistics.median(samples["stdlib"])
            ours = statistics.median(samples["phalanx"])
            results.add(f"Pipe {name}", {"stdlib": std, "phalanx": ours})
            print(f"{name:<12} {fmt(std):>10} {fmt(ours):>10} {ours / std:>10.2f}")
        results.write()


if __name__ == "__main__":
    main()
