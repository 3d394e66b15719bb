"""Targets for the chaos regression tests (``test_chaos.py``): children that misbehave.

Importable, so that spawn and forkserver children unpickle them by
reference.  Children report through JSON files (``_targets.write_json``).
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any

from _targets import DEADLINE, sleep_forever, write_json


def take_over_then_hang_in_the_warning(lock: Any, ready: str) -> None:
    """Take ``lock`` over from a dead owner, and hang while its warning is shown.

    As a process whose stderr is a full pipe would: the test kills us there.
    """

    def hang(*args: Any, **kwargs: Any) -> None:
        sleep_forever(ready)

    warnings.simplefilter("always")
    warnings.showwarning = hang
    lock.acquire(timeout=DEADLINE)
    write_json(ready, {"pid": os.getpid(), "hung": False})


def slow_square(x: int) -> int:
    time.sleep(0.01)
    return x * x


def first_worker_hangs_in_init(gate: str) -> None:
    """Initializer: the first worker to get here reports its pid and hangs; the others go on."""
    try:
        os.mkdir(gate)
    except FileExistsError:
        return
    sleep_forever(os.path.join(gate, "pid.json"))


def announce_init(directory: str) -> None:
    """Initializer: say that this worker is initializing (a file named by its pid), then
    wait until the test lets it go on (a file ``<pid>.go``) or kills it."""
    me = os.path.join(directory, str(os.getpid()))
    with open(me, "w"):
        pass
    deadline = time.monotonic() + DEADLINE
    while not os.path.exists(me + ".go") and time.monotonic() < deadline:
        time.sleep(0.001)


def exit_in_init(code: int) -> None:
    os._exit(code)


class SlowToUnpickleOnce:
    """Its first unpickling (anywhere) reports the pid and hangs there; later ones are quick."""

    def __init__(self, gate: str, value: int) -> None:
        self.gate = gate
        self.value = value

    def __reduce__(self) -> Any:
        return _rebuild_slow_once, (self.gate, self.value)


def _rebuild_slow_once(gate: str, value: int) -> int:
    try:
        os.mkdir(gate)
    except FileExistsError:
        return value
    sleep_forever(os.path.join(gate, "pid.json"))
    return value  # never reached


def value_of(x: Any) -> Any:
    return x


def fail_client_threads(n: int) -> None:
    """Manager initializer: the first ``n`` threads for clients cannot be started."""
    import threading

    real_start = threading.Thread.start
    failures = [n]

    def start(self: threading.Thread) -> None:
        if self.name == "phalanx-manager-client" and failures[0] > 0:
            failures[0] -= 1
            raise RuntimeError("can't start new thread")
        real_start(self)

    threading.Thread.start = start  # type: ignore[method-assign]


def few_fds(spare: int, handshake_timeout: float) -> None:
    """Manager initializer: leave the server ``spare`` fds beyond its own needs."""
    import resource

    import phalanx._listener

    phalanx._listener.HANDSHAKE_TIMEOUT = handshake_timeout
    in_use = len(os.listdir("/proc/self/fd"))
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 4 + spare, hard))  # 4: the listener's


def put_then_report(q: Any, items: list[Any], path: str, sndbuf: int = 0) -> None:
    """Put every item, report that every put() returned, then wait to be killed.

    ``sndbuf``: shrink the queue's socket first, so that it fills up after a
    few large items (they then have to wait somewhere: where?).
    """
    if sndbuf:
        import socket

        q._channel.writer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    for item in items:
        q.put(item)
    sleep_forever(path)


def put_counting(q: Any, count: Any, sizes: list[int], sndbuf: int = 0) -> None:
    """Put items ``(i, bytes of sizes[i % len])`` forever; ``count`` = puts that returned.

    ``sndbuf``: as for ``put_then_report``.
    """
    if sndbuf:
        import socket

        q._channel.writer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    i = 0
    while True:
        size = sizes[i % len(sizes)]
        q.put((i, bytes([i % 251]) * size))
        i += 1
        count.value = i


def get_forever(q: Any) -> None:
    while True:
        q.get()


def announce_then_wait_on(cond: Any, sleeping: Any, woken: Any) -> None:
    """Wait on ``cond`` (announcing it), then say we woke."""
    with cond:
        sleeping.release()
        cond.wait(DEADLINE)
    woken.release()


def wait_for_event(event: Any, waiting: Any, woken: Any) -> None:
    waiting.release()
    if event.wait(DEADLINE):
        woken.release()


def barrier_rounds(barrier: Any, rounds: int, done: Any) -> None:
    """``rounds`` cycles of the barrier, then count ourselves done."""
    for _ in range(rounds):
        barrier.wait(DEADLINE)
    done.release()
