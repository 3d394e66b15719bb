"""``Listener``/``Client``, the HMAC handshake, and peers that do not play by the rules.

Every family: an AF_UNIX path, a Linux abstract AF_UNIX name, AF_INET on
127.0.0.1.  A side that would block on a peer runs in a ``Background`` thread
awaited with a timeout; the parent waits for a child's connection with
``wait([listener], DEADLINE)`` before ``accept()``.
"""

from __future__ import annotations

import errno
import os
import pickle
import secrets
import shutil
import socket
import stat
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import _conn_targets as targets
from _conn_targets import Background, Marker, sha256
from _targets import DEADLINE, finish, start, wait_for_json
from phalanx import AuthenticationError, _listener, connection, get_context
from phalanx.connection import (
    Client,
    Connection,
    Listener,
    Pipe,
    answer_challenge,
    deliver_challenge,
    wait,
)
from phalanx.context import BaseContext

KEY = b"the right key"
WRONG = b"a wrong key"
KINDS = ["unix-path", "unix-abstract", "inet"]
PROMPTLY = 10.0  # generous bound for "fails at once"


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def short_dir() -> Iterator[str]:
    """A directory with a short path (AF_UNIX paths are limited to 107 bytes)."""
    path = tempfile.mkdtemp(prefix="phx-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def address(kind: str, short_dir: str) -> Any:
    """A fresh address of ``kind`` for a Listener."""
    if kind == "unix-path":
        return os.path.join(short_dir, "listener.sock")
    if kind == "unix-abstract":
        return f"\0phalanx-test-{secrets.token_hex(8)}"
    return ("127.0.0.1", 0)


def connect_pair(listener: Listener, authkey: bytes | None = None) -> tuple[Connection, Connection]:
    """(client end, server end), the handshake run on both sides at once."""
    server = Background(listener.accept)
    client = Client(listener.address, authkey=authkey)
    return client, server.result()


def recv_within(conn: Any, timeout: float = DEADLINE) -> Any:
    assert conn.poll(timeout), f"nothing to receive within {timeout} s"
    return conn.recv()


def accept_within(listener: Listener) -> Connection:
    assert wait([listener], DEADLINE) == [listener], "no client arrived"
    return listener.accept()


def raw_socket_to(listener: Listener) -> socket.socket:
    family = socket.AF_INET if isinstance(listener.address, tuple) else socket.AF_UNIX
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(DEADLINE)
    sock.connect(listener.address)
    return sock


# --- accept, address, last_accepted, close ---------------------------------------------------


def test_accept_and_exchange(address: Any) -> None:
    with Listener(address) as listener:
        assert listener.last_accepted is None
        client = Client(listener.address)  # no key: no handshake, the backlog holds us
        with client, listener.accept() as server:
            client.send(("ping", "ß"))
            assert recv_within(server) == ("ping", "ß")
            server.send_bytes(b"pong")
            assert client.poll(DEADLINE) and client.recv_bytes() == b"pong"
            assert (client.readable, client.writable) == (True, True)


def test_address(kind: str, address: Any) -> None:
    with Listener(address) as listener:
        if kind == "unix-path":
            assert listener.address == address
            assert stat.S_ISSOCK(os.stat(address).st_mode)
        elif kind == "unix-abstract":
            assert listener.address == address.encode()  # as getsockname() gives it
        else:
            host, port = listener.address
            assert host == "127.0.0.1" and port > 0
        assert connection.address_type(listener.address) == (
            "AF_INET" if kind == "inet" else "AF_UNIX"
        )
        family = "AF_INET" if kind == "inet" else "AF_UNIX"
        with Client(listener.address, family=family), listener.accept():
            pass
        with Client(address if kind != "inet" else listener.address), listener.accept():
            pass


def test_last_accepted(kind: str, address: Any) -> None:
    with Listener(address) as listener:
        client = Client(listener.address)
        with client, listener.accept():
            if kind == "inet":
                probe = socket.socket(fileno=os.dup(client.fileno()))
                with probe:
                    assert listener.last_accepted == probe.getsockname()
            else:
                assert listener.last_accepted in ("", b"")  # an unnamed client socket


def test_close_releases_the_address(kind: str, address: Any) -> None:
    listener = Listener(address)
    bound = listener.address
    listener.close()
    listener.close()  # idempotent
    with pytest.raises(OSError):
        listener.accept()
    with pytest.raises(OSError):
        listener.fileno()
    if kind == "unix-path":
        assert not os.path.exists(address), "the socket file is removed on close"
    if kind == "inet":
        with pytest.raises(ConnectionRefusedError):
            Client(bound)
    else:
        with pytest.raises((FileNotFoundError, ConnectionRefusedError)):
            Client(bound)
        with Listener(address):  # the name can be bound again
            pass


def test_context_manager(kind: str, address: Any) -> None:
    with Listener(address) as listener:
        assert listener.fileno() >= 0
    with pytest.raises(OSError):
        listener.accept()
    if kind == "unix-path":
        assert not os.path.exists(address)


def test_default_addresses() -> None:
    with Listener() as listener:
        path = listener.address
        assert connection.address_type(path) == "AF_UNIX"
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
        with Client(path), listener.accept():
            pass
    assert not os.path.exists(path)
    with Listener(family="AF_INET") as listener:
        host, port = listener.address
        assert host == "127.0.0.1" and port > 0
        with Client(listener.address), listener.accept():
            pass
    assert connection.arbitrary_address("AF_INET") == ("localhost", 0)
    assert connection.address_type(connection.arbitrary_address("AF_UNIX")) == "AF_UNIX"


def test_backlog(address: Any) -> None:
    with Listener(address, backlog=5) as listener:
        clients = [Client(listener.address) for _ in range(3)]
        for i, c in enumerate(clients):
            c.send(i)
        received = []
        for _ in clients:
            with accept_within(listener) as server:
                received.append(recv_within(server))
        for c in clients:
            c.close()
        assert sorted(received) == [0, 1, 2]


def test_wait_on_a_listener(address: Any) -> None:
    with Listener(address) as listener:
        assert wait([listener], timeout=0) == []
        with Client(listener.address):
            assert wait([listener], timeout=DEADLINE) == [listener]
            listener.accept().close()
        assert wait([listener], timeout=0) == []


def test_client_to_nowhere(short_dir: str) -> None:
    with pytest.raises(FileNotFoundError):
        Client(os.path.join(short_dir, "nobody.sock"))
    with pytest.raises(FileNotFoundError):
        Client(os.path.join(short_dir, "nobody.sock"), authkey=KEY)
    with Listener(("127.0.0.1", 0)) as listener:
        free = listener.address
    with pytest.raises(ConnectionRefusedError):
        Client(free)


def test_forked_child_closing_an_inherited_listener_keeps_the_socket_file(
    short_dir: str,
) -> None:
    path = os.path.join(short_dir, "inherited.sock")
    with Listener(path, authkey=KEY) as listener:
        p = start(get_context("fork"), targets.close_listener, listener)
        finish(p)
        assert os.path.exists(path), "a child removed its parent's socket file"
        client, server = connect_pair(listener, KEY)
        with client, server:
            client.send("still listening")
            assert recv_within(server) == "still listening"
    assert not os.path.exists(path)


# --- authentication --------------------------------------------------------------------------


def test_right_key(address: Any) -> None:
    with Listener(address, authkey=KEY) as listener:
        client, server = connect_pair(listener, KEY)
        with client, server:
            client.send({"authenticated": True})
            assert recv_within(server) == {"authenticated": True}
            server.send("both ways")
            assert recv_within(client) == "both ways"


@pytest.mark.parametrize("with_key", [True, False], ids=["authkey", "no-authkey"])
def test_client_in_a_child(ctx: BaseContext, address: Any, with_key: bool) -> None:
    key = KEY if with_key else None
    with Listener(address, authkey=key) as listener:
        p = start(ctx, targets.client_exchange, listener.address, key)
        with accept_within(listener) as server:
            assert recv_within(server) == ("hello", p.pid)
            server.send([1, "two"])
            assert recv_within(server) == ("echo", [1, "two"])
            finish(p)


def test_wrong_key_fails_on_both_sides(address: Any) -> None:
    with Listener(address, authkey=KEY) as listener:
        server = Background(listener.accept)
        with pytest.raises(AuthenticationError):
            Client(listener.address, authkey=WRONG)
        assert isinstance(server.exception(), AuthenticationError)
        # The listener is still good for a client that holds the key.
        client, conn = connect_pair(listener, KEY)
        with client, conn:
            client.send("after the failure")
            assert recv_within(conn) == "after the failure"


def test_wrong_key_in_a_child(ctx: BaseContext, address: Any, tmp_path: Path) -> None:
    out = tmp_path / "client.json"
    with Listener(address, authkey=KEY) as listener:
        p = start(ctx, targets.client_expecting_failure, str(out), listener.address, WRONG)
        with pytest.raises(AuthenticationError):
            accept_within(listener)
        assert wait_for_json(out)["error"] == "AuthenticationError"
        finish(p)


FRAMES = [
    "in-band",
    "out-of-band",
]


def marker_payload(frame: str, marker: Path) -> Any:
    """An object whose unpickling creates ``marker``, sent in an in-band or OOB frame."""
    if frame == "in-band":
        payload: Any = Marker(str(marker))
    else:  # a PickleBuffer makes send() use an out-of-band frame
        payload = (pickle.PickleBuffer(bytearray(b"12345678")), Marker(str(marker)))
    # Small enough to pass the handshake's 256-byte limit: the test is meaningful.
    assert len(pickle.dumps(payload, protocol=5)) < 200
    return payload


@pytest.mark.parametrize("frame", FRAMES)
def test_keyed_listener_never_unpickles_what_a_keyless_client_sends(
    address: Any, tmp_path: Path, frame: str
) -> None:
    marker = tmp_path / "unpickled"
    with Listener(address, authkey=KEY) as listener:
        server = Background(listener.accept)
        with Client(listener.address) as attacker:  # no key: no handshake on this side
            attacker.send(marker_payload(frame, marker))
            exc = server.exception(PROMPTLY)
    assert not marker.exists(), "the listener unpickled data from an unauthenticated peer"
    assert isinstance(exc, AuthenticationError), repr(exc)


@pytest.mark.parametrize("frame", FRAMES)
def test_keyed_client_never_unpickles_what_a_keyless_server_sends(
    address: Any, tmp_path: Path, frame: str
) -> None:
    marker = tmp_path / "unpickled"
    payload = marker_payload(frame, marker)
    with Listener(address) as listener:  # a server that skips the handshake

        def serve() -> None:
            with listener.accept() as conn:
                conn.send(payload)
                conn.poll(PROMPTLY)  # until the client hangs up

        server = Background(serve)
        exc = Background(Client, listener.address, None, KEY).exception(PROMPTLY)
        server.result()
    assert not marker.exists(), "the client unpickled data from an unauthenticated peer"
    assert isinstance(exc, AuthenticationError), repr(exc)


def test_keyed_client_against_a_keyless_server_fails_cleanly(address: Any) -> None:
    """The client waits for a challenge that never comes: it fails once the server hangs up."""
    with Listener(address) as listener:
        client = Background(Client, listener.address, None, KEY)
        with accept_within(listener) as server:
            assert server.poll(0.3) is False, "the client sent something before a challenge"
        exc = client.exception(PROMPTLY)
        assert isinstance(exc, (AuthenticationError, EOFError, OSError)), repr(exc)


def test_keyless_client_against_a_keyed_server_fails_cleanly(address: Any) -> None:
    with Listener(address, authkey=KEY) as listener:
        server = Background(listener.accept)
        with Client(listener.address) as client:
            assert client.poll(DEADLINE)
            # The keyed server's first bytes are its banner (for stdlib clients to
            # read): a keyless phalanx client is told what it lacks.
            with pytest.raises(OSError, match="connect with its authkey"):
                client.recv_bytes()
        exc = server.exception(PROMPTLY)
        assert isinstance(exc, (AuthenticationError, EOFError, OSError)), repr(exc)


# --- answer_challenge / deliver_challenge ----------------------------------------------------


def test_challenge_functions_with_the_right_key() -> None:
    a, b = Pipe()
    with a, b:

        def server() -> None:
            deliver_challenge(a, KEY)
            answer_challenge(a, KEY)

        done = Background(server)
        answer_challenge(b, KEY)
        deliver_challenge(b, KEY)
        done.result()
        a.send("the pipe is still usable")
        assert recv_within(b) == "the pipe is still usable"


@pytest.mark.parametrize("wrong_side", ["answerer", "deliverer"])
def test_challenge_functions_with_the_wrong_key(wrong_side: str) -> None:
    a, b = Pipe()
    deliver_key = WRONG if wrong_side == "deliverer" else KEY
    answer_key = WRONG if wrong_side == "answerer" else KEY
    with a, b:
        deliverer = Background(deliver_challenge, a, deliver_key)
        with pytest.raises(AuthenticationError, match="rejected"):
            answer_challenge(b, answer_key)
        with pytest.raises(AuthenticationError, match="wrong"):
            deliverer.result()


def test_challenge_functions_one_way_only() -> None:
    a, b = Pipe()
    with a, b:
        deliverer = Background(deliver_challenge, a, KEY)
        answer_challenge(b, KEY)
        deliverer.result()
        assert not a.poll(0) and not b.poll(0), "nothing left over"


@pytest.mark.parametrize("bad", ["str key", bytearray(b"k"), None, 42])
def test_challenge_functions_need_bytes(bad: Any) -> None:
    a, b = Pipe()
    with a, b:
        for fn in (deliver_challenge, answer_challenge):
            with pytest.raises(ValueError, match=type(bad).__name__):
                fn(a, bad)
        assert not b.poll(0), "nothing sent"


# --- hostile peers ---------------------------------------------------------------------------


def _frame(kind: int, length: int) -> bytes:
    return struct.pack("!Q", (kind << 62) | length)


GARBAGE: list[Any] = [
    ("noise", bytes((i * 131 + 7) % 256 for i in range(1024)), True),
    ("http-request", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True),
    ("huge-length", _frame(0, 1 << 40), True),
    ("length-just-over-the-limit", _frame(0, 257) + b"x" * 257, True),
    ("unknown-kind", _frame(3, 10) + b"x" * 10, True),
    ("wrong-digest", _frame(0, 32) + bytes(32), True),
    ("oob-table-too-big", _frame(1, 8) + struct.pack("!I", 1 << 20) + b"xxxx", True),
    ("nothing-then-close", b"", False),
    ("partial-header-then-close", b"\0\0\0\0", False),
    ("truncated-body-then-close", _frame(0, 100) + b"x" * 10, False),
    ("oob-frame-with-a-bad-pickle", _frame(1, 12) + struct.pack("!I", 0) + b"notpick!", True),
]


@pytest.mark.parametrize("case", GARBAGE, ids=lambda c: c[0] if isinstance(c, tuple) else None)
def test_garbage_peer_fails_accept_promptly(address: Any, case: tuple[str, bytes, bool]) -> None:
    _name, data, keep_open = case
    with Listener(address, authkey=KEY) as listener:
        server = Background(listener.accept)
        with raw_socket_to(listener) as peer:
            if data:
                peer.sendall(data)
            if not keep_open:
                peer.shutdown(socket.SHUT_WR)
            exc = server.exception(PROMPTLY)
        assert isinstance(exc, (AuthenticationError, EOFError, OSError)), repr(exc)
        # The listener is not hurt: a client with the key gets through.
        client, conn = connect_pair(listener, KEY)
        with client, conn:
            client.send("proper client")
            assert recv_within(conn) == "proper client"


def test_stalling_peer_does_not_block_accept_forever(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_listener, "HANDSHAKE_TIMEOUT", 1.0)
    with Listener(("127.0.0.1", 0), authkey=KEY) as listener:
        server = Background(listener.accept)
        with raw_socket_to(listener) as peer:
            peer.sendall(b"\0\0\0\0")  # half a frame header, then silence
            finished = server.done(5.0)
        # Closing the peer released accept() either way: no thread is left behind.
        assert finished, "accept() still blocked by a stalled peer after 5 s"


# --- bad arguments ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"family": "AF_BOGUS"}, "AF_BOGUS"),
        ({"address": 12345}, "12345"),
        ({"address": ["127.0.0.1", 0]}, "127.0.0.1"),
        ({"address": b"/tmp/not-abstract"}, "not-abstract"),
        ({"address": "\\\\.\\pipe\\name"}, "AF_PIPE"),
        ({"address": ("127.0.0.1", 0), "family": "AF_BOGUS"}, "AF_BOGUS"),
    ],
    ids=["family", "int-address", "list-address", "bytes-path", "windows-pipe", "tuple-family"],
)
def test_listener_rejects_bad_family_or_address(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named.replace("\\", "\\\\")):
        Listener(**kwargs)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ((12345,), "12345"),
        ((["127.0.0.1", 1],), "127.0.0.1"),
        ((("127.0.0.1", 1), "AF_BOGUS"), "AF_BOGUS"),
        (("/tmp/x", "AF_PIPE"), "AF_PIPE"),
    ],
    ids=["int-address", "list-address", "family", "pipe-family"],
)
def test_client_rejects_bad_family_or_address(args: tuple[Any, ...], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Client(*args)


def test_family_helpers_reject_unknown_names() -> None:
    with pytest.raises(ValueError, match="AF_BOGUS"):
        connection.arbitrary_address("AF_BOGUS")
    with pytest.raises(ValueError, match=r"3\.5"):
        connection.address_type(3.5)
    assert connection.families == ["AF_INET", "AF_UNIX"]
    assert connection.default_family == "AF_UNIX"


@pytest.mark.parametrize("bad", ["str key", bytearray(b"key"), 42, memoryview(b"key")])
def test_authkey_must_be_bytes(short_dir: str, bad: Any) -> None:
    path = os.path.join(short_dir, "never-bound.sock")
    with pytest.raises(TypeError, match=type(bad).__name__):
        Listener(path, authkey=bad)
    assert not os.path.exists(path), "checked before binding"
    with Listener(("127.0.0.1", 0)) as listener:
        with pytest.raises(TypeError, match=type(bad).__name__):
            Client(listener.address, authkey=bad)
        assert wait([listener], timeout=0) == [], "checked before connecting"


def test_address_in_use(kind: str, address: Any) -> None:
    with Listener(address, authkey=KEY) as first:
        with pytest.raises(OSError) as info:
            Listener(first.address)
        assert info.value.errno == errno.EADDRINUSE
        if kind == "unix-path":
            assert os.path.exists(address), "the failed Listener removed the first's file"
        client, conn = connect_pair(first, KEY)  # the first one is unharmed
        with client, conn:
            client.send("first still works")
            assert recv_within(conn) == "first still works"


# --- socket.setdefaulttimeout ----------------------------------------------------------------


@pytest.fixture
def default_timeout() -> Iterator[float]:
    saved = socket.getdefaulttimeout()
    socket.setdefaulttimeout(0.1)
    try:
        yield 0.1
    finally:
        socket.setdefaulttimeout(saved)


def test_listener_and_client_ignore_the_default_socket_timeout(
    default_timeout: float, address: Any
) -> None:
    with Listener(address, authkey=KEY) as listener:
        server = Background(listener.accept)
        assert not server.done(3 * default_timeout), f"accept gave up: {server.exception()!r}"
        client = Client(listener.address, authkey=KEY)
        with client, server.result() as conn:
            assert os.get_blocking(client.fileno()) and os.get_blocking(conn.fileno())
            reader = Background(conn.recv)
            assert not reader.done(3 * default_timeout), f"recv gave up: {reader.exception()!r}"
            client.send("late")
            assert reader.result() == "late"


def test_large_message_over_a_client_connection_under_a_default_timeout(
    default_timeout: float, address: Any
) -> None:
    data = targets.big_payload(1 << 20)
    with Listener(address, authkey=KEY) as listener:
        client, conn = connect_pair(listener, KEY)
        with client, conn:
            sender = Background(client.send_bytes, data)
            assert conn.poll(DEADLINE) and sha256(conn.recv_bytes()) == sha256(data)
            sender.result()
            assert os.get_blocking(conn.fileno()), "receiving made the fd non-blocking"


_TEMP_DIR_PROBE = """
import json, os, stat, sys
from phalanx import util
path = util.get_temp_dir()
print(json.dumps({
    "path": path,
    "mode": stat.S_IMODE(os.stat(path).st_mode),
    "tempfile_loaded": "tempfile" in sys.modules,
}))
"""


@pytest.mark.parametrize("usable", [True, False], ids=["TMPDIR", "TMPDIR-missing"])
def test_the_private_temp_dir_follows_tmpdir_and_goes_at_exit(tmp_path: Path, usable: bool) -> None:
    """get_temp_dir() makes its 0700 directory where tempfile would, without
    loading tempfile when $TMPDIR (or /tmp) takes it (issue 16: 0.25-0.6 ms of a
    manager server's start), and removes it at exit."""
    import json
    import subprocess
    import sys

    base = tmp_path / ("tmp" if usable else "missing")
    if usable:
        base.mkdir()
    env = {**os.environ, "TMPDIR": str(base)}
    out = subprocess.run(
        [sys.executable, "-c", _TEMP_DIR_PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    try:
        assert got["mode"] == 0o700
        assert os.path.basename(got["path"]).startswith("pymp-")
        if usable:
            assert os.path.dirname(got["path"]) == str(base)
            assert got["tempfile_loaded"] is False
        else:  # tempfile's own fallbacks: a missing $TMPDIR is skipped
            assert os.path.dirname(got["path"]) == tempfile.gettempdir()
        assert not os.path.exists(got["path"])
    finally:
        shutil.rmtree(got["path"], ignore_errors=True)
