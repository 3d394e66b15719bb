"""``Queue``, ``JoinableQueue`` and ``SimpleQueue`` between processes (``phalanx.queues``).

Cross-process tests run under each start method.  Every ``get``/``put`` that
may block has a timeout; children report through JSON files, through the
queues themselves or through counters in shared memory.  The crash tests kill
producers and consumers with a real SIGKILL at points they announce (inside
the pickling of an object, inside the unpickling of one) and at moments
chosen by the test, then check that everything else arrives intact, that
nobody hangs and that nothing is left in /dev/shm.
"""

from __future__ import annotations

import gc
import os
import pickle
import queue
import random
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import _queue_targets as targets
import phalanx
from _conn_targets import Background
from _queue_targets import BIG, BlocksWhenUnpickled, FailsToPickle, intact, payload
from _targets import (
    DEADLINE,
    FailsToUnpickle,
    finish,
    named_shm_held,
    start,
    wait_for_json,
    wait_until,
)
from phalanx import _ring, queues
from phalanx._channel import MAX_INLINE
from phalanx._platform import HAVE_ROBUST_MUTEX
from phalanx._queue_transport import SocketTransport
from phalanx._ring import CAPACITY
from phalanx.context import BaseContext
from phalanx.process import BaseProcess
from phalanx.reduction import ForkingPickler

SHORT = 0.2
SLACK = 5.0


# /dev/shm entries the processes a test killed held at that moment (see no_shm_leak).
_HELD_BY_VICTIMS: set[str] = set()


def kill(p: BaseProcess) -> None:
    if p.exitcode is None:
        if p.pid is not None:
            _HELD_BY_VICTIMS.update(named_shm_held(p.pid))
        p.kill()
    p.join(DEADLINE)
    assert p.exitcode is not None


def assert_raises_after_short(exc: type[BaseException], call: Callable[[], Any]) -> None:
    t0 = time.monotonic()
    with pytest.raises(exc):
        call()
    assert SHORT * 0.9 <= time.monotonic() - t0 < SLACK


def drain(q: Any) -> list[Any]:
    """Everything left in ``q`` (which must hold at least one item less than a DEADLINE away)."""
    items = []
    while True:
        try:
            items.append(q.get(timeout=SHORT))
        except queue.Empty:
            return items


@pytest.fixture(autouse=True, params=["ring", "socket"])
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test under both transports: the shared ring (Linux) and the socket alone (others)."""
    if request.param == "socket":
        monkeypatch.setattr(queues, "make_transport", lambda maxsize=0: SocketTransport())
    elif not HAVE_ROBUST_MUTEX:
        pytest.skip("no shared ring on this system")
    return str(request.param)


@pytest.fixture
def no_shm_leak() -> Iterator[None]:
    """Queues use nothing in /dev/shm: large messages travel in anonymous memfds.

    Judged through the test's own processes (other programs may use /dev/shm
    meanwhile): what this process holds at the end beyond what it held before,
    and what each process the test kills holds at that moment.
    """
    _HELD_BY_VICTIMS.clear()
    before = named_shm_held(os.getpid())
    yield
    gc.collect()
    # (A forked victim also maps what this process already held: not its doing.)
    held = (named_shm_held(os.getpid()) | _HELD_BY_VICTIMS) - before
    assert not held, f"queues used /dev/shm: {sorted(held)}"


def assert_each_item_once_in_order(results: list[Any], producers: int, n: int) -> None:
    """Consumers' reports of ``(tag, i)`` items: each item once, FIFO per producer."""
    received = [tuple(item) for result in results for item in result]
    assert len(received) == producers * n  # no loss ...
    assert set(received) == {(tag, i) for tag in range(producers) for i in range(n)}  # no dup
    for result in results:  # FIFO per producer, as each consumer sees it
        for tag in range(producers):
            mine = [i for t, i in result if t == tag]
            assert mine == sorted(mine)


def closed(q: Any) -> None:
    """``close()`` and ``join_thread()`` ``q``, then close its sockets.

    ``Queue.close()`` leaves the channel's sockets open, so a collected queue
    warns (see ``test_a_closed_queue_is_collected_quietly``); closing them
    here keeps that warning out of the other tests.
    """
    q.close()
    if isinstance(q, queues.Queue):
        q.join_thread()
        q._channel.reader.close()
        q._channel.writer.close()


# --- many producers and consumers -------------------------------------------------------------


def test_many_producers_and_consumers(ctx: BaseContext, tmp_path: Path) -> None:
    n = 2000
    q = ctx.Queue()
    paths = [str(tmp_path / f"consumer{i}") for i in range(3)]
    consumers = [start(ctx, targets.consume, q, path) for path in paths]
    producers = [start(ctx, targets.produce, q, tag, n) for tag in range(3)]
    for p in producers:
        finish(p)
    for _ in consumers:
        q.put(None)
    results = [wait_for_json(path) for path in paths]
    for p in consumers:
        finish(p)
    assert_each_item_once_in_order(results, producers=3, n=n)
    assert q.empty()
    closed(q)


def test_the_ring_grows_while_others_read_and_write(
    ctx: BaseContext, tmp_path: Path, transport: str
) -> None:
    """Producers outrun consumers by megabytes: the ring doubles several times while
    every process reads and writes it; nothing lost, duplicated or reordered."""
    if transport != "ring":
        pytest.skip("a test of the ring")
    n, pad = 15_000, 200
    q = ctx.Queue()
    paths = [str(tmp_path / f"consumer{i}") for i in range(2)]
    producers = [start(ctx, targets.produce_padded, q, tag, n, pad) for tag in range(3)]
    consumers = [start(ctx, targets.consume_padded, q, path) for path in paths]
    for p in producers:
        finish(p)
    for _ in consumers:
        q.put(None)
    results = [wait_for_json(path) for path in paths]
    for p in consumers:
        finish(p)
    assert_each_item_once_in_order(results, producers=3, n=n)
    assert q._transport.ring._c[0] > CAPACITY  # it did grow
    assert q.empty() and q.qsize() == 0
    closed(q)


def test_fifo_from_one_producer(ctx: BaseContext) -> None:
    q = ctx.Queue()
    p = start(ctx, targets.produce, q, 7, 500)
    assert [q.get(timeout=DEADLINE) for _ in range(500)] == [(7, i) for i in range(500)]
    finish(p)
    closed(q)


def test_threads_put_and_get() -> None:
    q = phalanx.Queue()
    putters = [Background(targets.produce, q, tag, 300) for tag in range(4)]
    got = [q.get(timeout=DEADLINE) for _ in range(1200)]
    for b in putters:
        b.result()
    assert sorted(got) == sorted((tag, i) for tag in range(4) for i in range(300))
    closed(q)


# --- maxsize, timeouts, state -----------------------------------------------------------------


def test_maxsize_blocks_and_times_out() -> None:
    q = phalanx.Queue(2)
    assert q.empty() and not q.full() and q.qsize() == 0
    q.put("a")
    q.put_nowait("b")
    assert q.full() and not q.empty() and q.qsize() == 2
    assert_raises_after_short(queue.Full, lambda: q.put("c", timeout=SHORT))
    for call in (
        lambda: q.put_nowait("c"),
        lambda: q.put("c", False),
        lambda: q.put("c", False, 10),
    ):
        t0 = time.monotonic()
        with pytest.raises(queue.Full):
            call()
        assert time.monotonic() - t0 < 1.0
    assert q.get() == "a"
    assert not q.full() and q.qsize() == 1
    q.put("c", timeout=SHORT)
    assert [q.get_nowait(), q.get(False)] == ["b", "c"]
    assert q.empty() and q.qsize() == 0
    closed(q)


def test_get_timeouts_on_an_empty_queue() -> None:
    q = phalanx.Queue()
    assert_raises_after_short(queue.Empty, lambda: q.get(timeout=SHORT))
    for call in (
        q.get_nowait,
        lambda: q.get(False),
        lambda: q.get(False, 10),
        lambda: q.get(True, 0),
    ):
        t0 = time.monotonic()
        with pytest.raises(queue.Empty):
            call()
        assert time.monotonic() - t0 < 1.0
    closed(q)


def test_queue_exceptions_are_the_stdlibs() -> None:
    assert queues.Empty is queue.Empty and queues.Full is queue.Full


def test_a_child_blocked_on_a_full_queue_resumes(ctx: BaseContext, tmp_path: Path) -> None:
    q = ctx.Queue(1)
    q.put("first")
    p = start(ctx, targets.put_one, q, "second", str(tmp_path / "done"))
    assert q.get(timeout=DEADLINE) == "first"  # makes room for the child
    wait_for_json(tmp_path / "done")
    assert q.get(timeout=DEADLINE) == "second"
    finish(p)
    closed(q)


def test_a_child_blocked_on_an_empty_queue_resumes(ctx: BaseContext, tmp_path: Path) -> None:
    q = ctx.Queue()
    p = start(ctx, targets.get_one, q, str(tmp_path / "out"))
    q.put({"hello": [1, 2]})
    assert wait_for_json(tmp_path / "out") == {"item": {"hello": [1, 2]}}
    finish(p)
    closed(q)


def test_qsize_across_processes(ctx: BaseContext) -> None:
    q = ctx.Queue(10)
    p = start(ctx, targets.produce, q, 1, 5)
    finish(p)
    assert q.qsize() == 5 and not q.empty() and not q.full()
    drain(q)
    assert q.qsize() == 0 and q.empty()
    closed(q)


def test_close_then_put_or_get() -> None:
    q = phalanx.Queue()
    q.put(1)
    q.close()
    for call in (lambda: q.put(2), lambda: q.get(), q.get_nowait, lambda: q.put_nowait(3)):
        with pytest.raises(ValueError, match="is closed"):
            call()
    closed(q)


def test_join_thread_before_close() -> None:
    q = phalanx.Queue()
    with pytest.raises(AssertionError, match="not closed"):
        q.join_thread()
    closed(q)


def test_qsize_is_zero_once_everything_was_taken(ctx: BaseContext, tmp_path: Path) -> None:
    q = ctx.Queue()
    go = ctx.Event()
    p = start(ctx, targets.put_pausing_after_send, q, "item", str(tmp_path / "sent"), go)
    try:
        wait_for_json(tmp_path / "sent")  # sent, not yet counted
        assert q.get(timeout=DEADLINE) == "item"
    finally:
        go.set()
        finish(p)
    try:
        assert q.empty()
        assert q.qsize() == 0
    finally:
        closed(q)


@pytest.mark.parametrize("maxsize", ["3", 2.5, None])
def test_maxsize_must_be_an_int(maxsize: Any) -> None:
    with pytest.raises(TypeError, match=re.escape(repr(maxsize))):
        phalanx.Queue(maxsize)


# --- JoinableQueue ----------------------------------------------------------------------------


def test_joinable_queue_join(ctx: BaseContext) -> None:
    q = ctx.JoinableQueue()
    for i in range(10):
        q.put(i)
    joiner = Background(q.join)
    assert not joiner.done(SHORT)  # ten tasks outstanding
    workers = [start(ctx, targets.get_then_task_done, q, 5) for _ in range(2)]
    joiner.result()
    for p in workers:
        finish(p)
    q.join()  # nothing outstanding: returns at once
    closed(q)


def test_joinable_queue_task_done_too_many_times() -> None:
    q = phalanx.JoinableQueue()
    with pytest.raises(ValueError, match="task_done\\(\\) called too many times"):
        q.task_done()
    q.put(1)
    q.get(timeout=DEADLINE)
    q.task_done()
    with pytest.raises(ValueError, match="too many times"):
        q.task_done()
    closed(q)


def test_joinable_queue_unpicklable_item_is_not_a_task() -> None:
    q = phalanx.JoinableQueue()
    with pytest.raises(TypeError):
        q.put(threading.Lock())
    Background(q.join).result()  # nothing outstanding
    closed(q)


# --- SimpleQueue ------------------------------------------------------------------------------


def test_simple_queue(ctx: BaseContext) -> None:
    inbox, outbox = ctx.SimpleQueue(), ctx.SimpleQueue()
    assert inbox.empty()
    p = start(ctx, targets.simple_echo, inbox, outbox)
    try:
        items = [1, "two", b"3" * (MAX_INLINE + 1), np.arange(5)]
        for item in items:
            inbox.put(item)
    finally:
        inbox.put(None)
    got = [Background(outbox.get).result() for _ in range(5)]
    finish(p)
    assert got[:3] == items[:3] and got[4] is None
    assert np.array_equal(got[3], items[3])
    assert outbox.empty() and inbox.empty()
    inbox.close()
    for call in (lambda: inbox.put(1), inbox.get):
        with pytest.raises(ValueError, match="is closed"):
            call()
    outbox.close()


def test_simple_queue_put_then_get_in_one_process() -> None:
    q = phalanx.SimpleQueue()
    q.put("x")
    assert not q.empty()
    assert q.get() == "x"
    assert q.empty()
    q.close()


# --- what travels -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, MAX_INLINE - 64, MAX_INLINE, MAX_INLINE + 1, 1 << 20])
def test_sizes_around_the_inline_limit(size: int) -> None:
    q = phalanx.Queue()
    data = payload(size, size)
    q.put(data)
    q.put(bytearray(data))
    assert q.get(timeout=DEADLINE) == data
    got = q.get(timeout=DEADLINE)
    assert type(got) is bytearray and got == data
    closed(q)


def test_large_objects_through_a_child(ctx: BaseContext) -> None:
    inbox, outbox = ctx.Queue(), ctx.Queue()
    objects: list[Any] = [
        payload(1, BIG),
        np.arange(BIG // 8, dtype=np.float64).reshape(-1, 1024),
        {"a": payload(2, MAX_INLINE * 2), "b": [np.ones(10, dtype=np.int8)] * 3},
        np.zeros((300, 300), dtype=[("x", "<i4"), ("y", "<f8")]),
        np.arange(1 << 20)[::3],  # not contiguous
        "small",
    ]
    p = start(ctx, targets.echo, inbox, outbox, len(objects))
    for obj in objects:
        inbox.put(obj)
    got = [outbox.get(timeout=DEADLINE) for _ in objects]
    finish(p)
    assert intact(1, got[0], BIG)
    for sent, back in [(objects[1], got[1]), (objects[3], got[3]), (objects[4], got[4])]:
        assert back.dtype == sent.dtype and back.shape == sent.shape
        assert np.array_equal(back, sent)
        assert back.flags.writeable
        back[0] = back[-1]  # really writable
    assert got[2]["a"] == objects[2]["a"] and all((a == 1).all() for a in got[2]["b"])
    assert got[5] == "small"
    closed(inbox)
    closed(outbox)


def test_received_arrays_are_independent() -> None:
    q = phalanx.Queue()
    a = np.arange(1 << 16)
    q.put(a)
    q.put(a)
    first, second = q.get(timeout=DEADLINE), q.get(timeout=DEADLINE)
    first[:] = 0
    assert np.array_equal(second, a) and np.array_equal(a, np.arange(1 << 16))
    closed(q)


def test_unpicklable_object_fails_in_the_caller(ctx: BaseContext, tmp_path: Path) -> None:
    q = ctx.Queue(1)
    with pytest.raises(TypeError, match="pickle"):
        q.put(threading.Lock())
    with pytest.raises(ValueError, match="refusing to be pickled"):
        q.put(FailsToPickle())
    with pytest.raises(ValueError, match="refusing to be pickled"):
        q.put(("big first", payload(0, MAX_INLINE * 4), FailsToPickle()))
    # Nothing was sent and no room was lost: the queue still takes its one item.
    assert q.empty()
    q.put("ok", timeout=SHORT)
    with pytest.raises(queue.Full):
        q.put("one too many", timeout=SHORT)
    p = start(ctx, targets.get_one, q, str(tmp_path / "out"))
    assert wait_for_json(tmp_path / "out") == {"item": "ok"}
    finish(p)
    assert q.empty()
    closed(q)


@pytest.mark.parametrize("size", [0, MAX_INLINE * 2])
def test_object_failing_to_unpickle_fails_in_get_and_only_there(size: int) -> None:
    q = phalanx.Queue(2)
    q.put((payload(0, size), FailsToUnpickle()))
    q.put("next")
    with pytest.raises(ValueError, match="unpickling failed on purpose"):
        q.get(timeout=DEADLINE)
    assert q.get(timeout=DEADLINE) == "next"
    assert q.empty() and q.qsize() == 0
    q.put(1, timeout=SHORT)
    q.put(2, timeout=SHORT)  # both units of room came back
    assert drain(q) == [1, 2]
    closed(q)


def test_unbounded_put_never_blocks_in_a_child(ctx: BaseContext, tmp_path: Path) -> None:
    """The channel fills up; the feeder thread takes over and everything arrives in order."""
    n, size = 2000, 10_000  # 20 MB: far more than a socket buffer
    q = ctx.Queue()
    p = start(ctx, targets.put_many_then_report, q, str(tmp_path / "done"), n, size, True)
    # Nobody has read anything yet and the producer is already done.
    done = wait_for_json(tmp_path / "done")
    assert done["elapsed"] < DEADLINE
    for i in range(n):
        index, data = q.get(timeout=DEADLINE)
        assert index == i and intact(i, data, size)
    finish(p)  # close() and join_thread() waited for the feeder to flush
    assert q.empty()
    closed(q)


def test_a_producer_exits_once_its_feeder_has_flushed(tmp_path: Path) -> None:
    ctx = phalanx.get_context("fork")
    n, size = 2000, 10_000
    q = ctx.Queue()
    p = start(ctx, targets.put_many_then_report, q, str(tmp_path / "done"), n, size, False)
    try:
        wait_for_json(tmp_path / "done")
        for i in range(n):
            assert q.get(timeout=DEADLINE)[0] == i
        p.join(5.0)  # everything has been flushed: nothing left to wait for
        assert p.exitcode == 0
    finally:
        kill(p)
        closed(q)


def test_unbounded_put_never_blocks_in_this_process() -> None:
    q = phalanx.Queue()
    putter = Background(lambda: [q.put((i, payload(i, 10_000))) for i in range(1000)])
    putter.result()  # returned without anyone reading
    got = [q.get(timeout=DEADLINE) for _ in range(1000)]
    assert [i for i, _ in got] == list(range(1000))
    assert all(intact(i, data, 10_000) for i, data in got)
    closed(q)


def test_mixed_sizes_keep_their_order_through_wraps_and_back_pressure(ctx: BaseContext) -> None:
    """Items small and large, more than the transport holds: order and bytes intact.

    Small items wrap around the ring many times, large ones (memfd datagrams)
    take their place through markers, and the feeder thread takes over when
    the ring is full.
    """
    rng = random.Random(5)
    sizes = [rng.choice([1, 10, 300, 5000, MAX_INLINE - 100, MAX_INLINE + 10]) for _ in range(600)]
    q = ctx.Queue()
    p = start(ctx, targets.put_sized, q, sizes)
    try:
        for i, size in enumerate(sizes):
            index, data = q.get(timeout=DEADLINE)
            assert index == i
            assert intact(i, data, size)
        finish(p)
        assert q.empty()
    finally:
        kill(p)
        closed(q)


def test_one_mutex_for_both_sides(monkeypatch: pytest.MonkeyPatch, transport: str) -> None:
    """Where stores may be seen out of order (not x86), writers and readers share one mutex."""
    if transport != "ring":
        pytest.skip("a test of the ring")
    monkeypatch.setattr(_ring, "_MUTEXES_SHARED", True)
    q = phalanx.get_context("fork").Queue()
    assert q._transport.ring._rlock is q._transport.ring._wlock
    closed(q)
    test_mixed_sizes_keep_their_order_through_wraps_and_back_pressure(phalanx.get_context("fork"))


# --- the shared ring: a process killed at each step of a put or a get --------------------------

# (the action, the line of _ring.py where the process is killed, the size of the item)
RING_DEATHS = {
    "writer-before-its-commit": ("put", "w[_TAIL] = tail + size  # the commit", 100),
    "reader-before-its-commit": (
        "get",
        "r[_HEAD] = head + _LEN_SIZE + word  # the commit",
        100,
    ),
    "large-writer-after-send": ("put", "self._append(_MARKER", 2 * MAX_INLINE),
    "large-reader-before-receive": ("get", "return receive(_SEQ_WORD", 2 * MAX_INLINE),
}


@pytest.mark.parametrize("case", list(RING_DEATHS))
def test_a_process_killed_inside_the_ring_costs_at_most_its_item(
    ctx: BaseContext, case: str, no_shm_leak: None, transport: str
) -> None:
    """Killed while holding the ring's mutex, or between a datagram and its marker:
    the mutex is not left held, the ring is repaired, no other item is lost or torn."""
    if transport != "ring":
        pytest.skip("a test of the ring")
    action, line, size = RING_DEATHS[case]
    q = ctx.Queue()
    try:
        if action == "get":
            q.put(("doomed", payload(0, size)))
        q.put(("first", payload(1, size)))
        p = start(ctx, targets.die_at_ring_line, q, action, line, size)
        finish(p, -9)
        q.put(("last", payload(2, size)))
        got = drain(q)
        tags = [tag for tag, _ in got]
        if case == "reader-before-its-commit":
            # It died before taking the item: the item is still there, in its place.
            assert tags == ["doomed", "first", "last"]
        else:
            assert tags == ["first", "last"]
        for tag, data in got:
            assert intact({"doomed": 0, "first": 1, "last": 2}[tag], data, size)
        assert q.qsize() == 0
        assert q.empty()
    finally:
        closed(q)


# --- pickling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["Queue", "JoinableQueue", "SimpleQueue"])
def test_pickling_outside_process_start_is_refused(kind: str) -> None:
    q = getattr(phalanx, kind)()
    with pytest.raises(RuntimeError, match="inheritance"):
        pickle.dumps(q)
    with pytest.raises(RuntimeError, match="inheritance"):
        ForkingPickler.dumps(q)
    a, b = phalanx.Pipe()
    with a, b, pytest.raises(RuntimeError, match="inheritance"):
        a.send(q)
    closed(q)


@pytest.mark.parametrize("fed", [False, True], ids=["direct", "feeder"])
def test_a_closed_queue_is_collected_quietly(fed: bool) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q = phalanx.Queue()
        n = 200 if fed else 1
        for i in range(n):
            q.put(payload(i, 10_000))
        for _ in range(n):
            q.get(timeout=DEADLINE)
        q.close()
        q.join_thread()
        del q
        gc.collect()
    assert [str(w.message) for w in caught] == []


def test_repr() -> None:
    q = phalanx.Queue(3)
    assert re.fullmatch(r"<Queue at 0x[0-9a-f]+ maxsize=3>", repr(q))
    closed(q)


# --- crashes ----------------------------------------------------------------------------------


def test_producer_killed_while_pickling_a_50mb_object(
    ctx: BaseContext, tmp_path: Path, no_shm_leak: None
) -> None:
    q = ctx.Queue()
    before = [("victim", 0, payload(0, BIG)), ("victim", 1, "small")]
    victim = start(ctx, targets.put_then_block, q, before, str(tmp_path / "blocked"))
    try:
        wait_for_json(tmp_path / "blocked")  # inside put(), 50 MB already pickled
    finally:
        kill(victim)
    healthy = start(ctx, targets.put_big_forever, q, "healthy", ctx.RawValue("i"))
    try:
        got = [q.get(timeout=DEADLINE) for _ in range(4)]
    finally:
        kill(healthy)
    assert got[0][:2] == ("victim", 0) and intact(0, got[0][2], BIG)
    assert got[1] == ("victim", 1, "small")
    assert [m[:2] for m in got[2:]] == [("healthy", 0), ("healthy", 1)]
    assert all(intact(i, m[2], BIG) for i, m in enumerate(got[2:]))
    del got
    # The healthy producer's messages in flight: whole ones, in order, then nothing.
    rest = drain(q)
    assert [m[1] for m in rest] == list(range(2, 2 + len(rest)))
    assert all(m[0] == "healthy" and intact(m[1], m[2], BIG) for m in rest)
    closed(q)


def test_producer_killed_at_various_moments(
    ctx: BaseContext, tmp_path: Path, no_shm_leak: None
) -> None:
    """Kill producers of 50 MB messages as soon as k of their messages have arrived."""
    q = ctx.Queue()
    for k in (1, 2, 3):
        progress = ctx.RawValue("i", -1)
        p = start(ctx, targets.put_big_forever, q, f"p{k}", progress)
        try:
            got = [q.get(timeout=DEADLINE) for _ in range(k)]
        finally:
            kill(p)  # most likely in the middle of put() number k + 1 or k + 2
        got += drain(q)
        indices = [m[1] for m in got]
        assert indices == list(range(len(indices))), f"p{k}: {indices}"  # a prefix, in order
        assert len(indices) <= progress.value + 1
        assert all(m[0] == f"p{k}" and intact(m[1], m[2], BIG) for m in got)
        del got
    q.put("still works")
    assert q.get(timeout=DEADLINE) == "still works"
    closed(q)


def test_consumer_killed_while_unpickling_a_50mb_object(
    ctx: BaseContext, tmp_path: Path, no_shm_leak: None
) -> None:
    q = ctx.Queue()
    q.put(("first", payload(0, BIG), BlocksWhenUnpickled(str(tmp_path / "blocked"))))
    for i in range(1, 5):
        q.put((i, payload(i, BIG if i % 2 else 100)))
    victim = start(ctx, targets.get_one, q, str(tmp_path / "never"))
    try:
        wait_for_json(tmp_path / "blocked")  # inside get(), the 50 MB message in hand
    finally:
        kill(victim)
    assert not (tmp_path / "never").exists()
    assert q.qsize() == 4
    got = [q.get(timeout=DEADLINE) for _ in range(4)]
    assert [i for i, _ in got] == [1, 2, 3, 4]
    assert all(intact(i, data, BIG if i % 2 else 100) for i, data in got)
    with pytest.raises(queue.Empty):
        q.get(timeout=SHORT)
    closed(q)


def test_consumer_killed_at_various_moments(
    ctx: BaseContext, tmp_path: Path, no_shm_leak: None
) -> None:
    """Consumers of 50 MB messages killed after k gets: at most the message in hand is lost."""
    n = 6
    q = ctx.Queue()
    for i in range(n):
        q.put((i, payload(i, BIG)))
    taken: list[int] = []
    kills = 0
    for k in (1, 2):
        got_flags, count = ctx.RawArray("b", n), ctx.RawValue("i", 0)
        p = start(ctx, targets.get_and_count, q, got_flags, count)
        try:
            wait_until(lambda: count.value >= k, what=f"{k} messages consumed")  # noqa: B023
        finally:
            kill(p)  # most likely in the middle of get() number k + 1
        kills += 1
        taken += [i for i in range(n) if got_flags[i]]
    rest = drain(q)
    indices = [i for i, _ in rest]
    assert indices == sorted(indices)  # still in order
    everything = taken + indices
    assert len(everything) == len(set(everything)), everything  # nothing twice
    assert len(set(range(n)) - set(everything)) <= kills, everything  # one lost per kill at most
    assert all(intact(i, data, BIG) for i, data in rest)
    q.put("still works")
    assert q.get(timeout=DEADLINE) == "still works"
    closed(q)


def test_producer_killed_while_pickling_keeps_a_bounded_queues_capacity(
    ctx: BaseContext, tmp_path: Path
) -> None:
    q = ctx.Queue(2)
    victim = start(ctx, targets.put_then_block, q, [], str(tmp_path / "blocked"))
    try:
        wait_for_json(tmp_path / "blocked")
    finally:
        kill(victim)
    try:
        assert q.empty()
        q.put(1, timeout=SHORT)
        q.put(2, timeout=SHORT)  # queue.Full: one unit of room died with the victim
        assert drain(q) == [1, 2]
    finally:
        closed(q)


def test_a_queue_of_one_stays_full_after_its_producer_exits(ctx: BaseContext) -> None:
    q = ctx.Queue(1)
    p = start(ctx, targets.put_one, q, "from child")
    finish(p)
    p.close()  # the failure's traceback keeps ``p`` alive until the end of the session
    try:
        with pytest.raises(queue.Full):
            q.put("second", timeout=1.0)  # stdlib: Full; here an AbandonedLockWarning
        assert q.qsize() == 1
    finally:
        closed(q)  # not drained: the semaphore is beyond repair
