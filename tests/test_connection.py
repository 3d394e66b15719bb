"""``Pipe``, ``Connection`` and ``wait``: messages between threads and processes.

Listener/Client, the handshake and hostile peers are in ``test_listener``;
hypothesis fuzzing of the frame reader is in ``test_wire_fuzz``.  Anything
that may block runs with a deadline: ``poll(DEADLINE)`` before ``recv``, or a
``Background`` thread whose result is awaited with a timeout.
"""

from __future__ import annotations

import array
import errno
import gc
import math
import os
import pickle
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import _conn_targets as targets
import _targets
import phalanx
from _conn_targets import STOP, Background, Marker, Point, TravellingError, sha256
from _targets import DEADLINE, finish, python_code, run_python, start, wait_for_json
from phalanx import BufferTooShort, reduction
from phalanx.connection import Connection, Pipe, wait
from phalanx.context import BaseContext
from phalanx.dummy import connection as dummy_connection
from phalanx.process import BaseProcess

# --- helpers ---------------------------------------------------------------------------------


def ends(duplex: bool) -> tuple[Connection, Connection]:
    """(receiving end, sending end) of a new Pipe: a one-way Pipe is (reader, writer)."""
    return Pipe(duplex)


def recv_within(conn: Any, timeout: float = DEADLINE) -> Any:
    assert conn.poll(timeout), f"nothing to receive within {timeout} s"
    return conn.recv()


def recv_bytes_within(conn: Any, timeout: float = DEADLINE) -> bytes:
    assert conn.poll(timeout), f"nothing to receive within {timeout} s"
    data: bytes = conn.recv_bytes()
    return data


def transfer(sender: Connection, receiver: Connection, obj: Any) -> Any:
    """Send ``obj`` from a thread (it may not fit in the pipe) and receive it here."""
    bg = Background(sender.send, obj)
    got = recv_within(receiver)
    bg.result()
    return got


@pytest.fixture(params=[True, False], ids=["duplex", "one-way"])
def duplex(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def channel(ctx: BaseContext, duplex: bool) -> Iterator[tuple[Connection, Connection, Any, Any]]:
    """(parent's inbox, parent's outbox, child's inbox, child's outbox).

    With ``duplex`` one socketpair serves both ways; otherwise two one-way pipes.
    The test passes the child's ends to its child and closes them once it started.
    """
    if duplex:
        mine, theirs = Pipe()
        conns = [mine, theirs]
        yield mine, mine, theirs, theirs
    else:
        to_child_r, to_child_w = Pipe(duplex=False)
        to_parent_r, to_parent_w = Pipe(duplex=False)
        conns = [to_child_r, to_child_w, to_parent_r, to_parent_w]
        yield to_parent_r, to_child_w, to_child_r, to_parent_w
    for c in conns:
        c.close()


def close_child_ends(child_in: Connection, child_out: Connection) -> None:
    child_in.close()
    child_out.close()


# --- what can travel -------------------------------------------------------------------------


def _lambda_triples() -> Callable[[int], int]:
    return lambda x: x * 3


OBJECTS: list[tuple[str, Any]] = [
    ("none", None),
    ("true", True),
    ("zero", 0),
    ("negative", -1),
    ("int64-max", 2**63 - 1),
    ("big-int", 2**200 + 12345),
    ("huge-negative-int", -(10**500)),
    ("float", 1.5),
    ("inf", float("inf")),
    ("nan", float("nan")),
    ("negative-zero", -0.0),
    ("subnormal", 5e-324),
    ("complex", complex(1, -2)),
    ("empty-str", ""),
    ("non-ascii-str", "héllo wörld ✓ 日本語 🐍 \u0301"),
    ("nul-and-surrogate", "a\x00b\udcff"),
    ("large-str", "ß" * 300_000),
    ("empty-bytes", b""),
    ("bytes", bytes(range(256)) * 4),
    ("bytearray", bytearray(b"mutable \x00\xff")),
    ("empty-tuple", ()),
    ("nested-tuple", (1, (2.0, ("three", (b"four", None))))),
    ("nested-list", [1, [2, [3, [4, []]]]]),
    ("nested-dict", {"a": {"b": [1, 2, {"c": (3,)}]}, 7: None, (1, 2): "tuple key"}),
    ("set", {1, 2, 3}),
    ("frozenset-in-dict", {frozenset({"x", "y"}): {1.5, 2.5}}),
    ("range", range(0, 100, 7)),
    ("large-dict", {f"key{i}": [i, str(i)] for i in range(20_000)}),
    ("dataclass", Point(3, 2.5, "ünïcode", ("a", "b"))),
    ("list-of-dataclasses", [Point(i, i / 2) for i in range(5)]),
    ("value-error", ValueError("boom", 42)),
    ("own-exception", TravellingError(7, "détail")),
    ("os-error", OSError(errno.ENOENT, "missing", "/nowhere")),
    ("lambda", _lambda_triples()),
    ("closure", targets.make_adder(5)),
    ("float64-2d", np.arange(12, dtype=np.float64).reshape(3, 4)),
    ("int8", np.arange(-5, 5, dtype=np.int8)),
    ("complex128", np.array([1 + 2j, 3 - 4j], dtype=np.complex128)),
    ("bool", np.array([True, False, True])),
    ("big-endian-u2", np.arange(10, dtype=">u2")),
    ("structured", np.array([(1, 2.5), (3, 4.5)], dtype=[("a", "<i4"), ("b", "<f8")])),
    ("datetime64", np.array(["2024-01-01", "2025-06-30"], dtype="datetime64[D]")),
    ("unicode-array", np.array(["héllo", "wörld"])),
    ("object-array", np.array([1, "a", None], dtype=object)),
    ("fortran-order", np.asfortranarray(np.arange(6.0).reshape(2, 3))),
    ("strided", np.arange(20)[::3]),
    ("column", np.arange(12).reshape(3, 4)[:, 1]),
    ("transposed-strided", np.arange(12.0).reshape(3, 4).T[::2]),
    ("zero-d", np.array(3.5)),
    ("numpy-scalar", np.float32(2.5)),
    ("empty-2d", np.zeros((0, 5))),
    ("large-array", np.arange(2_000_000, dtype=np.float64)),  # 16 MB: out of band
    ("arrays-in-a-dict", {"a": np.ones(3), "b": [np.zeros((2, 2), dtype=np.int16)]}),
]
OBJECT_IDS = [name for name, _ in OBJECTS]


def check_same(name: str, expected: Any, got: Any) -> None:
    """``got`` is an equivalent copy of ``expected`` (type, value, dtype and shape)."""
    where = f"case {name!r}"
    if name == "lambda":
        assert got(7) == 21, where
    elif name == "closure":
        assert got(1) == 6, where
    elif isinstance(expected, np.ndarray):
        assert isinstance(got, np.ndarray), where
        assert (got.dtype, got.shape) == (expected.dtype, expected.shape), where
        assert np.array_equal(got, expected), where
        if got.size:
            assert got.flags.writeable, f"{where}: a received array is writable, as in the stdlib"
    elif isinstance(expected, BaseException):
        assert type(got) is type(expected), where
        assert got.args == expected.args, where
        if isinstance(expected, OSError):
            assert (got.errno, got.filename) == (expected.errno, expected.filename), where
        if isinstance(expected, TravellingError):
            assert (got.code, got.detail) == (expected.code, expected.detail), where
    elif isinstance(expected, float) and math.isnan(expected):
        assert isinstance(got, float) and math.isnan(got), where
    elif isinstance(expected, float):
        assert type(got) is float and got == expected, where
        assert math.copysign(1, got) == math.copysign(1, expected), f"{where}: sign lost"
    elif name == "arrays-in-a-dict":
        assert got.keys() == expected.keys(), where
        np.testing.assert_array_equal(got["a"], expected["a"])
        np.testing.assert_array_equal(got["b"][0], expected["b"][0])
        assert got["b"][0].dtype == np.int16, where
    else:
        assert type(got) is type(expected), where
        assert got == expected, where


@pytest.mark.parametrize("name", OBJECT_IDS)
def test_round_trip_between_threads(name: str, duplex: bool) -> None:
    obj = dict(OBJECTS)[name]
    receiver, sender = ends(duplex)
    with receiver, sender:
        check_same(name, obj, transfer(sender, receiver, obj))
        if duplex:  # and the other way round
            check_same(name, obj, transfer(receiver, sender, obj))
        assert not receiver.poll(0)


def test_round_trip_through_a_child(
    ctx: BaseContext, channel: tuple[Connection, Connection, Any, Any]
) -> None:
    inbox, outbox, child_in, child_out = channel
    p = start(ctx, targets.echo, child_in, child_out)
    close_child_ends(child_in, child_out)
    for name, obj in OBJECTS:
        bg = Background(outbox.send, obj)
        check_same(name, obj, recv_within(inbox))
        bg.result()
    outbox.send(STOP)
    assert recv_within(inbox) == STOP
    finish(p)


def test_bytes_messages_through_a_child(
    ctx: BaseContext, channel: tuple[Connection, Connection, Any, Any]
) -> None:
    inbox, outbox, child_in, child_out = channel
    p = start(ctx, targets.echo_bytes, child_in, child_out)
    close_child_ends(child_in, child_out)
    for size in [0, 1, 8, 65535, 65536, 65537, 3 << 20]:
        data = targets.big_payload(size, seed=size)
        bg = Background(outbox.send_bytes, data)
        got = recv_bytes_within(inbox)
        bg.result()
        assert type(got) is bytes
        assert (len(got), sha256(got)) == (size, sha256(data)), f"{size}-byte message"
    outbox.send_bytes(STOP.encode())
    assert recv_bytes_within(inbox) == STOP.encode()
    finish(p)


BIG = 300 << 20


@pytest.mark.timeout(300)
def test_300_mb_message_to_a_child_and_back(
    ctx: BaseContext, channel: tuple[Connection, Connection, Any, Any]
) -> None:
    inbox, outbox, child_in, child_out = channel
    p = start(ctx, targets.hash_and_echo_bytes, child_in, child_out)
    close_child_ends(child_in, child_out)
    data = targets.big_payload(BIG, seed=3)
    expected = (BIG, sha256(data))
    outbox.send_bytes(data)  # the child reads while we write
    del data
    assert recv_within(inbox) == expected  # what the child got
    echoed = recv_bytes_within(inbox)
    assert type(echoed) is bytes
    got = (len(echoed), sha256(echoed))
    del echoed
    assert got == expected
    finish(p)


# --- send_bytes / recv_bytes / recv_bytes_into ---------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 1 << 20, 5 << 20])
def test_recv_bytes_sizes_and_type(duplex: bool, size: int) -> None:
    receiver, sender = ends(duplex)
    data = targets.big_payload(size, seed=size)
    with receiver, sender:
        bg = Background(sender.send_bytes, data)
        got = recv_bytes_within(receiver)
        bg.result()
        assert type(got) is bytes
        assert (len(got), sha256(got)) == (size, sha256(data))


@pytest.mark.parametrize(
    ("buf", "offset", "size", "expected"),
    [
        (b"0123456789", 0, None, b"0123456789"),
        (b"0123456789", 2, None, b"23456789"),
        (b"0123456789", 2, 3, b"234"),
        (b"0123456789", 10, None, b""),
        (b"0123456789", 0, 0, b""),
        (b"0123456789", 4, 6, b"456789"),
        (bytearray(b"abcdef"), 1, 2, b"bc"),
        (memoryview(b"abcdef")[1:], 1, None, b"cdef"),
        # offsets and sizes count bytes, whatever the item size
        (array.array("i", [1, 2, 3, 4]), 4, 8, array.array("i", [2, 3]).tobytes()),
        (np.arange(6, dtype=np.uint16).reshape(2, 3), 2, 4, np.arange(1, 3, dtype=np.uint16)),
        (np.arange(10, dtype=np.uint8)[::2], 0, None, bytes([0, 2, 4, 6, 8])),
    ],
    ids=[
        "whole",
        "offset",
        "offset-size",
        "offset-at-end",
        "zero-size",
        "up-to-the-end",
        "bytearray",
        "memoryview",
        "array-i",
        "2d-array",
        "non-contiguous",
    ],
)
def test_send_bytes_slices(buf: Any, offset: int, size: int | None, expected: Any) -> None:
    receiver, sender = Pipe()
    with receiver, sender:
        sender.send_bytes(buf, offset, size)
        assert recv_bytes_within(receiver) == bytes(expected)
        assert not receiver.poll(0)


@pytest.mark.parametrize(
    ("offset", "size", "numbers"),
    [
        (-1, None, ["-1"]),
        (11, None, ["10", "11"]),
        (0, -1, ["-1"]),
        (4, 7, ["10", "11"]),
        (10, 1, ["10", "11"]),
    ],
    ids=["negative-offset", "offset-past-end", "negative-size", "size-past-end", "one-past"],
)
def test_send_bytes_bad_offset_or_size(
    duplex: bool, offset: int, size: int | None, numbers: list[str]
) -> None:
    receiver, sender = ends(duplex)
    with receiver, sender:
        with pytest.raises(ValueError) as info:
            sender.send_bytes(b"0123456789", offset, size)
        for number in numbers:
            assert number in str(info.value)
        assert not receiver.poll(0), "nothing may have been sent"
        sender.send_bytes(b"still usable")
        assert recv_bytes_within(receiver) == b"still usable"


def test_recv_bytes_maxlength(duplex: bool) -> None:
    receiver, sender = ends(duplex)
    with receiver, sender:
        sender.send_bytes(b"x" * 10)
        assert len(recv_bytes_within(receiver)) == 10
        sender.send_bytes(b"x" * 10)
        assert receiver.recv_bytes(maxlength=10) == b"x" * 10
        sender.send_bytes(b"")
        assert receiver.recv_bytes(maxlength=0) == b""
        sender.send_bytes(b"y" * 10)
        with pytest.raises(OSError, match=r"10 bytes > maxlength 9"):
            receiver.recv_bytes(maxlength=9)
        assert receiver.closed, "a message over maxlength closes the connection"
        with pytest.raises(OSError):
            receiver.recv_bytes()


def test_recv_bytes_negative_maxlength(duplex: bool) -> None:
    receiver, sender = ends(duplex)
    with receiver, sender:
        sender.send_bytes(b"abc")
        with pytest.raises(ValueError, match="-1"):
            receiver.recv_bytes(-1)
        assert receiver.recv_bytes() == b"abc", "the message is still there"


@pytest.mark.parametrize("offset", [0, 1, 7, 12])
def test_recv_bytes_into_offsets(duplex: bool, offset: int) -> None:
    receiver, sender = ends(duplex)
    with receiver, sender:
        sender.send_bytes(b"message!")
        buf = bytearray(b"." * 20)
        assert receiver.recv_bytes_into(buf, offset) == 8
        assert buf == b"." * offset + b"message!" + b"." * (12 - offset)


def test_recv_bytes_into_array_counts_bytes(duplex: bool) -> None:
    receiver, sender = ends(duplex)
    with receiver, sender:
        sender.send_bytes(array.array("i", [1, 2, 3]))
        arr = array.array("i", [0] * 6)
        assert receiver.recv_bytes_into(arr, 2 * arr.itemsize) == 3 * arr.itemsize
        assert arr.tolist() == [0, 0, 1, 2, 3, 0]
        sender.send_bytes(np.array([1.5, -2.5]))
        floats = np.zeros(4)
        assert receiver.recv_bytes_into(floats, 8) == 16
        assert floats.tolist() == [0.0, 1.5, -2.5, 0.0]


def test_recv_bytes_into_large_message(duplex: bool) -> None:
    receiver, sender = ends(duplex)
    data = targets.big_payload(3 << 20, seed=1)
    with receiver, sender:
        bg = Background(sender.send_bytes, data)
        buf = bytearray(len(data) + 10)
        assert receiver.poll(DEADLINE)
        assert receiver.recv_bytes_into(buf, 10) == len(data)
        bg.result()
        assert sha256(buf[10:]) == sha256(data) and buf[:10] == bytes(10)


@pytest.mark.parametrize(("size", "offset"), [(7, 0), (10, 3), (0, 0)], ids=str)
def test_recv_bytes_into_too_small(duplex: bool, size: int, offset: int) -> None:
    receiver, sender = ends(duplex)
    with receiver, sender:
        sender.send_bytes(b"a message too long")
        sender.send_bytes(b"next")
        buf = bytearray(size)
        with pytest.raises(BufferTooShort) as info:
            receiver.recv_bytes_into(buf, offset)
        assert info.value.args[0] == b"a message too long"
        assert buf == bytearray(size), "nothing written into the buffer"
        assert receiver.recv_bytes() == b"next", "the stream is still in step"


def test_recv_bytes_into_too_small_for_a_pickle(duplex: bool) -> None:
    receiver, sender = ends(duplex)
    arr = np.arange(100, dtype=np.int32)
    with receiver, sender:
        sender.send(arr)  # out-of-band frame
        sender.send({"plain": "pickle"})  # in-band frame
        with pytest.raises(BufferTooShort) as info:
            receiver.recv_bytes_into(bytearray(16))
        np.testing.assert_array_equal(pickle.loads(info.value.args[0]), arr)
        with pytest.raises(BufferTooShort) as info:
            receiver.recv_bytes_into(bytearray(16))
        assert pickle.loads(info.value.args[0]) == {"plain": "pickle"}


def test_recv_bytes_into_bad_offset(duplex: bool) -> None:
    receiver, sender = ends(duplex)
    with receiver, sender:
        sender.send_bytes(b"abc")
        with pytest.raises(ValueError, match=r"-1.*10"):
            receiver.recv_bytes_into(bytearray(10), -1)
        with pytest.raises(ValueError, match=r"11.*10"):
            receiver.recv_bytes_into(bytearray(10), 11)
        assert receiver.recv_bytes() == b"abc", "a bad offset consumes nothing"


def test_recv_bytes_into_empty_message() -> None:
    receiver, sender = Pipe()
    with receiver, sender:
        sender.send_bytes(b"")
        assert receiver.recv_bytes_into(bytearray(0)) == 0
        sender.send_bytes(b"")
        assert receiver.recv_bytes_into(bytearray(3), 3) == 0


@pytest.mark.parametrize(
    "buf",
    [b"read-only buffer of 26 b.", np.zeros(60, dtype=np.uint8)[::2]],
    ids=["read-only", "non-contiguous"],
)
def test_recv_bytes_into_unusable_buffer_keeps_the_stream_in_step(duplex: bool, buf: Any) -> None:
    receiver, sender = ends(duplex)
    with receiver, sender:
        sender.send_bytes(b"first message")
        sender.send_bytes(b"second message")
        with pytest.raises((TypeError, ValueError, BufferError)):
            receiver.recv_bytes_into(buf)
        # The first message may be kept or dropped, but the stream must not be torn.
        assert receiver.recv_bytes() in (b"first message", b"second message")


def test_recv_bytes_of_a_pickled_message(duplex: bool) -> None:
    receiver, sender = ends(duplex)
    with receiver, sender:
        sender.send({"k": [1, 2]})
        assert pickle.loads(receiver.recv_bytes()) == {"k": [1, 2]}
        sender.send_bytes(pickle.dumps(("built", "by hand")))
        assert receiver.recv() == ("built", "by hand")


@pytest.mark.parametrize("method", ["recv_bytes", "recv_bytes_into"])
def test_recv_bytes_never_unpickles(duplex: bool, tmp_path: Path, method: str) -> None:
    marker = tmp_path / "unpickled"
    receiver, sender = ends(duplex)
    with receiver, sender:
        # A PickleBuffer makes send() use an out-of-band frame.
        sender.send((pickle.PickleBuffer(b"12345678"), Marker(str(marker))))
        try:
            if method == "recv_bytes":
                receiver.recv_bytes()
            else:
                receiver.recv_bytes_into(bytearray(1000))
        except Exception:
            pass
        assert not marker.exists(), f"{method} unpickled the message"


def test_unpicklable_object_sends_nothing(duplex: bool) -> None:
    receiver, sender = ends(duplex)
    with receiver, sender:
        with pytest.raises((TypeError, pickle.PicklingError)):
            sender.send(threading.Lock())
        assert not receiver.poll(0)
        sender.send("after")
        assert recv_within(receiver) == "after"


def test_object_failing_to_unpickle_keeps_the_stream_in_step(duplex: bool) -> None:
    receiver, sender = ends(duplex)
    with receiver, sender:
        sender.send(_targets.FailsToUnpickle())
        sender.send((np.arange(3), _targets.FailsToUnpickle()))  # out of band
        sender.send("after")
        for _ in range(2):
            with pytest.raises(ValueError, match="unpickling failed on purpose"):
                recv_within(receiver)
        assert recv_within(receiver) == "after"


# --- poll ------------------------------------------------------------------------------------


def test_poll_with_and_without_data(duplex: bool) -> None:
    receiver, sender = ends(duplex)
    with receiver, sender:
        assert receiver.poll() is False
        assert receiver.poll(0) is False
        assert receiver.poll(-1) is False
        sender.send("x")
        assert receiver.poll() is True
        assert receiver.poll(None) is True  # data waiting: does not block
        assert receiver.poll(5) is True, "poll does not consume the message"
        assert receiver.recv() == "x"
        assert receiver.poll(0) is False


def test_poll_timeout_is_honoured(duplex: bool) -> None:
    receiver, sender = ends(duplex)
    with receiver, sender:
        t0 = time.monotonic()
        assert receiver.poll(0.3) is False
        elapsed = time.monotonic() - t0
        assert 0.25 <= elapsed < 10, elapsed


def test_poll_wakes_up_when_a_child_sends(
    ctx: BaseContext, channel: tuple[Connection, Connection, Any, Any]
) -> None:
    inbox, _outbox, child_in, child_out = channel
    p = start(ctx, targets.send_then_exit, child_out, "late")
    close_child_ends(child_in, child_out)
    t0 = time.monotonic()
    assert inbox.poll(DEADLINE)
    assert time.monotonic() - t0 < DEADLINE
    assert inbox.recv() == "late"
    finish(p)


def test_poll_sees_eof(duplex: bool) -> None:
    receiver, sender = ends(duplex)
    with receiver:
        sender.close()
        assert receiver.poll(DEADLINE) is True
        with pytest.raises(EOFError):
            receiver.recv()


# --- state: close, closed, readable, writable, fileno ----------------------------------------


def test_flags_and_fileno(duplex: bool) -> None:
    a, b = Pipe(duplex)
    with a, b:
        assert (a.readable, a.writable) == ((True, True) if duplex else (True, False))
        assert (b.readable, b.writable) == ((True, True) if duplex else (False, True))
        assert isinstance(a.fileno(), int) and a.fileno() >= 0
        assert a.fileno() != b.fileno()
        assert not a.closed and not b.closed
        assert os.get_blocking(a.fileno()) and os.get_blocking(b.fileno())
        assert not os.get_inheritable(a.fileno()), "fds are close-on-exec"


def test_close_is_idempotent_and_final(duplex: bool) -> None:
    receiver, sender = ends(duplex)
    sender.close()
    sender.close()
    assert sender.closed
    assert (sender.readable, sender.writable) == ((True, True) if duplex else (False, True))
    assert "closed" in repr(sender)
    with receiver:
        assert receiver.poll(DEADLINE), "the peer sees EOF: the fd really is closed"
        with pytest.raises(EOFError):
            receiver.recv()


def test_context_manager_closes(duplex: bool) -> None:
    a, b = Pipe(duplex)
    with a as entered, b:
        assert entered is a
    assert a.closed and b.closed


CLOSED_CALLS: list[tuple[str, Callable[[Connection], Any]]] = [
    ("send", lambda c: c.send("x")),
    ("send_bytes", lambda c: c.send_bytes(b"x")),
    ("recv", lambda c: c.recv()),
    ("recv_bytes", lambda c: c.recv_bytes()),
    ("recv_bytes_into", lambda c: c.recv_bytes_into(bytearray(10))),
    ("poll", lambda c: c.poll()),
    ("poll-timeout", lambda c: c.poll(1)),
    ("fileno", lambda c: c.fileno()),
]


@pytest.mark.parametrize("call", [c for _, c in CLOSED_CALLS], ids=[n for n, _ in CLOSED_CALLS])
@pytest.mark.parametrize("which", ["duplex", "reader", "writer"])
def test_every_call_on_a_closed_connection_raises(
    call: Callable[[Connection], Any], which: str
) -> None:
    if which == "duplex":
        conn, other = Pipe()
    elif which == "reader":
        conn, other = Pipe(duplex=False)
    else:
        other, conn = Pipe(duplex=False)
    if other.writable:
        other.send_bytes(b"data")  # something to read: the closed state alone must refuse
    conn.close()
    with pytest.raises(OSError):
        call(conn)
    other.close()


READ_CALLS = ["recv", "recv_bytes", "recv_bytes_into", "poll", "poll-timeout"]
WRITE_CALLS = ["send", "send_bytes"]


@pytest.mark.parametrize("name", READ_CALLS + WRITE_CALLS)
def test_one_way_pipe_rejects_the_wrong_direction(name: str) -> None:
    reader, writer = Pipe(duplex=False)
    call = dict(CLOSED_CALLS)[name]
    wrong = writer if name in READ_CALLS else reader
    with reader, writer:
        with pytest.raises(OSError, match="only"):
            call(wrong)
        assert not wrong.closed
        writer.send("fine")  # the right direction still works
        assert recv_within(reader) == "fine"


def test_connection_constructor_checks() -> None:
    with pytest.raises(ValueError, match="-1"):
        Connection(-1)
    with pytest.raises(ValueError, match="handle"):
        Connection("3")  # type: ignore[arg-type]
    r, w = os.pipe()
    try:
        with pytest.raises(ValueError, match="readable"):
            Connection(r, readable=False, writable=False)
    finally:
        os.close(r)
        os.close(w)


def test_garbage_collected_connection_closes_its_fd() -> None:
    a, b = Pipe()
    with b:
        del a
        gc.collect()
        assert b.poll(DEADLINE), "the peer sees EOF once the other end is collected"
        with pytest.raises(EOFError):
            b.recv()


# --- EOF and dying peers ---------------------------------------------------------------------


def test_eof_after_the_peer_closes(duplex: bool) -> None:
    receiver, sender = ends(duplex)
    with receiver:
        sender.send("last words")
        sender.close()
        assert recv_within(receiver) == "last words"
        for call in (
            receiver.recv,
            receiver.recv_bytes,
            lambda: receiver.recv_bytes_into(bytearray(8)),
        ):
            with pytest.raises(EOFError):
                call()


def test_sending_to_a_closed_peer_is_an_oserror(duplex: bool) -> None:
    receiver, sender = ends(duplex)
    with sender:
        receiver.close()
        with pytest.raises(OSError):  # BrokenPipeError / ConnectionResetError
            sender.send_bytes(b"x" * 100_000)


def test_eof_after_the_peer_process_exits(
    ctx: BaseContext, channel: tuple[Connection, Connection, Any, Any]
) -> None:
    inbox, _outbox, child_in, child_out = channel
    p = start(ctx, targets.send_then_exit, child_out, ("bye", "ß"))
    close_child_ends(child_in, child_out)
    assert recv_within(inbox) == ("bye", "ß")
    finish(p)
    assert inbox.poll(DEADLINE), "EOF must be readable once the only writer is gone"
    with pytest.raises(EOFError):
        inbox.recv()


KILL_SIZE = 200 << 20


@pytest.mark.parametrize("how", ["send_bytes", "send"])
def test_peer_killed_mid_send(
    ctx: BaseContext, channel: tuple[Connection, Connection, Any, Any], how: str
) -> None:
    """A reader whose writer dies mid-message gets an error, never a hang.

    The child sends 200 MB that cannot fit in the pipe while nobody reads: once
    its first bytes are readable it is necessarily blocked inside its send.
    """
    inbox, _outbox, child_in, child_out = channel
    p = start(ctx, targets.send_big_message, child_out, how, KILL_SIZE)
    close_child_ends(child_in, child_out)
    assert inbox.poll(DEADLINE), "the child never started sending"
    assert p.is_alive(), "the child cannot have finished: nobody read its message"
    p.kill()
    p.join(DEADLINE)
    assert p.exitcode == -signal.SIGKILL
    reader = Background(inbox.recv_bytes if how == "send_bytes" else inbox.recv)
    exc = reader.exception(DEADLINE)
    assert isinstance(exc, (EOFError, OSError)), f"got {exc!r} instead of EOFError/OSError"
    if not inbox.closed:
        with pytest.raises((EOFError, OSError)):
            inbox.recv_bytes()


# --- socket.setdefaulttimeout ----------------------------------------------------------------


@pytest.fixture
def default_timeout() -> Iterator[float]:
    saved = socket.getdefaulttimeout()
    socket.setdefaulttimeout(0.1)
    try:
        yield 0.1
    finally:
        socket.setdefaulttimeout(saved)


def test_pipe_ignores_the_default_socket_timeout(default_timeout: float, duplex: bool) -> None:
    receiver, sender = ends(duplex)
    with receiver, sender:
        assert os.get_blocking(receiver.fileno()) and os.get_blocking(sender.fileno())
        assert receiver.poll(3 * default_timeout) is False  # no TimeoutError either
        sender.send(("small", 1))
        assert recv_within(receiver) == ("small", 1)
        reader = Background(receiver.recv)  # blocks longer than the default timeout
        assert not reader.done(3 * default_timeout), "recv gave up early"
        sender.send("late")
        assert reader.result() == "late"


DUPLEX_OR_NOT = [
    True,
    False,
]


@pytest.mark.parametrize("duplex", DUPLEX_OR_NOT, ids=["duplex", "one-way"])
def test_large_message_under_a_default_timeout_leaves_the_fd_blocking(
    default_timeout: float, duplex: bool
) -> None:
    receiver, sender = ends(duplex)
    data = targets.big_payload(1 << 20)
    with receiver, sender:
        bg = Background(sender.send_bytes, data)
        assert sha256(recv_bytes_within(receiver)) == sha256(data)
        bg.result()
        assert os.get_blocking(receiver.fileno()), "receiving made the fd non-blocking"
        reader = Background(receiver.recv_bytes)
        assert not reader.done(3 * default_timeout), f"recv_bytes gave up: {reader.exception()!r}"
        sender.send_bytes(b"next")
        assert reader.result() == b"next"


@pytest.mark.parametrize("duplex", DUPLEX_OR_NOT, ids=["duplex", "one-way"])
def test_writer_pausing_mid_message_under_a_default_timeout(
    default_timeout: float, duplex: bool
) -> None:
    receiver, sender = ends(duplex)
    size = 1 << 20
    data = targets.big_payload(size)
    with receiver, sender:
        fd = sender.fileno()
        header = (size).to_bytes(8, "big")  # a raw frame, written by hand in two parts
        os.write(fd, header + data[:1000])
        reader = Background(receiver.recv_bytes)
        # Not synchronisation: the pause must outlast the 0.1 s default timeout.
        # If the reader were slow to start the test would only be weaker.
        assert not reader.done(5 * default_timeout), f"reader gave up: {reader.exception()!r}"
        view = memoryview(data)[1000:]
        while view:
            view = view[os.write(fd, view) :]
        assert sha256(reader.result()) == sha256(data)


# --- wait ------------------------------------------------------------------------------------


@pytest.fixture
def sleeper(ctx: BaseContext, tmp_path: Path) -> Iterator[BaseProcess]:
    ready = tmp_path / "sleeper.json"
    p = start(ctx, _targets.sleep_forever, str(ready))
    assert wait_for_json(ready)["pid"] == p.pid
    yield p
    p.kill()
    p.join(DEADLINE)


def test_wait_returns_exactly_the_ready_objects(ctx: BaseContext, sleeper: BaseProcess) -> None:
    quiet, quiet_peer = Pipe()
    busy, busy_peer = Pipe()
    reader, writer = Pipe(duplex=False)
    idle_reader, idle_writer = Pipe(duplex=False)
    s1, s2 = socket.socketpair()
    q1, q2 = socket.socketpair()
    done = start(ctx, _targets.noop)
    finish(done)
    try:
        busy_peer.send("x")
        writer.send_bytes(b"y")
        s2.sendall(b"z")
        objects = [
            quiet,
            busy,
            idle_reader,
            reader,
            q1,
            s1,
            sleeper.sentinel,
            done.sentinel,
        ]
        ready = wait(objects, timeout=DEADLINE)
        assert ready == [busy, reader, s1, done.sentinel]
        assert wait(objects, timeout=0) == ready
        assert wait(iter(objects)) == ready, "any iterable; no timeout once something is ready"
    finally:
        for c in (quiet, quiet_peer, busy, busy_peer, reader, writer, idle_reader, idle_writer):
            c.close()
        for s in (s1, s2, q1, q2):
            s.close()


def test_wait_times_out_with_an_empty_list(sleeper: BaseProcess) -> None:
    quiet, quiet_peer = Pipe()
    s1, s2 = socket.socketpair()
    try:
        t0 = time.monotonic()
        assert wait([quiet, s1, sleeper.sentinel], timeout=0.3) == []
        elapsed = time.monotonic() - t0
        assert 0.25 <= elapsed < 10, elapsed
        t0 = time.monotonic()
        assert wait([quiet, s1, sleeper.sentinel], timeout=0) == []
        assert wait([], timeout=0.05) == []
        assert time.monotonic() - t0 < 10
    finally:
        quiet.close()
        quiet_peer.close()
        s1.close()
        s2.close()


def test_wait_wakes_up_for_a_sentinel_and_for_eof(sleeper: BaseProcess) -> None:
    quiet, quiet_peer = Pipe()
    closing, closing_peer = Pipe()
    try:
        sleeper.kill()
        assert wait([quiet, sleeper.sentinel], timeout=DEADLINE) == [sleeper.sentinel]
        closing_peer.close()
        assert wait([quiet, closing], timeout=DEADLINE) == [closing]
    finally:
        quiet.close()
        quiet_peer.close()
        closing.close()


def test_wait_wakes_up_for_a_message_from_a_child(
    ctx: BaseContext, channel: tuple[Connection, Connection, Any, Any]
) -> None:
    inbox, _outbox, child_in, child_out = channel
    quiet, quiet_peer = Pipe()
    p = start(ctx, targets.send_then_exit, child_out, "ping")
    close_child_ends(child_in, child_out)
    try:
        assert wait([quiet, inbox], timeout=DEADLINE) == [inbox]
        assert inbox.recv() == "ping"
        finish(p)
    finally:
        quiet.close()
        quiet_peer.close()


# --- connections to and from children --------------------------------------------------------


def test_connections_as_process_arguments(ctx: BaseContext, tmp_path: Path) -> None:
    mine, theirs = Pipe()
    reader, child_writer = Pipe(duplex=False)
    child_reader, writer = Pipe(duplex=False)
    out = tmp_path / "flags.json"
    p = start(ctx, targets.report_connections, str(out), theirs, child_reader, child_writer)
    for c in (theirs, child_reader, child_writer):
        c.close()
    with mine, reader, writer:
        assert wait_for_json(out) == {
            "duplex": [True, True, False],
            "reader": [True, False, False],
            "writer": [False, True, False],
        }
        assert recv_within(mine) == ("duplex", p.pid)
        writer.send({"one": "way"})
        assert recv_within(reader) == ("got", {"one": "way"})
        mine.send([1, 2])
        assert recv_within(mine) == ("echo", [1, 2])
        finish(p)


def test_connection_sent_to_a_running_child(ctx: BaseContext) -> None:
    """The resource sharer path: pickled outside a process start, fetched by the child."""
    ctrl, child_ctrl = Pipe()
    p = start(ctx, targets.use_handed_connections, child_ctrl)
    child_ctrl.close()
    with ctrl:
        # a duplex end
        mine, theirs = Pipe()
        ctrl.send(theirs)
        theirs.close()  # the child has its own copy now (or will fetch a registered dup)
        mine.send("ping")
        assert recv_within(mine) == ("echo", "ping", p.pid)
        assert recv_within(ctrl) == ("done", (True, True))
        mine.close()
        # the read end of a one-way pipe
        reader, writer = Pipe(duplex=False)
        ctrl.send(reader)
        reader.close()
        writer.send(b"one way in")
        assert recv_within(ctrl) == ("read", b"one way in")
        assert recv_within(ctrl) == ("done", (True, False))
        writer.close()
        # the write end of a one-way pipe
        reader, writer = Pipe(duplex=False)
        ctrl.send(writer)
        writer.close()
        assert recv_within(reader) == ("written", p.pid)
        assert recv_within(ctrl) == ("done", (False, True))
        assert reader.poll(DEADLINE)
        with pytest.raises(EOFError):  # the child closed the only write end
            reader.recv()
        reader.close()
        ctrl.send(None)
        finish(p)


def test_connection_sent_by_a_running_child(ctx: BaseContext, duplex: bool) -> None:
    ctrl, child_ctrl = Pipe()
    p = start(ctx, targets.hand_over_pipe, child_ctrl, duplex)
    child_ctrl.close()
    with ctrl:
        conn = recv_within(ctrl)  # fetched from the child's resource sharer
        assert isinstance(conn, Connection)
        with conn:
            if duplex:
                assert (conn.readable, conn.writable) == (True, True)
                conn.send("from parent")
                assert recv_within(conn) == ("reply", "from parent", p.pid)
            else:
                assert (conn.readable, conn.writable) == (True, False)
                assert recv_within(conn) == ("from child", p.pid)
            ctrl.send("bye")
            finish(p)


def test_connection_from_a_child_that_has_exited(ctx: BaseContext) -> None:
    """The sender's resource sharer is gone: an OSError that says so, not a hang."""
    ctrl, child_ctrl = Pipe()
    p = start(ctx, targets.hand_over_pipe_and_exit, child_ctrl)
    child_ctrl.close()
    with ctrl:
        finish(p)
        assert ctrl.poll(DEADLINE)
        with pytest.raises(OSError, match="gone"):
            ctrl.recv()
        assert ctrl.poll(DEADLINE)
        with pytest.raises(EOFError):  # the failed message was consumed whole
            ctrl.recv()


def test_sending_a_closed_connection_sends_nothing() -> None:
    a, b = Pipe()
    closed, _peer = Pipe()
    closed.close()
    with a, b, _peer:
        with pytest.raises(OSError):
            a.send(closed)
        assert not b.poll(0)
        a.send("next")
        assert recv_within(b) == "next"


def test_a_shared_connection_can_be_fetched_once() -> None:
    a, b = Pipe()
    with a, b:
        data = reduction.ForkingPickler.dumps(b)
        fetched = pickle.loads(data)
        with fetched:
            fetched.send("via the fetched copy")
            assert recv_within(a) == "via the fetched copy"
        with pytest.raises(OSError, match="already fetched"):
            pickle.loads(data)


def test_a_stranger_cannot_fetch_a_shared_connection() -> None:
    """Another interpreter (not of our process tree, so another authkey) is refused."""
    a, b = Pipe()
    with a, b:
        data = bytes(reduction.ForkingPickler.dumps(b))
        code = python_code(
            "import pickle\n"
            "try:\n"
            f"    pickle.loads(bytes.fromhex({data.hex()!r}))\n"
            "except Exception as exc:\n"
            "    print(type(exc).__name__)\n"
            "else:\n"
            "    print('fetched')\n"
        )
        result = run_python(["-c", code], timeout=DEADLINE + 30)
        assert result.stdout.strip() == "AuthenticationError", result.stderr
        # The registration is still there for a legitimate receiver.
        with pickle.loads(data) as fetched:
            fetched.send("still shareable")
            assert recv_within(a) == "still shareable"


def test_a_fetched_connection_is_close_on_exec() -> None:
    a, b = Pipe()
    with a, b, pickle.loads(reduction.ForkingPickler.dumps(b)) as fetched:
        assert not os.get_inheritable(fetched.fileno())


def test_a_fetched_connection_does_not_leak_into_spawn_children(tmp_path: Path) -> None:
    reader, writer = Pipe(duplex=False)
    with reader, writer, pickle.loads(reduction.ForkingPickler.dumps(writer)) as fetched:
        inode = os.fstat(fetched.fileno()).st_ino
        ready = tmp_path / "ready.json"
        p = start(phalanx.get_context("spawn"), _targets.sleep_forever, str(ready))
        try:
            wait_for_json(ready)
            fds = os.listdir(f"/proc/{p.pid}/fd")
            links = [os.readlink(f"/proc/{p.pid}/fd/{fd}") for fd in fds]
        finally:
            p.kill()
            p.join(DEADLINE)
        assert f"pipe:[{inode}]" not in links, "the spawn child inherited the fetched pipe"


# --- reduction.send_handle / recv_handle -----------------------------------------------------


def test_send_handle_to_a_child(ctx: BaseContext, tmp_path: Path) -> None:
    mine, theirs = Pipe()
    p = start(ctx, targets.read_through_handle, theirs)
    theirs.close()
    with mine, open(tmp_path / "data", "w+b") as f:
        f.write(b"contents reached through the fd \xff")
        f.flush()
        f.seek(0)
        os.unlink(tmp_path / "data")  # only the fd leads to it now
        reduction.send_handle(mine, f.fileno(), p.pid)
        assert recv_within(mine) == (b"contents reached through the fd \xff", p.pid)
        finish(p)


def test_recv_handle_from_a_child(ctx: BaseContext) -> None:
    mine, theirs = Pipe()
    p = start(ctx, targets.send_own_handle, theirs, b"written by the child")
    theirs.close()
    with mine:
        assert mine.poll(DEADLINE)
        fd = reduction.recv_handle(mine)
        with open(fd, "rb") as f:
            assert f.read() == b"written by the child"
        mine.send("thanks")
        finish(p)


def test_recv_handle_gives_a_close_on_exec_fd() -> None:
    a, b = Pipe()
    r, w = os.pipe()
    try:
        with a, b:
            reduction.send_handle(a, w, os.getpid())
            assert b.poll(DEADLINE)
            received = reduction.recv_handle(b)
            try:
                assert not os.get_inheritable(received)
            finally:
                os.close(received)
    finally:
        os.close(r)
        os.close(w)


def test_handles_between_threads() -> None:
    a, b = Pipe()
    r, w = os.pipe()
    try:
        with a, b:
            reduction.send_handle(a, w, os.getpid())
            assert b.poll(DEADLINE)
            w2 = reduction.recv_handle(b)
            os.write(w2, b"through a duplicate")
            os.close(w2)
            assert os.read(r, 100) == b"through a duplicate"
            a.send("the pipe still carries messages")
            assert recv_within(b) == "the pipe still carries messages"
    finally:
        os.close(r)
        os.close(w)


# --- phalanx.dummy.connection ----------------------------------------------------------------


def test_dummy_pipe_passes_objects_by_reference() -> None:
    a, b = dummy_connection.Pipe()
    obj = {"not": "copied"}
    a.send(obj)
    assert b.poll(0)
    assert b.recv() is obj
    b.send_bytes(b"bytes")
    assert a.recv_bytes() == b"bytes"
    with a, b:
        pass


def test_dummy_poll_timeout() -> None:
    a, b = dummy_connection.Pipe()
    assert not b.poll()
    t0 = time.monotonic()
    assert b.poll(0.2) is False
    assert 0.15 <= time.monotonic() - t0 < 10
    sender = Background(a.send, "from a thread")
    assert b.poll(DEADLINE)
    assert b.recv() == "from a thread"
    sender.result()


def test_dummy_listener_and_client() -> None:
    with dummy_connection.Listener() as listener:
        client = dummy_connection.Client(listener.address)
        server = listener.accept()
        client.send("hello")
        assert server.poll(DEADLINE) and server.recv() == "hello"
        server.send(["reply"])
        assert client.poll(DEADLINE) and client.recv() == ["reply"]
        other = Background(lambda: dummy_connection.Client(listener.address))
        accepted = Background(listener.accept)
        accepted.result().send("second")
        assert other.result().recv() == "second"
    with pytest.raises(OSError):
        listener.accept()


def test_dummy_module_names() -> None:
    assert dummy_connection.families == ["AF_INET"]
    assert phalanx.dummy.Pipe is dummy_connection.Pipe  # type: ignore[attr-defined]
