"""The wire pickler: protocol 5, out-of-band buffers, reducers, by-value callables."""

from __future__ import annotations

import copyreg
import pickle
import pickletools
import sys
from typing import Any

import pytest

import _targets
from phalanx._wire import pickling
from phalanx.process import AuthenticationString

# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "obj",
    [
        None,
        42,
        "text",
        b"bytes",
        [1, (2, 3), {"k": {4, 5}}],
        bytearray(b"abc"),
        ValueError("err", 1),
    ],
    ids=["None", "int", "str", "bytes", "nested", "bytearray", "exception"],
)
def test_round_trip(obj: Any) -> None:
    data = pickling.dumps(obj)
    assert isinstance(data, bytes)
    back = pickling.loads(data)
    if isinstance(obj, Exception):
        assert type(back) is type(obj) and back.args == obj.args
    else:
        assert back == obj and type(back) is type(obj)


def test_protocol_5() -> None:
    data = pickling.dumps([1])
    first = next(pickletools.genops(data))
    assert first[0].name == "PROTO" and first[1] == 5


class ZeroCopyBytearray(bytearray):
    """A bytearray that gives protocol 5 its buffer out of band (the PEP 574 example)."""

    def __reduce_ex__(self, protocol: Any) -> Any:
        if protocol >= 5:
            return type(self)._rebuild, (pickle.PickleBuffer(self),), None
        return type(self)._rebuild, (bytearray(self),)

    @classmethod
    def _rebuild(cls, obj: Any) -> ZeroCopyBytearray:
        with memoryview(obj) as m:
            return cls(m)


def test_out_of_band_buffers() -> None:
    big = ZeroCopyBytearray(b"\x00\x01\x02\x03" * 250_000)  # 1 MB
    raw = bytearray(b"z" * 100_000)
    buffers: list[pickle.PickleBuffer] = []
    data = pickling.dumps({"big": big, "raw": pickle.PickleBuffer(raw)}, buffers=buffers)
    assert len(buffers) == 2
    assert all(isinstance(b, pickle.PickleBuffer) for b in buffers)
    assert len(data) < 1000  # the payloads were not copied into the stream
    assert bytes(buffers[0].raw()) == big
    back = pickling.loads(data, buffers=buffers)
    assert type(back["big"]) is ZeroCopyBytearray
    assert back["big"] == big
    assert bytes(back["raw"]) == raw


def test_out_of_band_buffers_need_the_buffers() -> None:
    big = ZeroCopyBytearray(b"x" * 100_000)
    buffers: list[pickle.PickleBuffer] = []
    data = pickling.dumps(big, buffers=buffers)
    with pytest.raises(pickle.UnpicklingError):
        pickling.loads(data)


def test_in_band_without_buffers_argument() -> None:
    big = ZeroCopyBytearray(b"x" * 100_000)
    data = pickling.dumps(big)
    assert len(data) > 100_000
    assert pickling.loads(data) == big


# --- the pickler a thread keeps from one dumps() to the next ----------------------------------


def test_a_kept_pickler_keeps_in_band_and_out_of_band_apart_between_calls() -> None:
    big = ZeroCopyBytearray(b"x" * 100_000)
    for _ in range(2):
        buffers: list[pickle.PickleBuffer] = []
        assert len(pickling.dumps(big, buffers=buffers)) < 1000 and len(buffers) == 1
        assert len(pickling.dumps(big)) > 100_000  # no buffers asked for: in band


def test_a_large_in_band_buffer_is_copied_into_the_message() -> None:
    """Written in pieces, one of them perhaps a view of the caller's buffer: the
    message is bytes of its own, which a later change to the buffer does not touch."""
    raw = bytearray(b"q" * 300_000)
    data = pickling.dumps([pickle.PickleBuffer(raw), "tail"])
    assert type(data) is bytes
    raw[0] = ord("z")
    back = pickling.loads(data)
    assert bytes(back[0][:1]) == b"q" and len(back[0]) == 300_000 and back[1] == "tail"


class _Witness:
    pass


def test_a_kept_pickler_does_not_keep_what_it_pickled_alive() -> None:
    import weakref

    witness = _Witness()
    ref = weakref.ref(witness)
    pickling.dumps([witness, witness])  # memoized: the memo must be cleared after
    del witness
    assert ref() is None


class _PicklesInside:
    """A __reduce__ that pickles something itself (the kept pickler is busy)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __reduce__(self) -> Any:
        return pickling.loads, (pickling.dumps(self.inner),)


class _Unpicklable:
    def __reduce__(self) -> Any:
        raise TypeError("not today")


def test_a_kept_pickler_survives_reentry_and_failure() -> None:
    nested = _PicklesInside({"k": [1, 2, _PicklesInside("deep")]})
    back = pickling.loads(pickling.dumps(("outer", nested, "tail")))
    assert back[0] == "outer" and back[2] == "tail"
    assert back[1]["k"][:2] == [1, 2] and back[1]["k"][2] == "deep"
    with pytest.raises(TypeError, match="not today"):
        pickling.dumps(["half", "written", _Unpicklable()])
    # Nothing of the failed message is left in the next one.
    assert pickling.loads(pickling.dumps(("next", 1))) == ("next", 1)
    huge = "y" * (1 << 20)  # written in frames and pieces, joined
    assert pickling.loads(pickling.dumps([huge])) == [huge]
    assert pickling.loads(pickling.dumps(("after", 2))) == ("after", 2)


# --- reducers ----------------------------------------------------------------------------------


class Registered:
    def __init__(self, value: int) -> None:
        self.value = value

    def __reduce__(self) -> Any:
        raise AssertionError("the registered reducer must be used instead")


def rebuild_registered(value: int) -> Registered:
    obj = Registered.__new__(Registered)
    obj.value = value * 10
    return obj


def reduce_registered(obj: Registered) -> Any:
    return rebuild_registered, (obj.value,)


@pytest.fixture
def registered() -> Any:
    pickling.register(Registered, reduce_registered)
    yield
    pickling._registry.pop(Registered, None)


def test_register_reducer(registered: None) -> None:
    back = pickling.loads(pickling.dumps([Registered(4)]))
    assert isinstance(back[0], Registered) and back[0].value == 40


def test_register_reducer_applies_inside_by_value_objects(registered: None) -> None:
    obj = Registered(5)
    back = pickling.loads(pickling.dumps(lambda: obj))
    assert back().value == 50


def test_registry_does_not_leak_into_plain_pickle(registered: None) -> None:
    with pytest.raises(AssertionError, match="registered reducer"):
        pickle.dumps(Registered(1))


class ViaCopyreg:
    """Pickled through a ``copyreg`` reducer, which the wire pickler must honour."""


def test_copyreg_reducer_used() -> None:
    copyreg.pickle(ViaCopyreg, lambda obj: (str, ("via copyreg",)))
    try:
        assert pickling.loads(pickling.dumps(ViaCopyreg())) == "via copyreg"
    finally:
        del copyreg.dispatch_table[ViaCopyreg]


def test_copyreg_reducer_replaced() -> None:
    copyreg.pickle(ViaCopyreg, lambda obj: (str, ("first",)))
    try:
        assert pickling.loads(pickling.dumps(ViaCopyreg())) == "first"
        copyreg.pickle(ViaCopyreg, lambda obj: (str, ("second",)))
        assert pickle.loads(pickle.dumps(ViaCopyreg())) == "second"
        assert pickling.loads(pickling.dumps(ViaCopyreg())) == "second"
    finally:
        del copyreg.dispatch_table[ViaCopyreg]


def test_register_replaces_reducer(registered: None) -> None:
    assert pickling.loads(pickling.dumps(Registered(1))).value == 10
    pickling.register(Registered, lambda obj: (rebuild_registered, (obj.value + 1,)))
    assert pickling.loads(pickling.dumps(Registered(1))).value == 20


# --- by value vs by reference ------------------------------------------------------------------


def _make_closure(offset: int) -> Any:
    def add(x: int) -> int:
        return x + offset

    return add


def _make_local_class() -> Any:
    class Local:
        scale = 3

        def __init__(self, v: int) -> None:
            self.v = v

        def scaled(self) -> int:
            return self.v * self.scale

    return Local


def _load_in_fresh_interpreter(data: bytes, expression: str) -> str:
    """Unpickle ``data`` in a new interpreter (which never imported this module)."""
    code = (
        "import sys, pickle\n"
        "obj = pickle.loads(sys.stdin.buffer.read())\n"
        "assert 'test_pickling' not in sys.modules\n"
        f"print(repr({expression}))\n"
    )
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", code], input=data, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().strip()


def test_lambda_by_value_in_fresh_interpreter() -> None:
    data = pickling.dumps(lambda x: x * 7)
    assert _load_in_fresh_interpreter(data, "obj(6)") == "42"


def test_closure_by_value_in_fresh_interpreter() -> None:
    data = pickling.dumps(_make_closure(100))
    assert _load_in_fresh_interpreter(data, "obj(1)") == "101"


def test_local_class_by_value_in_fresh_interpreter() -> None:
    cls = _make_local_class()
    data = pickling.dumps([cls, cls(5)])
    expression = "(obj[0].__name__, obj[1].scaled(), type(obj[1]) is obj[0])"
    assert _load_in_fresh_interpreter(data, expression) == "('Local', 15, True)"


def test_by_value_round_trip_in_process() -> None:
    f = pickling.loads(pickling.dumps(_make_closure(1)))
    assert f(1) == 2


def test_module_level_function_by_reference() -> None:
    data = pickling.dumps(_targets.report_value)
    ops = [(op.name, arg) for op, arg, _pos in pickletools.genops(data)]
    strings = [arg for _name, arg in ops if isinstance(arg, str)]
    assert "_targets" in strings and "report_value" in strings
    assert not any(name == "REDUCE" for name, _ in ops)  # a global lookup, not code
    assert b"cloudpickle" not in data and b"_load_by_value" not in data
    assert pickling.loads(data) is _targets.report_value


def test_module_level_class_by_reference() -> None:
    data = pickling.dumps(_targets.ForkReporter)
    assert b"_load_by_value" not in data
    assert pickling.loads(data) is _targets.ForkReporter


def test_builtins_by_reference() -> None:
    assert pickling.loads(pickling.dumps(print)) is print
    assert pickling.loads(pickling.dumps(len)) is len
    assert pickling.loads(pickling.dumps(int)) is int


def test_by_value_markers() -> None:
    assert pickling.needs_by_value(lambda: 0)
    assert pickling.needs_by_value(_make_closure(1))
    assert pickling.needs_by_value(_make_local_class())
    assert not pickling.needs_by_value(_targets.noop)
    assert not pickling.needs_by_value(_targets.SpawnReporter)


# --- AuthenticationString ---------------------------------------------------------------------


def test_authentication_string_refuses_pickling() -> None:
    key = AuthenticationString(b"secret")
    with pytest.raises(TypeError, match="security"):
        pickling.dumps(key)
    with pytest.raises(TypeError, match="security"):
        pickle.dumps(key)
    with pytest.raises(TypeError, match="security"):
        pickling.dumps({"nested": [key]})


def test_authentication_string_pickles_while_spawning() -> None:
    key = AuthenticationString(b"secret")
    with pickling.spawning(object()):
        data = pickling.dumps(key)
    assert pickling.get_spawning_popen() is None  # reset afterwards
    back = pickling.loads(data)
    assert back == b"secret" and type(back) is AuthenticationString
    with pytest.raises(TypeError, match="security"):
        pickling.dumps(key)
