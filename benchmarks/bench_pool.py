"""Pools: phalanx against the stdlib in one run, 2 workers.

    python benchmarks/bench_pool.py [--repeat N] [--method fork|spawn|forkserver] [--busy]
                                    [--numpy-methods fork,spawn,forkserver]

* map: ``map`` of an identity function over 200,000 ints, default chunking;
* imap_unord: ``imap_unordered`` with chunksize 1 over 20,000 ints;
* apply_async: 20,000 ``apply_async`` calls, then every result;
* start-up: ``Pool(2)`` until its first result (5 samples a round, each library in turn);
* cpu-bound: 8 tasks of pure-Python arithmetic; printed as the speed-up over
  running them serially (not a time ratio);
* numpy <m>: ``map(np.sum, 64 slices of a 512 MiB array)`` under start method m
  (the pool started and warm; the median of the repeats);
* worker RSS: resident memory of a worker after the map case.

Prints medians and the ratio phalanx/stdlib in *time* (below 1.0: phalanx is faster).
With ``--peers`` (the default when they are installed), the same map, apply_async
(``submit``), start-up and numpy cases run on the peers too, each with 2 workers
under its own default start method: loky's ``ProcessPoolExecutor``, pebble's
``ProcessPool`` and the stdlib's ``concurrent.futures.ProcessPoolExecutor``; their
medians go into the ``--json`` results (and a second table).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from collections.abc import Callable
from typing import Any

import phalanx
from _load import Results, add_busy_flag, busy, describe

MAP_N = 200_000
IMAP_N = 20_000
APPLY_N = 20_000
STARTS = 5  # start-up samples a round, per library
CPU_TASKS = 8
CPU_LOOP = 3_000_000
BIG = 512 * 1024 * 1024


def identity(x: Any) -> Any:
    return x


def burn(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def array_sum(a: Any) -> float:
    return float(a.sum())


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Bench:
    def __init__(self, lib: Any, method: str) -> None:
        self.lib = lib
        self.ctx = lib.get_context(method)
        self.pool = self.ctx.Pool(2)
        self.pool.map(identity, range(4), chunksize=1)  # both workers up

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()

    def timed(self, func: Callable[[], Any]) -> float:
        t0 = time.perf_counter()
        func()
        return time.perf_counter() - t0

    def map(self) -> float:
        return self.timed(lambda: self.pool.map(identity, range(MAP_N)))

    def imap_unordered(self) -> float:
        return self.timed(lambda: sum(1 for _ in self.pool.imap_unordered(identity, range(IMAP_N))))

    def apply_async(self) -> float:
        def run() -> None:
            results = [self.pool.apply_async(identity, (i,)) for i in range(APPLY_N)]
            for r in results:
                r.get()

        return self.timed(run)

    def cpu(self) -> float:
        return self.timed(lambda: self.pool.map(burn, [CPU_LOOP] * CPU_TASKS, chunksize=1))

    def worker_rss(self) -> float:
        return float(max(rss_kib(p.pid) for p in self.pool._pool))


def serial_cpu() -> float:
    t0 = time.perf_counter()
    for _ in range(CPU_TASKS):
        burn(CPU_LOOP)
    return time.perf_counter() - t0


def startup(lib: Any, method: str) -> float:
    ctx = lib.get_context(method)
    t0 = time.perf_counter()
    pool = ctx.Pool(2)
    pool.apply(identity, (1,))
    elapsed = time.perf_counter() - t0
    pool.terminate()
    pool.join()
    return elapsed


def numpy_map(lib: Any, method: str, repeat: int) -> float:
    import numpy as np

    slices = np.array_split(np.ones(BIG // 8), 64)
    pool = lib.get_context(method).Pool(2)
    try:
        pool.map(identity, range(4), chunksize=1)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            pool.map(array_sum, slices)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)
    finally:
        pool.terminate()
        pool.join()


class Peer:
    """A peer library's pool behind one interface: map, submit, start-up, numpy."""

    def __init__(self, name: str, method: str) -> None:
        self.name = name
        self.method = method
        self.pool: Any = None

    def start(self) -> None:
        if self.name == "loky":
            import loky

            self.pool = loky.ProcessPoolExecutor(max_workers=2)
        elif self.name == "pebble":
            import pebble

            self.pool = pebble.ProcessPool(
                max_workers=2, context=multiprocessing.get_context(self.method)
            )
        else:
            import concurrent.futures

            self.pool = concurrent.futures.ProcessPoolExecutor(
                2, mp_context=multiprocessing.get_context(self.method)
            )

    def submit(self, func: Callable[..., Any], *args: Any) -> Any:
        if self.name == "pebble":
            return self.pool.schedule(func, args=args)
        return self.pool.submit(func, *args)

    def map(self, func: Callable[..., Any], items: Any, chunksize: int) -> list[Any]:
        if self.name == "pebble":
            return list(self.pool.map(func, items, chunksize=chunksize).result())
        return list(self.pool.map(func, items, chunksize=chunksize))

    def close(self) -> None:
        if self.name == "pebble":
            self.pool.close()
            self.pool.join()
        else:
            self.pool.shutdown(wait=True)


PEERS = ("loky", "pebble", "concurrent.futures")


def available_peers() -> list[str]:
    import importlib.util

    return [p for p in PEERS if "." in p or importlib.util.find_spec(p) is not None]


def measure_peer(name: str, method: str, numpy_slices: Any) -> dict[str, float]:
    """One round of the peer cases: {case: seconds}."""
    out: dict[str, float] = {}
    peer = Peer(name, method)
    t0 = time.perf_counter()
    peer.start()
    peer.submit(identity, 1).result()
    out["start-up"] = time.perf_counter() - t0
    try:
        peer.map(identity, range(4), 1)  # both workers up
        chunksize = -(-MAP_N // (2 * 4))  # the stdlib Pool.map's default
        t0 = time.perf_counter()
        peer.map(identity, range(MAP_N), chunksize)
        out["map"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        futures = [peer.submit(identity, i) for i in range(APPLY_N)]
        for future in futures:
            future.result()
        out["apply_async"] = time.perf_counter() - t0
        if numpy_slices is not None:
            t0 = time.perf_counter()
            peer.map(array_sum, numpy_slices, 1)
            out["numpy"] = time.perf_counter() - t0
    finally:
        peer.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--method", default="fork")
    parser.add_argument("--numpy-methods", default="fork,spawn,forkserver")
    parser.add_argument(
        "--peers", default=",".join(PEERS), help="peer pools to measure too ('' for none)"
    )
    add_busy_flag(parser)
    args = parser.parse_args()
    with busy(args.busy, placement=args.placement) as hogs:
        print(describe(hogs))
        libs = {"stdlib": multiprocessing, "phalanx": phalanx}
        rows: list[tuple[str, float, float, Callable[[float], str]]] = []

        samples: dict[str, dict[str, list[float]]] = {}
        serial = statistics.median(serial_cpu() for _ in range(max(1, args.repeat // 2)))
        for _ in range(args.repeat):
            for name, lib in libs.items():
                bench = Bench(lib, args.method)
                try:
                    for case in ("map", "imap_unordered", "apply_async", "cpu", "worker_rss"):
                        samples.setdefault(case, {}).setdefault(name, []).append(
                            getattr(bench, case)()
                        )
                finally:
                    bench.close()
            # Start-up, a few times a round, interleaved: one 5 ms sample a round
            # left the median to the noise of the machine.
            for _ in range(STARTS):
                for name, lib in libs.items():
                    samples.setdefault("start-up", {}).setdefault(name, []).append(
                        startup(lib, args.method)
                    )

        def med(case: str, name: str) -> float:
            return statistics.median(samples[case][name])

        per_s = {
            "map": MAP_N,
            "imap_unordered": IMAP_N,
            "apply_async": APPLY_N,
        }
        for case, n in per_s.items():
            label = {"imap_unordered": "imap_unord"}.get(case, case)
            rows.append(
                (
                    label,
                    med(case, "stdlib"),
                    med(case, "phalanx"),
                    lambda t, n=n: f"{n / t / 1e3:7.1f}k/s",
                )
            )
        rows.append(
            (
                "start-up",
                med("start-up", "stdlib"),
                med("start-up", "phalanx"),
                lambda t: f"{t * 1e3:7.1f}ms",
            )
        )
        try:
            import numpy  # noqa: F401

            for method in filter(None, args.numpy_methods.split(",")):
                rows.append(
                    (
                        f"numpy {method}",
                        numpy_map(multiprocessing, method, args.repeat),
                        numpy_map(phalanx, method, args.repeat),
                        lambda t: f"{BIG / t / 1e9:6.2f}GB/s",
                    )
                )
        except ImportError:
            print("numpy not installed: numpy cases skipped")

        print(f"start method {args.method}, 2 workers, median of {args.repeat}")
        print(f"{'case':<14} {'stdlib':>11} {'phalanx':>11} {'time ratio':>10}")
        for name, std, ours, fmt in rows:
            print(f"{name:<14} {fmt(std):>11} {fmt(ours):>11} {ours / std:>10.2f}")
        results = Results("bench_pool", args)
        labels = {
            "map": "Pool.map 200k ints",
            "imap_unord": "imap_unordered(chunksize=1) 20k",
            "apply_async": "apply_async 20k",
            "start-up": "Pool(2) start to first result",
        }
        cases = {
            labels.get(name, f"map(np.sum) 512 MiB, {name.split()[-1]}"): {
                "stdlib": std,
                "phalanx": ours,
            }
            for name, std, ours, _fmt in rows
        }
        peers = [p for p in args.peers.split(",") if p and p in available_peers()]
        if peers:
            slices = None
            if "numpy fork" in {name for name, *_ in rows}:
                import numpy as np

                slices = np.array_split(np.ones(BIG // 8), 64)
            peer_samples: dict[str, dict[str, list[float]]] = {}
            for _ in range(args.repeat):
                for peer in peers:
                    for case, seconds in measure_peer(peer, args.method, slices).items():
                        peer_samples.setdefault(case, {}).setdefault(peer, []).append(seconds)
            print(f"peers (time ratio to the stdlib's Pool; numpy: fork), median of {args.repeat}")
            print(f"{'case':<14} " + " ".join(f"{p:>18}" for p in peers))
            for case, by_peer in peer_samples.items():
                label = labels.get(case, "map(np.sum) 512 MiB, fork")
                std = cases[label]["stdlib"]
                medians = {p: statistics.median(v) for p, v in by_peer.items()}
                cases[label].update(medians)
                print(f"{case:<14} " + " ".join(f"{medians[p] / std:>18.2f}" for p in peers))
        for label, seconds in cases.items():
            results.add(label, seconds)
        results.write()
        cpu_std = serial / med("cpu", "stdlib")
        cpu_ours = serial / med("cpu", "phalanx")
        print(
            f"{'cpu speed-up':<14} {cpu_std:>10.2f}x {cpu_ours:>10.2f}x   (serial {serial:.2f} s)"
        )
        rss_std, rss_ours = med("worker_rss", "stdlib"), med("worker_rss", "phalanx")
        print(
            f"{'worker RSS':<14} {rss_std / 1024:>9.1f}MB {rss_ours / 1024:>9.1f}MB "
            f"{rss_ours / rss_std:>10.2f}"
        )


if __name__ == "__main__":
    main()
