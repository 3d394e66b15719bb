"""Shared ctypes objects: ``Value``, ``Array``, ``RawValue``, ``RawArray`` (``sharedctypes``).

Sharing with children runs under each start method (the ``ctx`` fixture);
the children report through JSON files and change the objects, and the parent
checks what it sees afterwards.
"""

from __future__ import annotations

import ctypes
import gc
import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import _sync_targets as targets
import phalanx
from _conn_targets import Background
from _sync_targets import Point
from _targets import DEADLINE, wait_for_json
from phalanx import sharedctypes
from phalanx.context import BaseContext
from phalanx.process import BaseProcess
from phalanx.reduction import ForkingPickler


def start(ctx: BaseContext, target: Callable[..., Any], *args: Any) -> BaseProcess:
    p = ctx.Process(target=target, args=args)
    p.start()
    return p


def finish(p: BaseProcess) -> None:
    p.join(DEADLINE)
    if p.exitcode is None:
        p.kill()
        p.join(DEADLINE)
        raise AssertionError(f"{p!r} did not end within {DEADLINE} s")
    assert p.exitcode == 0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# --- values -----------------------------------------------------------------------------------

TYPE_CODES = [
    ("c", b"x"),
    ("u", "\u00e9"),
    ("b", -128),
    ("B", 255),
    ("h", -32768),
    ("H", 65535),
    ("i", -(2**31)),
    ("I", 2**32 - 1),
    ("l", -(2**63)),
    ("L", 2**64 - 1),
    ("q", -(2**63)),
    ("Q", 2**64 - 1),
    ("f", 1.5),
    ("d", -2.25e300),
]


@pytest.mark.parametrize(("code", "value"), TYPE_CODES, ids=[c for c, _ in TYPE_CODES])
@pytest.mark.parametrize("factory", ["Value", "RawValue"])
def test_value_type_codes(factory: str, code: str, value: Any) -> None:
    v = getattr(phalanx, factory)(code, value)
    assert v.value == value
    zero = getattr(phalanx, factory)(code)
    assert zero.value in (0, b"\x00", "\x00")


@pytest.mark.parametrize(
    ("ctype", "value"),
    [(ctypes.c_double, 0.125), (ctypes.c_bool, True), (ctypes.c_int16, -7), (ctypes.c_uint8, 200)],
)
def test_value_with_a_ctypes_type(ctype: Any, value: Any) -> None:
    v = phalanx.Value(ctype, value)
    assert v.value == value
    assert isinstance(v.get_obj(), ctype)
    raw = phalanx.RawValue(ctype, value)
    assert isinstance(raw, ctype) and raw.value == value


def test_value_of_a_structure() -> None:
    v = phalanx.Value(Point, 3, 0.5)
    assert (v.x, v.y) == (3, 0.5)
    v.x = 4
    assert v.get_obj().x == 4
    assert isinstance(v.get_obj(), Point)
    raw = phalanx.RawValue(Point, -1, 2.0)
    assert isinstance(raw, Point) and (raw.x, raw.y) == (-1, 2.0)


def test_value_wrapper_and_lock() -> None:
    v = phalanx.Value("i", 3)
    assert repr(v) == "<Synchronized wrapper for c_int(3)>"
    assert isinstance(v.get_lock(), type(phalanx.RLock()))
    obj = v.get_obj()
    assert isinstance(obj, ctypes.c_int)
    obj.value = 9
    assert v.value == 9
    with v:  # the wrapper is a context manager on its lock
        v.value += 1
    assert v.acquire() is True
    v.release()
    assert v.value == 10


def test_value_lock_false_is_raw() -> None:
    v = phalanx.Value("d", 1.25, lock=False)
    assert isinstance(v, ctypes.c_double)
    assert not hasattr(v, "get_lock")
    a = phalanx.Array("i", [1, 2], lock=False)
    assert isinstance(a, ctypes.Array)
    assert not hasattr(a, "get_lock")


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_value_with_a_given_lock(kind: str) -> None:
    lock = getattr(phalanx, kind)()
    v = phalanx.Value("i", 1, lock=lock)
    a = phalanx.Array("i", 3, lock=lock)
    assert v.get_lock() is lock and a.get_lock() is lock
    v.value = 2
    a[0] = 3
    assert (v.value, a[0]) == (2, 3)
    with lock:
        # Held here: another thread cannot take it through either wrapper.
        assert Background(v.get_lock().acquire, False).result() is False
        assert Background(a.acquire, False).result() is False
    assert Background(lambda: v.acquire(False) and (v.release() or True)).result() is True


def test_value_with_a_lock_of_the_wrong_type() -> None:
    with pytest.raises(AttributeError, match="'acquire'"):
        phalanx.Value("i", 0, lock=3)


# --- arrays -----------------------------------------------------------------------------------


@pytest.mark.parametrize("factory", ["Array", "RawArray"])
def test_array_from_a_size_is_zeroed(factory: str) -> None:
    a = getattr(phalanx, factory)("d", 5)
    assert len(a) == 5
    assert a[:] == [0.0] * 5
    assert getattr(phalanx, factory)("i", 0)[:] == []


@pytest.mark.parametrize("factory", ["Array", "RawArray"])
def test_array_indexing_and_slicing(factory: str) -> None:
    a = getattr(phalanx, factory)("i", range(10))
    assert len(a) == 10
    assert a[:] == list(range(10))
    assert a[2:5] == [2, 3, 4]
    assert a[::3] == [0, 3, 6, 9]
    assert a[-1] == 9 and a[0] == 0
    a[2:5] = [20, 30, 40]
    a[-1] = -9
    assert a[:] == [0, 1, 20, 30, 40, 5, 6, 7, 8, -9]
    assert list(a) == a[:]
    with pytest.raises(IndexError):
        a[10]
    with pytest.raises(IndexError):
        a[10] = 1
    with pytest.raises(ValueError):
        a[0:2] = [1, 2, 3]  # a slice cannot change the length


def test_array_of_floats_and_structures() -> None:
    a = phalanx.Array("d", [0.5, 1.5])
    assert a[:] == [0.5, 1.5]
    points = phalanx.RawArray(Point, 3)
    points[1].x = 7
    points[2] = Point(8, 0.25)
    assert [(p.x, p.y) for p in points] == [(0, 0.0), (7, 0.0), (8, 0.25)]


def test_array_get_obj_and_lock() -> None:
    a = phalanx.Array("h", [1, 2, 3])
    obj = a.get_obj()
    assert isinstance(obj, ctypes.Array) and obj._type_ is ctypes.c_short
    obj[0] = 100
    assert a[0] == 100
    assert re.fullmatch(
        r"<SynchronizedArray wrapper for <.*c_short_Array_3 object at 0x[0-9a-f]+>>", repr(a)
    )
    with a.get_lock():
        a[1] = 5
    assert a[:] == [100, 5, 3]


@pytest.mark.parametrize("factory", ["Array", "RawArray"])
def test_char_array_value_and_raw(factory: str) -> None:
    a = getattr(phalanx, factory)("c", b"hello")
    assert len(a) == 5
    assert a.value == b"hello" and a.raw == b"hello"
    b = getattr(phalanx, factory)("c", 8)
    b.value = b"abc"
    assert b.value == b"abc"
    assert b.raw == b"abc" + bytes(5)
    b.raw = b"12345678"
    assert b.value == b"12345678"
    assert b[2:4] == b"34"
    with pytest.raises(ValueError):
        b.value = b"123456789"  # one byte too many
    assert b.value == b"12345678"


def test_wchar_array() -> None:
    # As in the stdlib, only char ('c') arrays get .value/.raw on the wrapper.
    a = phalanx.Array("u", "h\u00e9llo")
    assert a[:] == "h\u00e9llo"
    assert a[1] == "\u00e9"
    assert a.get_obj().value == "h\u00e9llo"
    assert phalanx.RawArray("u", "ok").value == "ok"


# --- synchronized / copy ----------------------------------------------------------------------


def test_synchronized_wraps_raw_objects() -> None:
    raw = phalanx.RawValue("i", 5)
    s = sharedctypes.synchronized(raw)
    assert isinstance(s, sharedctypes.Synchronized)
    assert s.get_obj() is raw
    s.value = 6
    assert raw.value == 6
    lock = phalanx.Lock()
    s2 = sharedctypes.synchronized(phalanx.RawArray("i", [1, 2]), lock)
    assert isinstance(s2, sharedctypes.SynchronizedArray)
    assert s2.get_lock() is lock and s2[:] == [1, 2]
    s3 = sharedctypes.synchronized(phalanx.RawArray("c", b"ab"))
    assert isinstance(s3, sharedctypes.SynchronizedString)
    assert s3.value == b"ab" and s3.raw == b"ab"
    s4 = sharedctypes.synchronized(phalanx.RawValue(Point, 1, 1.5))
    assert isinstance(s4, sharedctypes.SynchronizedBase)
    assert (s4.x, s4.y) == (1, 1.5)
    s4.y = 2.5
    assert s4.get_obj().y == 2.5


def test_synchronized_refuses_a_synchronized_object() -> None:
    with pytest.raises(TypeError, match="already synchronized"):
        sharedctypes.synchronized(phalanx.Value("i", 1))


def test_copy_is_an_independent_shared_object() -> None:
    a = phalanx.RawArray("i", [1, 2, 3])
    b = sharedctypes.copy(a)
    assert type(b) is type(a) and b[:] == [1, 2, 3]
    b[0] = 10
    assert a[0] == 1
    v = sharedctypes.copy(phalanx.RawValue(Point, 4, 4.5))
    assert (v.x, v.y) == (4, 4.5)
    assert isinstance(sharedctypes.copy(phalanx.RawValue("d", 2.0)), ctypes.c_double)


# --- sharing with children --------------------------------------------------------------------


def test_shared_with_a_child(ctx: BaseContext, tmp_path: Path) -> None:
    value = ctx.Value("i", 21)
    array = ctx.Array("d", [1.0, 2.0, 3.0])
    chars = ctx.Array("c", 16)
    chars.value = b"from parent"
    point = ctx.Value(Point, 1, 2.5)
    raw = ctx.RawArray("i", [5, 6])
    p = start(ctx, targets.fill_shared, str(tmp_path / "out"), value, array, chars, point, raw)
    result = wait_for_json(tmp_path / "out")
    finish(p)
    assert result == {
        "value": 21,
        "array": [1.0, 2.0, 3.0],
        "chars": "from parent",
        "point": [1, 2.5],
        "raw": [5, 6],
        "lock_type": "RLock",
    }
    assert value.value == 42
    assert array[:] == [10.0, 20.0, 30.0]
    assert chars.value == b"from child"
    assert (point.x, point.y) == (-1, 0.25)
    assert raw[:] == [99, 6]


def test_a_given_lock_stays_shared_in_a_child(ctx: BaseContext, tmp_path: Path) -> None:
    lock = ctx.Lock()
    value, array = ctx.Value("i", 0, lock=lock), ctx.Array("i", 2, lock=lock)
    p = start(ctx, targets.same_lock, str(tmp_path / "out"), value, array)
    assert wait_for_json(tmp_path / "out") == {"array_lock_free": False}
    finish(p)


def test_raw_values_shared_by_several_children(ctx: BaseContext) -> None:
    counter, lock = ctx.RawValue("q", 0), ctx.Lock()
    procs = [start(ctx, targets.increment, counter, lock, 1000) for _ in range(3)]
    for p in procs:
        finish(p)
    assert counter.value == 3000


# --- the shared heap --------------------------------------------------------------------------


def test_thousands_of_values_do_not_make_thousands_of_files() -> None:
    gc.collect()
    before = open_fds()
    values = [phalanx.Value("i", i) for i in range(5000)]
    arrays = [phalanx.RawArray("d", 4) for _ in range(1000)]
    grown = open_fds() - before
    assert grown < 20, f"{grown} new fds for 6000 small objects"
    arenas = {v.get_obj()._block.arena.key for v in values}
    assert len(arenas) < 10
    assert [v.value for v in values[:3] + values[-3:]] == [0, 1, 2, 4997, 4998, 4999]
    # Freed blocks are reused: the same again needs no new memory.
    del values, arrays
    gc.collect()
    again = [phalanx.Value("i", i) for i in range(5000)]
    assert open_fds() - before <= grown
    assert again[123].value == 123


def test_a_freed_block_comes_back_zeroed() -> None:
    dirty = [phalanx.RawArray("B", [0xFF] * 64) for _ in range(100)]
    del dirty
    gc.collect()
    fresh = [phalanx.RawArray("B", 64) for _ in range(100)]
    assert all(a[:] == [0] * 64 for a in fresh)


# --- pickling ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: phalanx.Value("i", 1),
        lambda: phalanx.Array("i", 3),
        lambda: phalanx.RawValue("i", 1),
        lambda: phalanx.RawArray("d", 2),
        lambda: phalanx.RawValue(Point),
    ],
    ids=["Value", "Array", "RawValue", "RawArray", "RawValue(Point)"],
)
def test_pickling_outside_process_start_is_refused(make: Callable[[], Any]) -> None:
    with pytest.raises(RuntimeError, match="inheritance"):
        ForkingPickler.dumps(make())


def test_a_plain_ctypes_object_still_pickles() -> None:
    phalanx.RawValue("i", 1)  # registers c_int with phalanx's pickler
    data = ForkingPickler.dumps(ctypes.c_int(7))
    assert pickle.loads(data).value == 7


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: phalanx.Value("z"),
        lambda: phalanx.RawValue("z", 1),
        lambda: phalanx.Array("z", 3),
        lambda: phalanx.RawArray("z", [1]),
    ],
    ids=["Value", "RawValue", "Array", "RawArray"],
)
def test_unknown_type_code(call: Callable[[], Any]) -> None:
    with pytest.raises(TypeError, match="unknown type code 'z'"):
        call()


def test_not_a_ctypes_type() -> None:
    with pytest.raises(TypeError, match="int"):
        phalanx.Value(int)


@pytest.mark.parametrize("factory", ["Array", "RawArray"])
@pytest.mark.parametrize("size", [-1, -1000])
def test_negative_array_size(factory: str, size: int) -> None:
    with pytest.raises(ValueError, match=rf"\(got {size}\)"):
        getattr(phalanx, factory)("i", size)
