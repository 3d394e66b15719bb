"""The authentication handshake over a non-blocking socket, one event at a time (layer 0).

``auth`` writes the handshake as steps, without I/O; this drives those steps
over a socket of ``Connection`` frames (``messages``) as it becomes readable
or writable, so that one thread can run many handshakes side by side (the
``Listener``) or one with a deadline for the whole of it (the ``Client``).
A peer that sends a byte now and then gains nothing: the deadline is for the
handshake, not for each read.

A handshake reads exactly the frames it expects and nothing past them, so
what the peer sends after it stays in the socket for the ``Connection``.
Every frame is checked before its body is read: only RAW frames of at most
``auth.MAX_AUTH_MESSAGE`` bytes; nothing is ever unpickled.
"""

from __future__ import annotations

import select
import socket
import struct
import time

from ..errors import AuthenticationError
from . import auth, messages

__all__ = ("BANNER_FRAME", "STDLIB_PEER", "Handshake", "run_blocking")

# Before its first frame, a phalanx server sends a banner framed as the stdlib
# frames a message (a 4-byte length): a stdlib client takes it for the
# challenge and fails with an error that shows it, saying what to do.  A
# phalanx client that meets the stdlib's challenge instead says so too.
BANNER_TAG = b"#PHALANX#"
BANNER = (
    BANNER_TAG + b" this is a phalanx Listener, which speaks phalanx's wire protocol: "
    b"connect with phalanx.connection.Client (multiprocessing.connection.Client "
    b"speaks another)"
)
_BANNER_LENGTH = struct.Struct("!i")
BANNER_FRAME = _BANNER_LENGTH.pack(len(BANNER)) + BANNER
STDLIB_PEER = (
    "the server speaks the wire protocol of the stdlib's multiprocessing (it is a "
    "multiprocessing.connection.Listener or a stdlib manager): connect to it with "
    "multiprocessing.connection.Client (or the stdlib's manager), or serve with phalanx"
)
# The stdlib's handshake messages, as a phalanx header would see them (bytes 4-7).
_STDLIB_HANDSHAKE = {b"#CHA", b"#WEL", b"#FAI"}


class Handshake:
    """One side of the handshake (``auth.server_steps``/``client_steps``) on ``sock``.

    ``sock`` is made non-blocking.  The owner waits for ``wants_write()``
    (else readable) and calls ``on_event()``; ``finished`` turns true once the
    handshake succeeded; an error (``AuthenticationError``, ``EOFError``,
    ``OSError``) means it failed.  ``deadline`` is a ``time.monotonic()`` time.
    """

    def __init__(
        self, sock: socket.socket, steps: auth.Steps, timeout: float, *, server: bool
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self._steps = steps
        # A server's first bytes are the banner; a client reads it before any frame.
        self._out = bytearray(BANNER_FRAME if server else b"")  # not yet sent whole
        self._banner = 0 if server else -1  # client: -1, then the banner's length
        self._max = 0  # largest frame body the current step accepts
        self._buf = bytearray()
        self._body: int | None = None  # length of the frame being read, once its header is in
        self._done = False
        self._advance(None)

    @property
    def finished(self) -> bool:
        return self._done and not self._out

    def wants_write(self) -> bool:
        return bool(self._out)

    def expired(self, now: float) -> bool:
        return now >= self.deadline

    def timeout_error(self) -> AuthenticationError:
        return AuthenticationError(
            f"the peer did not complete the handshake within {self.timeout:g} s"
        )

    def on_event(self) -> None:
        """Send what is pending, or read what the current step awaits (never blocks)."""
        if self._out:
            self._flush()
            if not self._out and not self._done:
                self._advance(None)  # the step after a send
            return
        if self._done:
            return
        if self._banner:
            self._read_banner()
            return
        target = messages.HEADER.size if self._body is None else self._body
        try:
            data = self.sock.recv(target - len(self._buf))
        except BlockingIOError:
            return
        if not data:
            raise EOFError("the peer closed the connection during the handshake")
        self._buf += data
        if len(self._buf) < target:
            return
        if self._body is None:
            if bytes(self._buf[4:8]) in _STDLIB_HANDSHAKE:
                raise AuthenticationError(STDLIB_PEER)
            kind, length = messages.unpack_header(bytes(self._buf))
            if kind != messages.KIND_RAW or length > self._max:
                raise AuthenticationError(
                    f"protocol error: a handshake frame of kind {kind} and {length} bytes "
                    f"(expected a plain one of at most {self._max})"
                )
            self._buf.clear()
            self._body = length
            if length:
                return
        message = bytes(self._buf)
        self._buf.clear()
        self._body = None
        self._advance(message)

    def _read_banner(self) -> None:
        """A client's first read: the server's banner (``BANNER_FRAME``), or the stdlib's."""
        target = 4 if self._banner < 0 else self._banner
        try:
            data = self.sock.recv(target - len(self._buf))
        except BlockingIOError:
            return
        if not data:
            raise EOFError("the peer closed the connection during the handshake")
        self._buf += data
        if len(self._buf) < target:
            return
        if self._banner < 0:
            (length,) = _BANNER_LENGTH.unpack(bytes(self._buf))
            self._buf.clear()
            if not 0 < length <= 1024:
                raise AuthenticationError(
                    "protocol error: the server did not start with phalanx's banner "
                    "(is it a phalanx Listener?)"
                )
            self._banner = length
            return
        banner = bytes(self._buf)
        self._buf.clear()
        self._banner = 0
        if banner.startswith(b"#CHALLENGE#"):
            raise AuthenticationError(STDLIB_PEER)
        if not banner.startswith(BANNER_TAG):
            raise AuthenticationError(f"protocol error: unexpected banner {banner[:40]!r}")

    def _flush(self) -> None:
        try:
            sent = self.sock.send(self._out)
        except BlockingIOError:
            return
        del self._out[:sent]

    def _advance(self, reply: bytes | None) -> None:
        while True:
            try:
                op, arg = self._steps.send(reply)
            except StopIteration:
                self._done = True
                return
            reply = None
            if op == auth.RECV:
                self._max = arg
                return
            self._out += messages.pack_header(messages.KIND_RAW, len(arg)) + arg
            self._flush()
            if self._out:
                return  # the rest once the socket has room (a hostile peer that does not read)


def run_blocking(sock: socket.socket, steps: auth.Steps, timeout: float) -> None:
    """Run a handshake on ``sock`` within ``timeout`` seconds in all; ``sock`` is left blocking.

    Raises ``AuthenticationError`` (wrong key, protocol error, or the
    deadline), ``EOFError`` or ``OSError``; the caller closes ``sock`` then.
    """
    handshake = Handshake(sock, steps, timeout, server=False)
    poller = select.poll()
    fd = sock.fileno()
    while not handshake.finished:
        left = handshake.deadline - time.monotonic()
        if left <= 0:
            raise handshake.timeout_error()
        poller.register(fd, select.POLLOUT if handshake.wants_write() else select.POLLIN)
        if poller.poll(max(1, int(left * 1000 + 0.999))):
            handshake.on_event()
    sock.setblocking(True)
