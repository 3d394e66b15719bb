"""Hostile bytes at the frame reader and the handshake: a clean error, never a hang.

Real socketpairs, no mocks.  Everything the peer sends is written and the
writing end closed before the reader starts, so a reader that wanted more
than was sent sees EOF instead of blocking.
"""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phalanx import AuthenticationError
from phalanx._connection import Connection
from phalanx._wire import auth, messages

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reader_fed_with(data: bytes) -> Connection:
    ours, theirs = socket.socketpair()
    with theirs:
        theirs.sendall(data)
    ours.setblocking(True)
    return Connection(ours.detach())


@FUZZ
@given(st.binary(max_size=512))
def test_recv_bytes_on_garbage_raises_cleanly(data: bytes) -> None:
    conn = reader_fed_with(data)
    try:
        while True:
            conn.recv_bytes()
    except (EOFError, OSError):
        pass
    finally:
        conn.close()


@FUZZ
@given(
    kind=st.integers(0, 3),
    length=st.integers(0, (1 << 62) - 1),
    body=st.binary(max_size=256),
)
def test_any_header_with_a_short_body_raises_cleanly(kind: int, length: int, body: bytes) -> None:
    conn = reader_fed_with(struct.pack("!Q", (kind << 62) | length) + body)
    try:
        result = conn.recv_bytes()
    except (EOFError, OSError, ValueError):
        return
    finally:
        conn.close()
    # Only a well-formed raw frame whose body was all there may succeed.
    assert kind == 0 and len(result) == length <= len(body)


def test_length_claiming_two_to_the_62_is_refused_before_allocating() -> None:
    conn = reader_fed_with(struct.pack("!Q", (1 << 62) - 1) + b"tiny")
    with pytest.raises(OSError, match="more than this machine's memory"):
        conn.recv_bytes()
    assert conn.closed


def test_truncated_frame_is_an_error_not_a_hang() -> None:
    conn = reader_fed_with(messages.pack_header(messages.KIND_RAW, 1000) + b"x" * 10)
    with pytest.raises(OSError, match="end of file during message"):
        conn.recv_bytes()


def test_out_of_band_table_larger_than_the_message_is_refused() -> None:
    body = struct.pack("!I", 1 << 20)
    conn = reader_fed_with(messages.pack_header(messages.KIND_OOB, len(body)) + body)
    with pytest.raises(OSError, match="bad out-of-band message"):
        conn.recv()


def _scripted_peer(replies: list[bytes]) -> tuple[auth.Send, auth.Recv, list[bytes]]:
    sent: list[bytes] = []
    queue = list(replies)

    def recv(maxsize: int) -> bytes:
        if not queue:
            raise EOFError("peer closed")
        reply = queue.pop(0)
        if len(reply) > maxsize:
            raise OSError("bad message length")
        return reply

    return sent.append, recv, sent


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=4))
def test_deliver_challenge_never_accepts_garbage(replies: list[bytes]) -> None:
    send, recv, _ = _scripted_peer(replies)
    with pytest.raises((AuthenticationError, EOFError, OSError)):
        auth.deliver_challenge(send, recv, b"secret")


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=4))
def test_answer_challenge_never_accepts_garbage(replies: list[bytes]) -> None:
    send, recv, _ = _scripted_peer(replies)
    with pytest.raises((AuthenticationError, EOFError, OSError)):
        auth.answer_challenge(send, recv, b"secret")


def test_handshake_between_two_real_ends() -> None:
    a, b = socket.socketpair()
    ca, cb = Connection(a.detach()), Connection(b.detach())
    import threading

    errors: list[BaseException] = []

    def server() -> None:
        try:
            auth.authenticate_server(cb.send_bytes, cb.recv_bytes, b"key")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=server)
    t.start()
    auth.authenticate_client(ca.send_bytes, ca.recv_bytes, b"key")
    t.join(10)
    assert not errors
    ca.close()
    cb.close()
