"""Functions that cluster pools run in tests (fake engine: in this process; Dask/Ray: workers).

Runs are counted in ``RUNS`` (fake engine: shared with the test) or, on a
real engine, in files under a directory the test gives (``marker_dir``).
"""

from __future__ import annotations

import collections
import os
import threading
import time
from typing import Any

RUNS: collections.Counter[Any] = collections.Counter()
_lock = threading.Lock()
ONCE: set[Any] = set()  # items that already died once


def reset() -> None:
    with _lock:
        RUNS.clear()
        ONCE.clear()


def _count(x: Any) -> None:
    with _lock:
        RUNS[x] += 1


def square(x: int) -> int:
    _count(x)
    return x * x


def add(a: int, b: int) -> int:
    return a + b


def fail_on(x: int, bad: int = 7) -> int:
    if x == bad:
        raise ValueError(f"bad item {x}")
    return x


def die_on(x: int, bad: frozenset[int] = frozenset({5})) -> int:
    """The fake worker running item ``x`` dies if ``x`` is bad (every time)."""
    from phalanx._cluster.fake import die

    _count(x)
    if x in bad:
        die()
    return x


def die_once_on(x: int, bad: frozenset[int] = frozenset({5})) -> int:
    """... dies the first time only."""
    from phalanx._cluster.fake import die

    _count(x)
    with _lock:
        first = x in bad and x not in ONCE
        ONCE.add(x)
    if first:
        die()
    return x


def sleep_then(seconds: float, value: Any = None) -> Any:
    time.sleep(seconds)
    return value


def slow_square(x: int, seconds: float = 0.02) -> int:
    _count(x)
    time.sleep(seconds)
    return x * x


INITIALIZED: collections.Counter[Any] = collections.Counter()


def initializer(tag: str) -> None:
    with _lock:
        INITIALIZED[tag] += 1


def failing_initializer() -> None:
    raise RuntimeError("initializer says no")


# --- real engines: runs recorded as files (the workers are other processes) -----------


def mark(marker_dir: str, x: int, text: str = "") -> None:
    path = os.path.join(marker_dir, f"{x}-{os.getpid()}-{time.monotonic_ns()}")
    with open(path, "w") as f:
        f.write(text)


def marked_by(marker_dir: str) -> set[str]:
    """The texts of the marks so far (where the runs were, for ``marked_square_at``)."""
    texts = set()
    for name in os.listdir(marker_dir):
        with open(os.path.join(marker_dir, name)) as f:
            texts.add(f.read())
    return texts


def runs_of(marker_dir: str) -> collections.Counter[int]:
    return collections.Counter(int(name.split("-")[0]) for name in os.listdir(marker_dir))


def marked_square(args: tuple[str, int, float]) -> int:
    marker_dir, x, seconds = args
    mark(marker_dir, x)
    time.sleep(seconds)
    return x * x


def marked_square_at(args: tuple[str, int, float, str]) -> int:
    """``marked_square`` whose mark says the address of the host it ran on."""
    marker_dir, x, seconds, toward = args
    mark(marker_dir, x, my_ip(toward, 0.0))
    time.sleep(seconds)
    return x * x


def kill_self_on(args: tuple[str, int, int]) -> int:
    """Kills its own worker process (SIGKILL) when ``x == bad``, the first time only."""
    import signal

    marker_dir, x, bad = args
    first = x == bad and not any(n.startswith(f"{x}-") for n in os.listdir(marker_dir))
    mark(marker_dir, x)
    if first:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def pid_of_worker(_: Any = None) -> int:
    return os.getpid()


def row_sum(args: tuple[Any, int]) -> float:
    array, i = args
    return float(array[i].sum())


def is_writeable(array: Any) -> bool:
    return bool(array.flags.writeable)


def add_under_lock(args: tuple[Any, Any, int]) -> None:
    lock, value, n = args
    for _ in range(n):
        with lock:
            value.value += 1


def slow_row_sum(args: tuple[Any, int, float]) -> float:
    big, i, seconds = args
    time.sleep(seconds)
    return float(big[i].sum())


def my_ip(toward: str, seconds: float = 0.05) -> str:
    """This worker's address on the route to ``toward`` (multi-host tests), after
    ``seconds``: work long enough that a map keeps both worker hosts busy."""
    import socket

    time.sleep(seconds)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((toward, 9))
        return str(probe.getsockname()[0])


def count_on_remote_manager(args: tuple[str, int, int, str]) -> str:
    """Adds 1 to a shared counter ``n`` times under the server's lock; returns where it ran."""
    from phalanx.managers import RemoteManager

    host, port, n, toward = args
    manager = RemoteManager(address=(host, port))  # the key: $PHALANX_AUTHKEY
    manager.connect()
    lock, counts = manager.get_lock("lock"), manager.get_dict("counts")
    for _ in range(n):
        with lock:
            counts["n"] = counts.get("n", 0) + 1
    return my_ip(toward)


def connect_with_wrong_key(args: tuple[str, int]) -> str:
    from phalanx import AuthenticationError
    from phalanx.managers import RemoteManager

    try:
        RemoteManager(address=args, authkey=b"not the key").connect()
    except AuthenticationError:
        return "refused"
    return "accepted"


def kill_self_always_on(args: tuple[str, int, int]) -> int:
    """Kills its own worker process (SIGKILL) every time ``x == bad`` (a poison item)."""
    import signal

    marker_dir, x, bad = args
    mark(marker_dir, x)
    if x == bad:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def nested_sum(n: int) -> int:
    """A local phalanx pool inside a cluster task."""
    import phalanx

    with phalanx.Pool(2) as inner:
        return sum(inner.map(square, range(n)))


def check_ctrl_c(proc: Any, marks: str, settle: float) -> None:
    """A driver ``proc`` printed "ready" and maps ``marked_square`` over 200 items: SIGINT
    it after ``settle`` s; it must print "interrupted <monotonic time>" within 1 s (one
    clock for the machine), and no chunk may start after that."""
    import signal

    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(settle)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        out = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    interrupted = [line for line in out.splitlines() if line.startswith("interrupted")]
    assert interrupted, out
    assert float(interrupted[0].split()[1]) - sent < 1.0
    started = sum(runs_of(marks).values())
    time.sleep(1)
    assert sum(runs_of(marks).values()) <= started + 2  # no chunk starts after
    assert started < 200


def check_pool_api(pool: Any, capfd: Any) -> None:
    """The Pool API on a cluster pool of two slots, as the local pool's tests check it:
    results, the item named in an exception, progress bars, callbacks."""
    import threading

    import pytest

    assert pool._processes == 2
    assert pool.map(abs, range(-50, 50)) == [abs(x) for x in range(-50, 50)]
    assert pool.apply(add, (2, 3)) == 5
    assert pool.starmap(add, [(1, 2), (3, 4)]) == [3, 7]
    assert list(pool.imap(abs, range(-20, 0))) == [abs(x) for x in range(-20, 0)]
    assert sorted(pool.imap_unordered(abs, range(30))) == list(range(30))
    with pytest.raises(ValueError, match="bad item 7") as info:
        pool.map(fail_on, range(10))
    assert info.value.__notes__ == ["raised by item 7 of map(fail_on) in a pool worker"]

    capfd.readouterr()
    assert pool.map(square, range(20), progress=True) == [x * x for x in range(20)]
    assert list(pool.imap(square, range(20), progress="squaring")) == [x * x for x in range(20)]
    err = capfd.readouterr().err
    assert "square: 100%" in err and "squaring: 100%" in err and "20/20" in err, err

    got: list[Any] = []
    called = threading.Event()

    def keep(value: Any) -> None:
        got.append(value)
        called.set()

    pool.map_async(square, range(5), callback=keep).get(60)
    assert called.wait(60) and got == [[0, 1, 4, 9, 16]]
    called.clear()
    pool.apply_async(fail_on, (7,), error_callback=keep)
    assert called.wait(60) and isinstance(got[1], ValueError)
