"""The workloads of ``phalanx bench``, run as a script: ``python bench_workloads.py LIB METHOD``.

``LIB`` is the module to measure (``phalanx`` or ``multiprocessing``), imported
by name in a fresh interpreter of its own, so that the two never share a process
(phalanx itself never imports the stdlib's module).  Prints one JSON object:
``{case: seconds per operation}``.  Each case is small: the whole script runs in
a few seconds.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from typing import Any


def identity(x: int) -> int:
    return x


def nothing() -> None:
    pass


def put_ints(queue: Any, n: int) -> None:
    for i in range(n):
        queue.put(i)


def echo_queue(inbox: Any, outbox: Any) -> None:
    while (item := inbox.get()) is not None:
        outbox.put(item)


def echo_pipe(conn: Any) -> None:
    while (item := conn.recv()) is not None:
        conn.send(item)


def increment(counter: Any, n: int) -> None:
    for _ in range(n):
        with counter.get_lock():
            counter.value += 1


def _timed(func: Any, *args: Any) -> float:
    start = time.perf_counter()
    func(*args)
    return time.perf_counter() - start


def run(mp: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    lock = mp.Lock()
    n = 200_000

    def lock_pairs() -> None:
        acquire, release = lock.acquire, lock.release
        for _ in range(n):
            acquire()
            release()

    out["Lock acquire+release"] = _timed(lock_pairs) / n

    counter = mp.Value("i", 0)
    workers = [mp.Process(target=increment, args=(counter, 20_000)) for _ in range(2)]
    start = time.perf_counter()
    for p in workers:
        p.start()
    for p in workers:
        p.join(60)
    out["Value += 1 under its lock, 2 processes"] = (time.perf_counter() - start) / 40_000

    queue = mp.Queue()
    n = 50_000
    start = time.perf_counter()
    p = mp.Process(target=put_ints, args=(queue, n))
    p.start()
    for _ in range(n):
        queue.get(timeout=60)
    out["Queue, small ints one way"] = (time.perf_counter() - start) / n
    p.join(60)

    inbox, outbox = mp.Queue(), mp.Queue()
    p = mp.Process(target=echo_queue, args=(inbox, outbox))
    p.start()
    inbox.put(0)
    outbox.get(timeout=60)
    n = 2_000
    start = time.perf_counter()
    for i in range(n):
        inbox.put(i)
        outbox.get(timeout=60)
    out["Queue ping-pong (round trip)"] = (time.perf_counter() - start) / n
    inbox.put(None)
    p.join(60)

    mine, theirs = mp.Pipe()
    p = mp.Process(target=echo_pipe, args=(theirs,))
    p.start()
    n = 5_000
    mine.send(0)
    mine.recv()
    start = time.perf_counter()
    for i in range(n):
        mine.send(i)
        mine.recv()
    out["Pipe ping-pong (round trip)"] = (time.perf_counter() - start) / n
    mine.send(None)
    p.join(60)

    n = 10
    start = time.perf_counter()
    for _ in range(n):
        p = mp.Process(target=nothing)
        p.start()
        p.join(60)
    out["Process start and join"] = (time.perf_counter() - start) / n

    start = time.perf_counter()
    with mp.Pool(2) as pool:
        pool.apply(identity, (1,))
        out["Pool(2) start to first result"] = time.perf_counter() - start
        n = 200_000
        out["Pool.map identity, 200k ints"] = _timed(pool.map, identity, range(n))
        n = 10_000
        start = time.perf_counter()
        results = [pool.apply_async(identity, (i,)) for i in range(n)]
        for result in results:
            result.get(60)
        out["Pool.apply_async (per task)"] = (time.perf_counter() - start) / n

    start = time.perf_counter()
    with mp.Manager() as manager:
        out["Manager() start"] = time.perf_counter() - start
        shared = manager.dict()
        n = 2_000
        start = time.perf_counter()
        for i in range(n):
            shared[i] = i
            shared[i]
        out["Manager dict set+get"] = (time.perf_counter() - start) / n
    return out


def main() -> None:
    library, method = sys.argv[1], sys.argv[2]
    mp = importlib.import_module(library).get_context(method)
    print(json.dumps(run(mp)))


if __name__ == "__main__":
    main()
