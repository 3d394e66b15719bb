"""``Listener`` and ``Client``: connections by address, authenticated (layer 2).

Families: ``'AF_UNIX'`` (a path, or on Linux an abstract name starting with
a NUL) and ``'AF_INET'`` (a ``(host, port)`` tuple).  With an ``authkey``,
both ends run the mutual HMAC-SHA256 handshake of ``_wire.auth`` over the
new connection before it is returned, so nothing is unpickled from a peer
that does not hold the key.
"""

from __future__ import annotations

import collections
import errno
import os
import secrets
import selectors
import socket
import threading
import time
import weakref
from typing import Any

from . import _platform, _runtime
from ._connection import Connection
from ._wire import auth
from ._wire.handshake import Handshake, run_blocking
from .util import get_temp_dir, is_abstract_socket_namespace

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Self, TypeAlias

    # https://docs.python.org/3/library/multiprocessing.html#address-formats
    # (bytes: a Linux abstract AF_UNIX name, starting with a NUL byte)
    _Address: TypeAlias = str | bytes | tuple[str, int]

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

families: list[str] = ["AF_INET", "AF_UNIX"]
# A peer gets this long to complete the handshake: one that connects and goes
# silent must not block accept() (and every client queued behind it) forever.
HANDSHAKE_TIMEOUT = 20.0
# Clients a keyed listener authenticates at once; a newcomer beyond that
# closes the oldest (a flood of silent clients cannot lock others out).
MAX_PENDING_HANDSHAKES = 128
_KEYED_BACKLOG = 64
_ACCEPT_BATCH = 64  # clients taken off the kernel's queue per turn
_BACKOFF_MIN, _BACKOFF_MAX = 0.01, 1.0  # pause in accepting when out of fds
_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
default_family: str = "AF_UNIX"
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


def deliver_challenge(connection: Connection[Any, Any], authkey: bytes) -> None:
    """Check that the peer of ``connection`` knows ``authkey`` (AuthenticationError if not)."""
    if not isinstance(authkey, bytes):
        raise ValueError(f"Authkey must be bytes, not {type(authkey).__name__}")
    auth.deliver_challenge(connection.send_bytes, connection.recv_bytes, authkey)


def answer_challenge(connection: Connection[Any, Any], authkey: bytes) -> None:
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

    Handshakes run side by side (see ``accept``): a slow or silent client
    delays only itself.  At most ``MAX_PENDING_HANDSHAKES`` clients may be
    unauthenticated at once (a newcomer beyond that closes the oldest), and
    each has ``HANDSHAKE_TIMEOUT`` seconds in all.
    """

    def __init__(
        self,
        address: _Address | None = None,
        family: str | None = None,
        backlog: int = 1,
        authkey: bytes | None = None,
    ) -> None:
        family = family or (address and address_type(address)) or default_family
        _validate_family(family)
        address = address or arbitrary_address(family)
        self._authkey = _check_authkey(authkey)
        self._family = family
        if authkey is not None:
            # Clients are taken off the kernel's queue at once and authenticated
            # side by side: the queue need not be long, only not a bottleneck.
            backlog = max(backlog, _KEYED_BACKLOG)
        sock = socket.socket(getattr(socket, family))
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)  # (accept() waits with poll; even under setdefaulttimeout)
        except BaseException:
            sock.close()
            raise
        self._socket: socket.socket | None = sock
        self._address = sock.getsockname()
        self._last_accepted: Any = None
        self._accepting = threading.Lock()  # one thread drives the handshakes at a time
        self._pending: dict[int, tuple[Handshake, Any]] = {}  # by fd, oldest first
        self._results: collections.deque[tuple[Any, Any]] = collections.deque()
        self._backoff = 0.0
        self._backoff_until = 0.0
        # Everything accept() waits on, in one selector: the listening socket,
        # the handshakes under way, and a pipe that close() writes to and that
        # holds a byte while outcomes are ready.  Its fd is fileno() for a keyed
        # listener: wait([listener]) wakes for all of them.
        self._ready_r, self._ready_w = os.pipe()
        os.set_blocking(self._ready_r, False)
        os.set_blocking(self._ready_w, False)
        # The selector is made on first use (_check_pid): a manager's server
        # sends its address as soon as it listens, and accepts only then.
        self._pid = 0  # of the process that made self._watch (0: none yet)
        weakref.finalize(self, _platform.close_fds, self._ready_r, self._ready_w)
        self._unlink: _runtime.Finalize | None = None
        if family == "AF_UNIX" and not is_abstract_socket_namespace(address):
            self._unlink = _runtime.Finalize(self, os.unlink, args=(address,), exitpriority=0)

    _watch: selectors.DefaultSelector

    def _new_watch(self, sock: socket.socket | None) -> None:
        """A selector of our own (an epoll set is shared with forked children: never theirs)."""
        self._pid = os.getpid()
        self._watch = selectors.DefaultSelector()
        weakref.finalize(self, self._watch.close)
        self._watch.register(self._ready_r, selectors.EVENT_READ, None)
        self._listening = sock is not None
        if sock is not None:
            self._watch.register(sock, selectors.EVENT_READ, _LISTENING)
        for handshake, _addr in self._pending.values():
            self._watch_handshake(handshake, register=True)

    def _check_pid(self) -> None:
        if self._pid != os.getpid():  # first use, or a forked copy: not the parent's
            if self._pid:
                self._watch.close()
            self._new_watch(self._socket)

    def accept(self) -> Connection[Any, Any]:
        """Wait for a client (blocks) and return its connection, authenticated if keyed.

        Raises the error of a client that fails its handshake (a wrong key:
        ``AuthenticationError``; a peer that closes or times out), as the
        stdlib does; call again for the next client.  ``OSError`` if the
        listener is (or gets) closed, or when the process is out of file
        descriptors (``EMFILE``) and no handshake is under way.
        """
        with self._accepting:
            self._check_pid()
            try:
                while not self._results:
                    if self._socket is None:
                        raise OSError("listener is closed")
                    self._turn(self._socket)
                outcome, self._last_accepted = self._results.popleft()
            finally:
                if self._results:  # for wait([listener]): more is ready
                    _poke(self._ready_w)
            if isinstance(outcome, BaseException):
                try:
                    raise outcome
                finally:
                    del outcome  # no reference cycle through the traceback
            return self._wrap(outcome)

    def _wrap(self, conn: Connection[Any, Any]) -> Connection[Any, Any]:
        """What ``accept()`` returns for an accepted connection (subclasses wrap it)."""
        return conn

    def _turn(self, listening: socket.socket) -> None:
        """Wait for an event (a client, a handshake step, a deadline) and act on it."""
        now = time.monotonic()
        deadline = None
        if self._listening != (now >= self._backoff_until):
            self._listening = not self._listening
            if self._listening:
                self._watch.register(listening, selectors.EVENT_READ, _LISTENING)
            else:
                self._watch.unregister(listening)
        if not self._listening:
            deadline = self._backoff_until
        for handshake, _addr in self._pending.values():
            if deadline is None or handshake.deadline < deadline:
                deadline = handshake.deadline
        timeout = None if deadline is None else max(0.0, deadline - now)
        for key, _events in self._watch.select(timeout):
            if key.data is None:
                _drain(self._ready_r)
            elif key.data is _LISTENING:
                self._take_new(listening)
            elif key.data in self._pending:
                self._step(key.data)
        now = time.monotonic()
        for fd, (handshake, _addr) in list(self._pending.items()):
            if handshake.expired(now):
                self._fail(fd, handshake.timeout_error())

    def _take_new(self, listening: socket.socket) -> None:
        """Take the clients waiting in the kernel's queue; start their handshakes.

        Without a key, one: its connection is ready at once.
        """
        for _ in range(1 if self._authkey is None else _ACCEPT_BATCH):
            try:
                sock, addr = listening.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in _RESOURCE_ERRORS:
                    raise
                # Out of fds (or memory): stop taking clients for a while, but
                # go on with the handshakes under way (they free fds).
                self._backoff = min(max(2 * self._backoff, _BACKOFF_MIN), _BACKOFF_MAX)
                self._backoff_until = time.monotonic() + self._backoff
                _runtime.info(
                    "listener: cannot accept (%s); retrying in %.2f s", exc, self._backoff
                )
                if not self._pending and not self._results:
                    raise
                return
            self._backoff = 0.0
            if self._authkey is None:
                sock.setblocking(True)
                self._results.append((Connection(sock.detach()), addr))
                return
            if len(self._pending) >= MAX_PENDING_HANDSHAKES:
                _runtime.info("listener: %d clients authenticating: dropping the oldest", len(self._pending))  # fmt: skip  # noqa: E501
                self._drop(next(iter(self._pending)))
            try:
                handshake = Handshake(
                    sock, auth.server_steps(self._authkey), HANDSHAKE_TIMEOUT, server=True
                )
            except Exception as exc:
                sock.close()
                self._results.append((exc, addr))
                continue
            self._pending[sock.fileno()] = (handshake, addr)
            self._watch_handshake(handshake, register=True)

    def _watch_handshake(self, handshake: Handshake, register: bool = False) -> None:
        events = selectors.EVENT_WRITE if handshake.wants_write() else selectors.EVENT_READ
        fd = handshake.sock.fileno()
        if register:
            self._watch.register(fd, events, fd)
        else:
            self._watch.modify(fd, events, fd)

    def _step(self, fd: int) -> None:
        handshake, addr = self._pending[fd]
        try:
            handshake.on_event()
        except Exception as exc:
            self._fail(fd, exc)
            return
        if handshake.finished:
            self._drop(fd, close=False)
            sock = handshake.sock
            sock.setblocking(True)
            self._results.append((Connection(sock.detach()), addr))
        else:
            self._watch_handshake(handshake)

    def _drop(self, fd: int, close: bool = True) -> Any:
        """Forget a handshake under way (closing its socket); returns its peer's address."""
        handshake, addr = self._pending.pop(fd)
        self._watch.unregister(fd)
        if close:
            handshake.sock.close()
        return addr

    def _fail(self, fd: int, error: BaseException) -> None:
        self._results.append((error, self._drop(fd)))

    def close(self) -> None:
        """Stop listening and remove the socket file (idempotent).

        A thread blocked in ``accept()`` wakes up with ``OSError``.
        """
        sock, self._socket = self._socket, None
        if sock is not None:
            _poke(self._ready_w)
            with self._accepting:  # the accepting thread, if any, has seen it by now
                self._check_pid()
                for fd in list(self._pending):
                    self._drop(fd)
                for outcome, _addr in self._results:
                    if isinstance(outcome, Connection):
                        outcome.close()
                self._results.clear()
                if self._listening:
                    self._watch.unregister(sock)
                    self._listening = False
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
        """An fd that turns readable when ``accept()`` may have something (for ``wait()``).

        Without a key, the listening socket; with one, the selector that also
        watches the handshakes under way.
        """
        if self._socket is None:
            raise OSError("listener is closed")
        if self._authkey is None:
            return self._socket.fileno()
        self._check_pid()
        return self._watch.fileno()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._family} address={self._address!r}>"


_LISTENING = object()  # the listening socket's key data in the selector


def _drain(fd: int) -> None:
    try:
        os.read(fd, 4096)
    except BlockingIOError:
        pass


def _poke(fd: int) -> None:
    try:
        os.write(fd, b"x")
    except OSError:  # full: it is readable anyway
        pass


def Client(
    address: _Address, family: str | None = None, authkey: bytes | None = None
) -> Connection[Any, Any]:
    """Connect to a ``Listener`` at ``address``; authenticate if ``authkey`` is given.

    The handshake has ``HANDSHAKE_TIMEOUT`` seconds in all: a server that
    accepts and then stalls fails it with ``AuthenticationError``.
    """
    family = family or address_type(address)
    _validate_family(family)
    key = _check_authkey(authkey)
    with socket.socket(getattr(socket, family)) as sock:
        sock.setblocking(True)
        sock.connect(address)
        if key is not None:
            run_blocking(sock, auth.client_steps(key), HANDSHAKE_TIMEOUT)
        return Connection(sock.detach())


# Documented (and pickled by reference) under the public module that re-exports them.
for _public in (
    Listener,
    Client,
    address_type,
    arbitrary_address,
    answer_challenge,
    deliver_challenge,
):
    _public.__module__ = "phalanx.connection"
