"""``Listener`` and ``Client``: connections by address, authenticated (layer 2).

Families: ``'AF_UNIX'`` (a path, or on Linux an abstract name starting with
a NUL) and ``'AF_INET'`` (a ``(host, port)`` tuple).  With an ``authkey``,
both ends run the mutual HMAC-SHA256 handshake of ``_wire.auth`` over the
new connection before it is returned, so nothing is unpickled from a peer
that does not hold the key.
"""

from __future__ import annotations

import os
import secrets
import socket
import struct
import time
from typing import Any

from . import _util as util
from ._connection import Connection
from ._errors import AuthenticationError
from ._wire import auth
from .util import get_temp_dir, is_abstract_socket_namespace

__all__ = (
    "Client",
    "Listener",
    "address_type",
    "answer_challenge",
    "arbitrary_address",
    "default_family",
    "deliver_challenge",
    "families",
)

families = ["AF_INET", "AF_UNIX"]
# A peer gets this long to complete the handshake: one that connects and goes
# silent must not block accept() (and every client queued behind it) forever.
HANDSHAKE_TIMEOUT = 20.0
default_family = "AF_UNIX"
_MAX_AUTH_MESSAGE = auth.MAX_AUTH_MESSAGE


def address_type(address: Any) -> str:
    """The family of an address: ``'AF_INET'`` for a tuple, ``'AF_UNIX'`` for a path."""
    if type(address) is tuple:
        return "AF_INET"
    if type(address) is str and address.startswith("\\\\"):
        return "AF_PIPE"
    if type(address) is str or is_abstract_socket_namespace(address):
        return "AF_UNIX"
    raise ValueError(f"address type of {address!r} unrecognized")


def _validate_family(family: str) -> None:
    if family not in families:
        raise ValueError(f"Family {family} is not recognized (expected one of {families})")


def arbitrary_address(family: str) -> Any:
    """A fresh address of ``family`` for a listener (a port chosen by the OS for AF_INET)."""
    if family == "AF_INET":
        return ("localhost", 0)
    if family == "AF_UNIX":
        return os.path.join(get_temp_dir(), f"listener-{secrets.token_hex(8)}")
    raise ValueError(f"unrecognized family {family!r}")


def _check_authkey(authkey: object) -> bytes | None:
    if authkey is not None and not isinstance(authkey, bytes):
        raise TypeError(f"authkey should be a byte string (got {type(authkey).__name__})")
    return authkey


def deliver_challenge(connection: Any, authkey: bytes) -> None:
    """Check that the peer of ``connection`` knows ``authkey`` (AuthenticationError if not)."""
    if not isinstance(authkey, bytes):
        raise ValueError(f"Authkey must be bytes, not {type(authkey).__name__}")
    auth.deliver_challenge(connection.send_bytes, connection.recv_bytes, authkey)


def answer_challenge(connection: Any, authkey: bytes) -> None:
    """Prove to the peer of ``connection`` that we know ``authkey``."""
    if not isinstance(authkey, bytes):
        raise ValueError(f"Authkey must be bytes, not {type(authkey).__name__}")
    auth.answer_challenge(connection.send_bytes, connection.recv_bytes, authkey)


class Listener:
    """A bound, listening socket that hands out ``Connection`` objects from ``accept()``.

    ``address`` defaults to a fresh one of ``family`` (itself defaulting to the
    address's type, else AF_UNIX).  With ``authkey`` every accepted
    connection must pass the mutual handshake.  An AF_UNIX socket file is
    removed on ``close()``.
    """

    def __init__(
        self,
        address: Any = None,
        family: str | None = None,
        backlog: int = 1,
        authkey: bytes | None = None,
    ) -> None:
        family = family or (address and address_type(address)) or default_family
        _validate_family(family)
        address = address or arbitrary_address(family)
        self._authkey = _check_authkey(authkey)
        self._family = family
        sock = socket.socket(getattr(socket, family))
        try:
            sock.setblocking(True)  # even under socket.setdefaulttimeout()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
        self._socket: socket.socket | None = sock
        self._address = sock.getsockname()
        self._last_accepted: Any = None
        self._unlink: util.Finalize | None = None
        if family == "AF_UNIX" and not is_abstract_socket_namespace(address):
            self._unlink = util.Finalize(self, os.unlink, args=(address,), exitpriority=0)

    def accept(self) -> Connection:
        """Wait for a client (blocks); authenticate it if the listener has an authkey."""
        conn: Connection = self._authenticate(self._accept_raw())
        return conn

    def _accept_raw(self) -> socket.socket:
        """The next client's socket, not yet authenticated (a server may do that elsewhere)."""
        if self._socket is None:
            raise OSError("listener is closed")
        sock, self._last_accepted = self._socket.accept()
        sock.setblocking(True)
        return sock

    def _authenticate(self, sock: socket.socket) -> Any:
        """Run the handshake on an accepted socket (closing it if that fails)."""
        try:
            if self._authkey is not None:
                _handshake(sock, auth.server_steps(self._authkey))
        except BaseException:
            sock.close()
            raise
        return Connection(sock.detach())

    def close(self) -> None:
        """Stop listening and remove the socket file (idempotent)."""
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()
        unlink, self._unlink = self._unlink, None
        if unlink is not None:
            try:
                unlink()
            except FileNotFoundError:
                pass

    @property
    def address(self) -> Any:
        """The bound address (the OS's choice of port for ``('host', 0)``)."""
        return self._address

    @property
    def last_accepted(self) -> Any:
        """The address of the last accepted peer, or None."""
        return self._last_accepted

    def fileno(self) -> int:
        if self._socket is None:
            raise OSError("listener is closed")
        return self._socket.fileno()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._family} address={self._address!r}>"


def Client(address: Any, family: str | None = None, authkey: bytes | None = None) -> Connection:
    """Connect to a ``Listener`` at ``address``; authenticate if ``authkey`` is given."""
    family = family or address_type(address)
    _validate_family(family)
    key = _check_authkey(authkey)
    with socket.socket(getattr(socket, family)) as sock:
        sock.setblocking(True)
        sock.connect(address)
        if key is not None:
            _handshake(sock, auth.client_steps(key))
        return Connection(sock.detach())


def _set_io_timeout(sock: socket.socket, seconds: float) -> None:
    """Kernel-level send/receive timeouts (0: none); reads then fail with EAGAIN."""
    whole = int(seconds)
    timeval = struct.pack("ll", whole, int((seconds - whole) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)


def _handshake(sock: socket.socket, steps: auth.Steps) -> None:
    """Authenticate a new connection within ``HANDSHAKE_TIMEOUT`` seconds in all.

    Kernel timeouts bound every read, so a peer that sends half a frame and
    goes silent cannot hold us either.  ``sock`` is closed on failure.
    """
    conn = Connection(sock.fileno())
    deadline = time.monotonic() + HANDSHAKE_TIMEOUT

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AuthenticationError(
                f"the peer did not complete the handshake within {HANDSHAKE_TIMEOUT} s"
            )
        return left

    def send(data: bytes) -> None:
        _set_io_timeout(sock, remaining())
        conn.send_bytes(data)

    def recv(maxsize: int) -> bytes:
        _set_io_timeout(sock, remaining())
        return conn.recv_bytes(maxsize)

    try:
        auth.run(steps, send, recv)
        _set_io_timeout(sock, 0)
    except BaseException as exc:
        if conn.closed:
            sock.detach()  # the connection already closed the fd (a bad frame)
        else:
            sock.close()
        if isinstance(exc, BlockingIOError):
            raise AuthenticationError(
                f"the peer did not complete the handshake within {HANDSHAKE_TIMEOUT} s"
            ) from None
        raise
    finally:
        conn._handle = None  # the fd belongs to sock (or is closed)
