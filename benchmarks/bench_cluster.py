"""Pools on a cluster engine: phalanx's ``Pool(backend=...)`` against the engine's own API.

    python benchmarks/bench_cluster.py [--engine dask|ray] [--repeat 5] [--n 10000] [--busy]

One cluster for the whole run (Dask: a LocalCluster of two one-thread worker
processes; Ray: ``ray.init(num_cpus=2)``), pools warm, the cases interleaved
``--repeat`` times; medians.  Ratios are phalanx's time over the other's
(below 1.0: phalanx is faster).  ``--busy`` keeps every core busy with one
``yes > /dev/null`` each for the timed part (the cluster is started first):

* per-element: ``Pool.map(triv, range(n))`` / the engine's own per-element map
  (Dask ``client.gather(client.map(triv, ..., pure=False))``; Ray one task per
  item);
* hand-batched: the same / hand-written engine code with as many engine
  tasks as phalanx used (``pool._backend.tasks_submitted``);
* imap c=1: ``imap_unordered(triv, range(n), chunksize=1)`` / the per-element map;
* round trip: one ``apply()`` / one engine task's round trip (printed in ms);
* stragglers (ray #29453): ``map(sleep, [1,2,1,10,3,1,4,10,1,3,2,10] x 0.1 s,
  chunksize=1)``, against a warm Ray Pool on Ray (the greedy bound on two slots
  is 2.4 s).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import phalanx
from _load import add_busy_flag, busy
from phalanx.cluster import Dask, Ray


def triv(x: int) -> int:
    return x


STRAGGLERS = [x * 0.1 for x in (1, 2, 1, 10, 3, 1, 4, 10, 1, 3, 2, 10)]


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def triv_batch(xs: list[int]) -> list[int]:
    return [triv(x) for x in xs]


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def dask_cases(n: int) -> tuple[dict[str, Callable[[], Any]], Callable[[], None]]:
    import distributed

    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = distributed.Client(cluster)
    pool = phalanx.Pool(backend=Dask(client=client))
    pool.map(triv, range(1000))  # warm: the function is on the workers, k measured
    before = pool._backend.tasks_submitted
    pool.map(triv, range(n))
    batches = max(1, pool._backend.tasks_submitted - before)
    size = -(-n // batches)
    chunks = [list(range(i, min(n, i + size))) for i in range(0, n, size)]

    def close() -> None:
        pool.terminate()
        client.close()
        cluster.close()

    return {
        "phalanx map": lambda: pool.map(triv, range(n)),
        "engine per-element": lambda: client.gather(client.map(triv, range(n), pure=False)),
        "engine hand-batched": lambda: client.gather(client.map(triv_batch, chunks, pure=False)),
        "phalanx imap c=1": lambda: list(pool.imap_unordered(triv, range(n), chunksize=1)),
        "phalanx apply": lambda: pool.apply(triv, (1,)),
        "engine round trip": lambda: client.submit(triv, 1, pure=False).result(),
        "phalanx stragglers": lambda: pool.map(nap, STRAGGLERS, chunksize=1),
    }, close


def ray_cases(n: int) -> tuple[dict[str, Callable[[], Any]], Callable[[], None]]:
    import ray
    from ray.util.multiprocessing import Pool as RayPool

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    pool = phalanx.Pool(backend=Ray())
    pool.map(triv, range(1000))
    before = pool._backend.tasks_submitted
    pool.map(triv, range(n))
    batches = max(1, pool._backend.tasks_submitted - before)
    size = -(-n // batches)
    chunks = [list(range(i, min(n, i + size))) for i in range(0, n, size)]
    remote_triv = ray.remote(triv)
    remote_batch = ray.remote(triv_batch)
    ray_pool = RayPool(2)
    ray_pool.map(triv, range(1000))

    def close() -> None:
        pool.terminate()
        ray_pool.terminate()
        ray.shutdown()

    return {
        "phalanx map": lambda: pool.map(triv, range(n)),
        "engine per-element": lambda: ray.get([remote_triv.remote(x) for x in range(n)]),
        "engine hand-batched": lambda: ray.get([remote_batch.remote(c) for c in chunks]),
        "ray Pool map": lambda: ray_pool.map(triv, range(n)),
        "phalanx imap c=1": lambda: list(pool.imap_unordered(triv, range(n), chunksize=1)),
        "ray Pool imap c=1": lambda: list(ray_pool.imap_unordered(triv, range(n), chunksize=1)),
        "phalanx apply": lambda: pool.apply(triv, (1,)),
        "engine round trip": lambda: ray.get(remote_triv.remote(1)),
        "phalanx stragglers": lambda: pool.map(nap, STRAGGLERS, chunksize=1),
        "ray Pool stragglers": lambda: ray_pool.map(nap, STRAGGLERS, chunksize=1),
    }, close


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["dask", "ray"], default="dask")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--n", type=int, default=10_000)
    add_busy_flag(parser)
    args = parser.parse_args()
    cases, close = (dask_cases if args.engine == "dask" else ray_cases)(args.n)
    times: dict[str, list[float]] = {name: [] for name in cases}
    try:
        with busy(args.busy, placement=args.placement) as hogs:
            for _ in range(args.repeat):
                for name, case in cases.items():
                    times[name].append(timed(case))
    finally:
        close()
    med = {name: statistics.median(ts) for name, ts in times.items()}
    load = f", {hogs} CPU-bound processes beside" if hogs else ", idle"
    print(f"{args.engine}, n={args.n}, {args.repeat} repetitions{load}, medians:")
    for name, value in med.items():
        print(f"  {name:22s} {value * 1000:10.2f} ms")
    ratios = [
        ("map / per-element", "phalanx map", "engine per-element"),
        ("map / hand-batched", "phalanx map", "engine hand-batched"),
        ("imap c=1 / per-element", "phalanx imap c=1", "engine per-element"),
        ("apply / round trip", "phalanx apply", "engine round trip"),
        ("map / ray Pool map", "phalanx map", "ray Pool map"),
        ("imap c=1 / ray Pool imap", "phalanx imap c=1", "ray Pool imap c=1"),
        ("stragglers / ray Pool's", "phalanx stragglers", "ray Pool stragglers"),
    ]
    for label, a, b in ratios:
        if a in med and b in med:
            print(f"  {label:26s} {med[a] / med[b]:6.3f}")
    if "phalanx apply" in med:
        extra = (med["phalanx apply"] - med["engine round trip"]) * 1000
        print(f"  apply - round trip: {extra:+.2f} ms")


if __name__ == "__main__":
    main()
