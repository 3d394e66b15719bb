"""``phalanx demo``: the tutorial's first example, then what phalanx adds.

The first part runs under each start method (or the one asked for): the main
line prints its module name, parent pid and pid, then a child does the same and
says hello.  The second part, under the last of those methods, kills a pool
worker in the middle of a map (the task it ran fails with ``WorkerLostError``,
the other tasks finish and the pool carries on) and runs a task past its
per-task timeout (``TaskTimeoutError``; the pool carries on).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Sequence

import phalanx
from phalanx.errors import TaskTimeoutError, WorkerLostError

DEADLINE = 60.0  # seconds any step of the demo may take before it counts as failed


def info(title: str) -> None:
    print(title, flush=True)
    print("module name:", __name__, flush=True)
    print("parent process:", os.getppid(), flush=True)
    print("process id:", os.getpid(), flush=True)


def f(name: str) -> None:
    info("function f")
    print("hello", name, flush=True)


def square_or_die(x: int) -> int:
    """The square of ``x``; task 5 kills its own worker with SIGKILL instead."""
    if x == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return x * x


def hello(method: str) -> bool:
    ctx = phalanx.get_context(method)
    print(f"=== start method: {method} ===", flush=True)
    info("main line")
    p = ctx.Process(target=f, args=("bob",))
    p.start()
    p.join(timeout=DEADLINE)
    if p.exitcode != 0:
        print(f"child failed under {method}: exitcode {p.exitcode}", file=sys.stderr)
        return False
    return True


def crash_and_timeout(method: str) -> bool:
    """A worker killed mid-map, then a task past its timeout; True if the pool came through."""
    ctx = phalanx.get_context(method)
    print(f"=== what phalanx adds ({method}) ===", flush=True)
    with ctx.Pool(2) as pool:
        print("pool.imap(square_or_die, range(8), chunksize=1): task 5 SIGKILLs its worker")
        results: list[object] = []
        iterator = pool.imap(square_or_die, range(8), chunksize=1)
        for x in range(8):
            try:
                results.append(iterator.next(timeout=DEADLINE))
            except WorkerLostError as exc:
                results.append("lost")
                print(f"  task {x} failed: WorkerLostError: {exc}")
        print(f"  results: {results}")
        print(f"  the pool carries on: map(abs, [-1, -2]) = {pool.map(abs, [-1, -2])}")
        print("pool.apply_async(time.sleep, (30,), timeout=0.5): a per-task timeout")
        started = time.monotonic()
        try:
            pool.apply_async(time.sleep, (30,), timeout=0.5).get(timeout=DEADLINE)
        except TaskTimeoutError as exc:
            took = time.monotonic() - started
            print(f"  failed after {took:.1f} s: TaskTimeoutError: {exc}")
        else:
            print("  no timeout: this should not happen", file=sys.stderr)
            return False
        print(f"  the pool carries on: apply(pow, (2, 10)) = {pool.apply(pow, (2, 10))}")
    return results == [0, 1, 4, 9, 16, "lost", 36, 49]


def run(methods: Sequence[str]) -> int:
    for method in methods:
        if not hello(method):
            return 1
    return 0 if crash_and_timeout(methods[-1]) else 1
