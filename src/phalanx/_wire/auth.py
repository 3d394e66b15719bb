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
from collections.abc import Callable

from .._errors import AuthenticationError

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


def deliver_challenge(send: Send, recv: Recv, authkey: bytes) -> None:
    """Verify that the peer knows ``authkey``; raise AuthenticationError if not."""
    key = _check_key(authkey)
    message = CHALLENGE_TAG + secrets.token_bytes(NONCE_SIZE)
    send(message)
    response = recv(MAX_AUTH_MESSAGE)
    if hmac.compare_digest(response, _digest(key, message)):
        send(WELCOME)
        return
    send(FAILURE)
    raise AuthenticationError("digest received was wrong")


def answer_challenge(send: Send, recv: Recv, authkey: bytes) -> None:
    """Prove to the peer that we know ``authkey``; raise AuthenticationError if refused."""
    key = _check_key(authkey)
    message = recv(MAX_AUTH_MESSAGE)
    if not message.startswith(CHALLENGE_TAG) or len(message) != len(CHALLENGE_TAG) + NONCE_SIZE:
        raise AuthenticationError(f"protocol error: expected a challenge, got {message[:40]!r}")
    send(_digest(key, message))
    reply = recv(MAX_AUTH_MESSAGE)
    if reply != WELCOME:
        raise AuthenticationError("digest sent was rejected")


def authenticate_server(send: Send, recv: Recv, authkey: bytes) -> None:
    """Server side of the mutual handshake."""
    deliver_challenge(send, recv, authkey)
    answer_challenge(send, recv, authkey)


def authenticate_client(send: Send, recv: Recv, authkey: bytes) -> None:
    """Client side of the mutual handshake."""
    answer_challenge(send, recv, authkey)
    deliver_challenge(send, recv, authkey)
