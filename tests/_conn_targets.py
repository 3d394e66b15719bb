"""Child targets and helpers for the connection tests (``test_connection``, ``test_listener``).

Targets live here, in an importable module, so spawn and forkserver children
can unpickle them by reference.  A child that waits for the parent waits with
``poll(DEADLINE)``, so a failed test leaves no child blocked forever.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
import threading
from collections.abc import Callable
from typing import Any

import phalanx
from _targets import DEADLINE, write_json
from phalanx import connection, reduction

# --- objects that travel --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Point:
    """A dataclass from an importable module: pickled by reference to its class."""

    x: int
    y: float
    label: str = "p"
    tags: tuple[str, ...] = ()


class TravellingError(Exception):
    """An exception class of our own, with two arguments."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(code, detail)
        self.code = code
        self.detail = detail


def make_adder(n: int) -> Callable[[int], int]:
    """A closure: its qualname contains ``<locals>``, so it is pickled by value."""

    def add(x: int) -> int:
        return x + n

    return add


def touch(path: str) -> str:
    """Create ``path`` (fails if it exists): the side effect of unpickling a ``Marker``."""
    with open(path, "x", encoding="utf-8") as f:
        f.write(str(os.getpid()))
    return path


class Marker:
    """Pickles fine; *unpickling* it creates the file ``path``.

    Whoever finds the file afterwards knows that someone unpickled the object.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return touch, (self.path,)


def big_payload(nbytes: int, seed: int = 0) -> bytes:
    """``nbytes`` of varied (not all-equal) content, fast to make."""
    import numpy as np

    return np.random.default_rng(seed).bytes(nbytes)


def sha256(data: Any) -> str:
    return hashlib.sha256(data).hexdigest()


# --- a thread with a deadline ---------------------------------------------------------------


class Background:
    """Run ``fn(*args)`` in a daemon thread; ``result(timeout)`` gives its outcome.

    ``result`` re-raises what the call raised, and fails the test (instead of
    hanging it) if the call is still blocked after ``timeout`` seconds.
    """

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self._outcome: tuple[bool, Any] | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, args), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            self._outcome = (True, fn(*args))
        except BaseException as exc:
            self._outcome = (False, exc)

    def done(self, timeout: float) -> bool:
        """Whether the call has finished within ``timeout`` seconds."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def result(self, timeout: float = DEADLINE) -> Any:
        if not self.done(timeout):
            raise AssertionError(f"the call is still blocked after {timeout} s")
        assert self._outcome is not None
        ok, value = self._outcome
        if not ok:
            raise value
        return value

    def exception(self, timeout: float = DEADLINE) -> BaseException | None:
        """What the call raised (None if it returned)."""
        try:
            self.result(timeout)
        except AssertionError as exc:
            if "still blocked" in str(exc):
                raise
            return exc
        except BaseException as exc:
            return exc
        return None


# --- child targets ---------------------------------------------------------------------------

# Ends an echo loop.  EOF alone would not do: a forked child inherits the
# parent's end of a socketpair, so closing it in the parent is not the last close.
STOP = "__phalanx-test-stop__"


def echo(inbox: Any, outbox: Any) -> None:
    """Send back every object received, until STOP (sent back too), EOF or silence."""
    while inbox.poll(DEADLINE):
        try:
            obj = inbox.recv()
        except EOFError:
            break
        outbox.send(obj)
        if isinstance(obj, str) and obj == STOP:
            break


def echo_bytes(inbox: Any, outbox: Any) -> None:
    """Send back every byte message received, until STOP (sent back too), EOF or silence."""
    while inbox.poll(DEADLINE):
        try:
            data = inbox.recv_bytes()
        except EOFError:
            break
        outbox.send_bytes(data)
        if data == STOP.encode():
            break


def hash_and_echo_bytes(inbox: Any, outbox: Any) -> None:
    """Receive one byte message; send its length and SHA-256, then the message itself."""
    if not inbox.poll(DEADLINE):
        return
    data = inbox.recv_bytes()
    outbox.send((len(data), sha256(data)))
    outbox.send_bytes(data)
    del data


def send_big_message(outbox: Any, how: str, nbytes: int) -> None:
    """Send one message of ``nbytes`` (the parent kills us while it is in transit)."""
    if how == "send_bytes":
        outbox.send_bytes(bytes(nbytes))
    else:
        import numpy as np

        outbox.send(np.zeros(nbytes, dtype=np.uint8))


def send_then_exit(outbox: Any, obj: Any) -> None:
    outbox.send(obj)


def report_connections(path: str, duplex: Any, reader: Any, writer: Any) -> None:
    """Report the flags of connections passed as arguments, then use each of them."""
    write_json(
        path,
        {
            "duplex": [duplex.readable, duplex.writable, duplex.closed],
            "reader": [reader.readable, reader.writable, reader.closed],
            "writer": [writer.readable, writer.writable, writer.closed],
        },
    )
    duplex.send(("duplex", os.getpid()))
    if reader.poll(DEADLINE):
        writer.send(("got", reader.recv()))
    if duplex.poll(DEADLINE):
        duplex.send(("echo", duplex.recv()))


def use_handed_connections(ctrl: Any) -> None:
    """Receive connections over ``ctrl`` (None ends) and use each as its flags allow."""
    while ctrl.poll(DEADLINE):
        conn = ctrl.recv()
        if conn is None:
            break
        flags = (conn.readable, conn.writable)
        if conn.readable and conn.writable:
            if conn.poll(DEADLINE):
                conn.send(("echo", conn.recv(), os.getpid()))
        elif conn.readable:
            if conn.poll(DEADLINE):
                ctrl.send(("read", conn.recv()))
        else:
            conn.send(("written", os.getpid()))
        conn.close()
        ctrl.send(("done", flags))


def hand_over_pipe(ctrl: Any, duplex: bool) -> None:
    """Make a Pipe here, send one end to the parent over ``ctrl``, talk over the other."""
    if duplex:
        mine, theirs = phalanx.Pipe()
        ctrl.send(theirs)
        theirs.close()
        if mine.poll(DEADLINE):
            mine.send(("reply", mine.recv(), os.getpid()))
    else:
        theirs, mine = phalanx.Pipe(duplex=False)  # the parent reads, we write
        ctrl.send(theirs)
        theirs.close()
        mine.send(("from child", os.getpid()))
    # Stay alive (our resource sharer serves the fd) until the parent is done.
    if ctrl.poll(DEADLINE):
        ctrl.recv()


def hand_over_pipe_and_exit(ctrl: Any) -> None:
    """Send one end of a new Pipe to the parent and exit before it can fetch it."""
    _mine, theirs = phalanx.Pipe()
    ctrl.send(theirs)


def read_through_handle(conn: Any) -> None:
    """Receive an fd with ``recv_handle``; send back what reading it gives."""
    if not conn.poll(DEADLINE):
        return
    fd = reduction.recv_handle(conn)
    with open(fd, "rb") as f:
        conn.send((f.read(), os.getpid()))


def send_own_handle(conn: Any, content: bytes) -> None:
    """Write ``content`` to an unlinked temporary file; send its fd; wait for the parent."""
    with tempfile.TemporaryFile() as f:
        f.write(content)
        f.flush()
        f.seek(0)
        reduction.send_handle(conn, f.fileno(), os.getppid())
    if conn.poll(DEADLINE):
        conn.recv()


def client_exchange(address: Any, authkey: bytes | None, family: str | None = None) -> None:
    """Connect to a Listener; send a greeting, echo one object; report failures as objects."""
    try:
        conn = connection.Client(address, family=family, authkey=authkey)
    except Exception as exc:
        # The listener's accept() fails too: report through a file instead.
        raise SystemExit(f"{type(exc).__name__}: {exc}") from None
    with conn:
        conn.send(("hello", os.getpid()))
        if conn.poll(DEADLINE):
            conn.send(("echo", conn.recv()))


def client_expecting_failure(path: str, address: Any, authkey: bytes | None) -> None:
    """Connect with ``authkey``; report the type of the error raised (None if none)."""
    try:
        conn = connection.Client(address, authkey=authkey)
    except Exception as exc:
        write_json(path, {"error": type(exc).__name__, "message": str(exc)})
        return
    conn.close()
    write_json(path, {"error": None, "message": ""})


def close_listener(listener: Any) -> None:
    """(fork) Close an inherited Listener: the parent's socket file must survive it."""
    listener.close()
