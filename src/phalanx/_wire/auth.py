"""Mutual HMAC-SHA256 challenge/response authentication.

Nothing is unpickled before both sides have proven they hold the same key.
The handshake, run once in each direction (server challenges first)::

    step  sender      payload
    ----  ----------  ---------------------------------------------------
    1     verifier    CHALLENGE_TAG + 32 random bytes        (message M)
    2     prover      HMAC-SHA256(authkey, M)                (32 bytes)
    3     verifier    WELCOME  if the digest matches (compare_digest)
                      FAILURE  otherwise, then the verifier raises
    then the roles swap: the prover verifies the verifier the same way.

Replies larger than :data:`MAX_AUTH_MESSAGE` are rejected before they are read
whole, so an unauthenticated peer cannot make us buffer much.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Generator
from typing import Any

from ..errors import AuthenticationError

CHALLENGE_TAG = b"#PHALANX-CHALLENGE-SHA256#"
WELCOME = b"#PHALANX-WELCOME#"
FAILURE = b"#PHALANX-FAILURE#"
NONCE_SIZE = 32
MAX_AUTH_MESSAGE = 256

Send = Callable[[bytes], None]
Recv = Callable[[int], bytes]  # recv(maxsize) -> one message


def _digest(authkey: bytes, message: bytes) -> bytes:
    return hmac.new(authkey, message, hashlib.sha256).digest()


def _check_key(authkey: object) -> bytes:
    if not isinstance(authkey, bytes):
        raise TypeError(f"authkey should be a byte string (got {type(authkey).__name__})")
    return authkey


# A handshake is written once, sans I/O, as a generator of steps: it yields
# (SEND, message) or (RECV, maxsize), and a RECV step is resumed with the
# message received.  ``run`` drives it over blocking I/O; the fork server
# drives it from its event loop so a stalled client cannot block others.
SEND = "send"
RECV = "recv"
Step = tuple[str, Any]
Steps = Generator[Step, "bytes | None", None]


def deliver_steps(authkey: bytes) -> Steps:
    """Verify that the peer knows ``authkey``; raises AuthenticationError if not."""
    key = _check_key(authkey)
    message = CHALLENGE_TAG + secrets.token_bytes(NONCE_SIZE)
    yield SEND, message
    response = yield RECV, MAX_AUTH_MESSAGE
    if response is not None and hmac.compare_digest(response, _digest(key, message)):
        yield SEND, WELCOME
        return
    yield SEND, FAILURE
    raise AuthenticationError("digest received was wrong")


def answer_steps(authkey: bytes) -> Steps:
    """Prove to the peer that we know ``authkey``; raises AuthenticationError if refused."""
    key = _check_key(authkey)
    message = yield RECV, MAX_AUTH_MESSAGE
    if (
        message is None
        or not message.startswith(CHALLENGE_TAG)
        or len(message) != len(CHALLENGE_TAG) + NONCE_SIZE
    ):
        shown = b"" if message is None else message[:40]
        raise AuthenticationError(f"protocol error: expected a challenge, got {shown!r}")
    yield SEND, _digest(key, message)
    reply = yield RECV, MAX_AUTH_MESSAGE
    if reply != WELCOME:
        raise AuthenticationError("digest sent was rejected")


def server_steps(authkey: bytes) -> Steps:
    """Server side of the mutual handshake: challenge first, then answer."""
    yield from deliver_steps(authkey)
    yield from answer_steps(authkey)


def client_steps(authkey: bytes) -> Steps:
    """Client side of the mutual handshake: answer first, then challenge."""
    yield from answer_steps(authkey)
    yield from deliver_steps(authkey)


def run(steps: Steps, send: Send, recv: Recv) -> None:
    """Drive a handshake over blocking ``send(message)`` / ``recv(maxsize)``."""
    reply: bytes | None = None
    while True:
        try:
            op, arg = steps.send(reply)
        except StopIteration:
            return
        if op == SEND:
            send(arg)
            reply = None
        else:
            reply = recv(arg)


def deliver_challenge(send: Send, recv: Recv, authkey: bytes) -> None:
    """Verify that the peer knows ``authkey``; raise AuthenticationError if not."""
    run(deliver_steps(authkey), send, recv)


def answer_challenge(send: Send, recv: Recv, authkey: bytes) -> None:
    """Prove to the peer that we know ``authkey``; raise AuthenticationError if refused."""
    run(answer_steps(authkey), send, recv)


def authenticate_server(send: Send, recv: Recv, authkey: bytes) -> None:
    """Server side of the mutual handshake."""
    run(server_steps(authkey), send, recv)


def authenticate_client(send: Send, recv: Recv, authkey: bytes) -> None:
    """Client side of the mutual handshake."""
    run(client_steps(authkey), send, recv)
