"""Import, then start and join a trivial process: phalanx against the stdlib.

    python benchmarks/bench_process_start.py [--repeat N] [--busy]

Prints per-start times and the ratio phalanx/stdlib (below 1.0: phalanx is faster).
Both libraries run in this one process, alternating rounds so that machine noise
hits both alike; fork servers are warmed up before timing.

The import row times fresh interpreters (``python -c "import phalanx"`` against
``python -c "import multiprocessing"``, less ``python -c pass``), with bytecode
caches written as a user's installation has them (``PYTHONDONTWRITEBYTECODE`` is
dropped for these runs); every spawned child pays that import.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import phalanx
from _load import Results, add_busy_flag, busy, describe


def noop() -> None:
    pass


def time_starts(ctx: object, n: int) -> float:
    """Seconds per start+join, over ``n`` sequential processes."""
    process_cls: Callable[..., object] = ctx.Process  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    for _ in range(n):
        p = process_cls(target=noop)
        p.start()  # type: ignore[attr-defined]
        p.join()  # type: ignore[attr-defined]
        if p.exitcode != 0:  # type: ignore[attr-defined]
            raise RuntimeError(f"child failed: {p!r}")
    return (time.perf_counter() - t0) / n


def time_import(module: str | None, n: int) -> float:
    """Median seconds of ``python -c "import module"`` (``pass`` if None), over ``n`` runs."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    code = f"import {module}" if module else "pass"
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=env, check=True)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def import_row(repeat: int, results: Results) -> str:
    for module in ("multiprocessing", "phalanx"):
        time_import(module, 2)  # write the bytecode caches
    rounds: dict[str, list[float]] = {"stdlib": [], "phalanx": []}
    for _ in range(repeat):
        base = time_import(None, 9)
        rounds["stdlib"].append(time_import("multiprocessing", 9) - base)
        rounds["phalanx"].append(time_import("phalanx", 9) - base)
    std = statistics.median(rounds["stdlib"])
    ours = statistics.median(rounds["phalanx"])
    results.add("import", {"stdlib": std, "phalanx": ours})
    return f"{'import':<11} {std * 1e3:>8.2f}ms {ours * 1e3:>8.2f}ms {ours / std:>7.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="rounds per library and method")
    parser.add_argument("--n", type=int, default=0, help="processes per round (default: auto)")
    add_busy_flag(parser)
    args = parser.parse_args()
    with busy(args.busy, placement=args.placement) as hogs:
        print(describe(hogs))
        print(f"{'method':<11} {'stdlib':>10} {'phalanx':>10} {'ratio':>7}")
        results = Results("bench_process_start", args)
        print(import_row(args.repeat, results))
        for method in ("fork", "spawn", "forkserver"):
            n = args.n or (40 if method != "spawn" else 10)
            libs = {
                "stdlib": multiprocessing.get_context(method),
                "phalanx": phalanx.get_context(method),
            }
            for ctx in libs.values():
                time_starts(ctx, 2)  # warm up (start the fork server, fill caches)
            samples: dict[str, list[float]] = {name: [] for name in libs}
            for _ in range(args.repeat):
                for name, ctx in libs.items():
                    samples[name].append(time_starts(ctx, n))
            std = statistics.median(samples["stdlib"])
            ours = statistics.median(samples["phalanx"])
            results.add(f"{method} start", {"stdlib": std, "phalanx": ours})
            print(f"{method:<11} {std * 1e3:>8.2f}ms {ours * 1e3:>8.2f}ms {ours / std:>7.2f}")
        results.write()


if __name__ == "__main__":
    main()
