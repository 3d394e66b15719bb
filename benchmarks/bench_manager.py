"""Managers: phalanx against the stdlib in one run.

    python benchmarks/bench_manager.py [--repeat N] [--method fork|spawn|forkserver] [--busy]

* dict ops: a child process does ``d[k] = i; d[k]`` on a ``Manager().dict()``
  proxy 5,000 times (10,000 operations);
* start-up: ``Manager()`` until it answers, then ``shutdown()`` (timed apart).

Prints medians and the ratio phalanx/stdlib in *time* (below 1.0: phalanx is faster).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from typing import Any

import phalanx
from _load import Results, add_busy_flag, busy, describe, place_peer

OPS = 5_000


def dict_ops(d: Any, out: Any) -> None:
    d["k"] = 0
    t0 = time.perf_counter()
    for i in range(OPS):
        d["k"] = i
        d["k"]
    out.put(time.perf_counter() - t0)


def run_dict(lib: Any, method: str) -> float:
    ctx = lib.get_context(method)
    with ctx.Manager() as manager:
        place_peer(manager._process.pid)
        d = manager.dict()
        out = ctx.Queue()
        p = ctx.Process(target=dict_ops, args=(d, out))
        p.start()
        elapsed = float(out.get(timeout=120))
        p.join(30)
    return elapsed


def startup(lib: Any, method: str) -> tuple[float, float]:
    ctx = lib.get_context(method)
    t0 = time.perf_counter()
    manager = ctx.Manager()
    manager.dict()
    started = time.perf_counter() - t0
    t0 = time.perf_counter()
    manager.shutdown()
    return started, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--method", default="fork")
    add_busy_flag(parser)
    args = parser.parse_args()
    with busy(args.busy, placement=args.placement) as hogs:
        print(describe(hogs))
        libs = {"stdlib": multiprocessing, "phalanx": phalanx}
        samples: dict[str, dict[str, list[float]]] = {"dict": {}, "start": {}, "stop": {}}
        for _ in range(args.repeat):
            for name, lib in libs.items():
                samples["dict"].setdefault(name, []).append(run_dict(lib, args.method))
                started, stopped = startup(lib, args.method)
                samples["start"].setdefault(name, []).append(started)
                samples["stop"].setdefault(name, []).append(stopped)
        print(f"start method {args.method}, median of {args.repeat}")
        print(f"{'case':<12} {'stdlib':>12} {'phalanx':>12} {'time ratio':>10}")
        results = Results("bench_manager", args)
        for case in ("dict", "start", "stop"):
            std = statistics.median(samples[case]["stdlib"])
            ours = statistics.median(samples[case]["phalanx"])
            if case == "dict":
                fmt = lambda t: f"{2 * OPS / t / 1e3:8.1f}k/s"  # noqa: E731
                label = "dict ops"
            else:
                fmt = lambda t: f"{t * 1e3:8.1f}ms"  # noqa: E731
                label = f"{case}-up" if case == "start" else "shutdown"
            results.add(f"Manager {label}", {"stdlib": std, "phalanx": ours})
            print(f"{label:<12} {fmt(std):>12} {fmt(ours):>12} {ours / std:>10.2f}")
        results.write()


if __name__ == "__main__":
    main()
