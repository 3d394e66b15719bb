"""The pool's link protocol (``phalanx._pool.protocol``), defined once for both ends."""

from __future__ import annotations

import typing

from phalanx._channel import encode
from phalanx._pool import protocol


def test_the_wire_tuple_is_the_task_namedtuple_field_for_field() -> None:
    hints = typing.get_type_hints(protocol.Task)
    assert tuple(hints) == protocol.Task._fields
    assert typing.get_args(protocol.TaskTuple) == tuple(hints.values())


def test_the_tags_and_progress_words_are_distinct() -> None:
    tags = [protocol.OK, protocol.FAILED, protocol.INIT_FAILED, protocol.UNREADABLE]
    tags += [protocol.READY, protocol.RESEND, protocol.MANY]
    assert sorted(tags) == list(range(len(tags)))
    words = [protocol.BEGUN, protocol.FINISHED, protocol.DECODING]
    assert sorted(words) == [0, 1, 2]
    assert 8 * len(words) <= protocol.PROGRESS_SIZE


def test_an_answer_reads_inline_or_pickled_and_a_bad_one_fails_its_chunk() -> None:
    assert protocol.decode_answer((protocol.OK, [1, 2], True)) == (protocol.OK, [1, 2], True)
    pickled, fd = encode((protocol.FAILED, ValueError("x"), False))
    assert fd is None
    tag, value, reusable = protocol.decode_answer(pickled)
    assert (tag, type(value), value.args, reusable) == (protocol.FAILED, ValueError, ("x",), False)
    tag, value, reusable = protocol.decode_answer(b"not a pickle")
    assert tag == protocol.FAILED and isinstance(value, Exception) and reusable is False
