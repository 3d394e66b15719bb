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


def announce_init(directory: str, seconds: float) -> None:
    """Initializer: say that this worker is initializing (a file named by its pid), take a while."""
    with open(os.path.join(directory, str(os.getpid())), "w"):
        pass
    time.sleep(seconds)


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
