"""Connections between processes, under the stdlib's ``multiprocessing.connection`` names.

``Pipe()`` gives two connected ``Connection`` objects; ``Listener``/``Client``
connect processes by address (AF_UNIX, including Linux abstract names, or
AF_INET), authenticating both ends when given an ``authkey``; ``wait()``
waits on several connections, sockets and process sentinels at once.

``recv`` unpickles what the peer sent, so only talk to peers you trust:
with an ``authkey`` nothing is unpickled before the HMAC-SHA256 handshake
(``_wire.auth``) has succeeded in both directions.
"""

from __future__ import annotations

from ._connection import Connection, Pipe, wait
from ._listener import (
    Client,
    Listener,
    address_type,
    answer_challenge,
    arbitrary_address,
    default_family,
    deliver_challenge,
    families,
)
from ._wire.auth import CHALLENGE_TAG as CHALLENGE
from ._wire.auth import FAILURE, WELCOME
from .errors import AuthenticationError, BufferTooShort

__all__ = (
    "CHALLENGE",
    "FAILURE",
    "WELCOME",
    "AuthenticationError",
    "BufferTooShort",
    "Client",
    "Connection",
    "Listener",
    "Pipe",
    "address_type",
    "answer_challenge",
    "arbitrary_address",
    "default_family",
    "deliver_challenge",
    "families",
    "wait",
)
