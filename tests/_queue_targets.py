"""Child targets and objects for ``test_queues``.

Targets live here, in an importable module, so spawn and forkserver children
can unpickle them by reference.  Every ``get``/``put`` a child makes has a
deadline (``DEADLINE``); a child that is meant to be killed says where it is
(a JSON file, or a counter in shared memory) and then waits for SIGKILL.
"""

from __future__ import annotations

import linecache
import os
import signal
import socket
import sys
import time
from typing import Any

from _targets import DEADLINE, write_json

BIG = 50 * 1024 * 1024  # "a 50 MB object"


def payload(index: int, size: int) -> bytes:
    """``size`` bytes that say which message they belong to (fast to make and check)."""
    return bytes([index % 251]) * size


def intact(index: int, data: bytes, size: int) -> bool:
    return len(data) == size and data.count(bytes([index % 251])) == size


def wait_to_be_killed(path: str) -> None:
    """Report ``{"pid": ...}`` to ``path``, then never return."""
    write_json(path, {"pid": os.getpid()})
    while True:
        time.sleep(3600)


class BlocksWhenPickled:
    """Pickling it (inside ``put()``) reports to ``path`` and waits to be killed."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        wait_to_be_killed(self.path)
        raise AssertionError("unreachable")  # pragma: no cover


class BlocksWhenUnpickled:
    """Pickles fine; unpickling it (inside ``get()``) reports to ``path`` and waits to be killed."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return wait_to_be_killed, (self.path,)


class FailsToPickle:
    def __reduce__(self) -> Any:
        raise ValueError("refusing to be pickled")


# --- producers --------------------------------------------------------------------------------


def produce(q: Any, tag: int, n: int) -> None:
    for i in range(n):
        q.put((tag, i))


def put_sized(q: Any, sizes: list[int]) -> None:
    """Put ``(i, payload(i, size))`` for each size, in order."""
    for i, size in enumerate(sizes):
        q.put((i, payload(i, size)))


def consume(q: Any, path: str) -> None:
    """Get ``(tag, i)`` items until None; report them in the order received."""
    items = []
    while True:
        item = q.get(timeout=DEADLINE)
        if item is None:
            break
        items.append(item)
    write_json(path, items)


def put_many_then_report(q: Any, path: str, n: int, size: int, close: bool) -> None:
    """Put ``n`` items of ``size`` bytes without anyone reading; report how long it took.

    Then (``close``) close the queue and wait for the feeder thread to flush,
    or just return.
    """
    t0 = time.monotonic()
    for i in range(n):
        q.put((i, payload(i, size)))
    write_json(path, {"elapsed": time.monotonic() - t0})
    if close:
        q.close()
        q.join_thread()


def put_pausing_after_send(q: Any, obj: Any, path: str, go: Any) -> None:
    """Put ``obj``; once it is in the channel, report and wait for ``go`` before going on.

    A profile hook stops the put right after the item is committed (the return
    of ``Ring.put``/``put_marker``, of ``Channel.send``, or of the socket's own
    ``send``), where a slow producer may be preempted before any bookkeeping
    that follows.
    """

    def hook(frame: Any, event: str, arg: Any) -> None:
        sent = (
            event == "return"
            and (frame.f_code.co_name, os.path.basename(frame.f_code.co_filename))
            in (("send", "_channel.py"), ("put", "_ring.py"), ("put_marker", "_ring.py"))
        ) or (
            event == "c_return"
            and getattr(arg, "__name__", "") in ("send", "sendmsg")
            and isinstance(getattr(arg, "__self__", None), socket.socket)
        )
        if sent:
            sys.setprofile(None)
            write_json(path, {"pid": os.getpid()})
            go.wait(DEADLINE)

    sys.setprofile(hook)
    try:
        q.put(obj)
    finally:
        sys.setprofile(None)


def put_one(q: Any, obj: Any, path: str | None = None) -> None:
    """Put ``obj`` (waiting for room up to DEADLINE); report when done."""
    q.put(obj, timeout=DEADLINE)
    if path is not None:
        write_json(path, {"done": True})


def get_one(q: Any, path: str) -> None:
    write_json(path, {"item": q.get(timeout=DEADLINE)})


def echo(inbox: Any, outbox: Any, n: int) -> None:
    """Put back each of ``n`` items got from ``inbox``."""
    for _ in range(n):
        outbox.put(inbox.get(timeout=DEADLINE))


def put_then_block(q: Any, items: list[Any], path: str) -> None:
    """Put ``items``, then put an object that blocks (and reports) while being pickled."""
    for item in items:
        q.put(item)
    q.put(("blocker", payload(0, BIG), BlocksWhenPickled(path)))


def put_big_forever(q: Any, tag: str, progress: Any) -> None:
    """Put 50 MB messages ``(tag, i, payload)`` until killed; ``progress`` counts the puts begun."""
    i = 0
    while True:
        progress.value = i
        q.put((tag, i, payload(i, BIG)))
        i += 1


def get_and_count(q: Any, got: Any, count: Any) -> None:
    """Get messages ``(i, payload)`` until killed, marking ``got[i]`` and counting them."""
    while True:
        i, _data = q.get(timeout=DEADLINE)
        got[i] = 1
        count.value += 1


def get_then_task_done(q: Any, n: int) -> None:
    for _ in range(n):
        q.get(timeout=DEADLINE)
        q.task_done()


def simple_echo(inbox: Any, outbox: Any) -> None:
    """SimpleQueue: put back items until None (put back too)."""
    while True:
        item = inbox.get()
        outbox.put(item)
        if item is None:
            break


def die_at_ring_line(q: Any, action: str, line_start: str, size: int) -> None:
    """Put (or get) once, SIGKILLing this process on reaching a given line of ``_ring.py``.

    The line is found by its text, so the test names a step (such as "the
    commit") rather than a line number.  ``size``: bytes of the item put.  The
    ring's compiled hot path is switched off here, so that the Python steps run
    (``test_ring_speedups`` kills processes inside the compiled ones).
    """
    ring = getattr(getattr(q, "_transport", None), "ring", None)
    if ring is not None:
        ring._fast = None

    def local(frame: Any, event: str, arg: Any) -> Any:
        if event == "line":
            text = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
            if text.startswith(line_start):
                os.kill(os.getpid(), signal.SIGKILL)
        return local

    def hook(frame: Any, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_filename.endswith("_ring.py") else None

    sys.settrace(hook)
    try:
        if action == "put":
            q.put(("doomed", payload(0, size)))
        else:
            q.get(timeout=DEADLINE)
    finally:
        sys.settrace(None)
    os._exit(3)  # the line was never reached: the test fails on the exit code


def produce_padded(q: Any, tag: int, n: int, pad: int) -> None:
    """``(tag, i, pad bytes)`` for i in range(n): enough to make a ring grow."""
    filler = b"x" * pad
    for i in range(n):
        q.put((tag, i, filler))


def consume_padded(q: Any, path: str) -> None:
    """Like ``consume``, for ``produce_padded``'s items (reports ``(tag, i)`` only)."""
    items = []
    while True:
        item = q.get(timeout=DEADLINE)
        if item is None:
            break
        items.append(item[:2])
    write_json(path, items)


def put_counted_forever(q: Any, tag: int, pad: int, ready: Any) -> None:
    """Put ``(tag, i, pad bytes)`` for i = 0, 1, ... until killed; ``ready`` once started."""
    filler = payload(tag, pad)
    q.put((tag, -1, filler))
    ready.release()
    i = 0
    while True:
        q.put((tag, i, filler))
        i += 1


def get_forever(q: Any, ready: Any) -> None:
    """Get items until killed; ``ready`` once the first is taken."""
    q.get(timeout=DEADLINE)
    ready.release()
    while True:
        q.get(timeout=DEADLINE)


def die_holding_ring_mutex(q: Any, readers: bool) -> None:
    """Take one of the ring's mutexes, then SIGKILL this process: it dies holding it."""
    from phalanx import _platform

    ring = q._transport.ring
    _platform.mutex_lock(ring._rlock if readers else ring._wlock)
    os.kill(os.getpid(), signal.SIGKILL)
