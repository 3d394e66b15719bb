"""Thread-backed connections: the ``multiprocessing.dummy.connection`` API on queues.

For code that wants the connection API between threads of one process.
Nothing is pickled: objects are passed by reference.
"""

from __future__ import annotations

from queue import Queue
from typing import Any

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol, Self, TypeAlias

    # What a Listener's address is: the queue that Client() puts its pair of
    # queues into.
    _Address: TypeAlias = Queue[tuple[Queue[Any], Queue[Any]]]

    class _Put(Protocol):
        """``send``/``send_bytes``: the ``put`` of the outgoing queue."""

        def __call__(self, item: Any, block: bool = True, timeout: float | None = None) -> None: ...

    class _Get(Protocol):
        """``recv``/``recv_bytes``: the ``get`` of the incoming queue."""

        def __call__(self, block: bool = True, timeout: float | None = None) -> Any: ...


__all__ = ("Client", "Connection", "Listener", "Pipe", "families")

families: list[str] = ["AF_INET"]


class Connection:
    """One end of an in-process pipe made of two queues."""

    # The queues' own bound methods (no extra call on the way).
    send: _Put
    send_bytes: _Put
    recv: _Get
    recv_bytes: _Get

    def __init__(self, _in: Queue[Any], _out: Queue[Any]) -> None:
        self._in = _in
        self._out = _out
        self.send = self.send_bytes = _out.put
        self.recv = self.recv_bytes = _in.get

    def poll(self, timeout: float = 0.0) -> bool:
        """Whether an object is waiting, within ``timeout`` seconds."""
        if self._in.qsize() > 0:
            return True
        if timeout <= 0.0:
            return False
        with self._in.not_empty:
            self._in.not_empty.wait(timeout)
        return self._in.qsize() > 0

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Listener:
    """Accepts in-process ``Client`` connections; its address is a queue.

    (``address`` and ``family`` are ignored, as in the stdlib.)
    """

    def __init__(self, address: object = None, family: object = None, backlog: int = 1) -> None:
        self._backlog_queue: _Address | None = Queue(backlog)

    def accept(self) -> Connection:
        if self._backlog_queue is None:
            raise OSError("listener is closed")
        return Connection(*self._backlog_queue.get())

    def close(self) -> None:
        self._backlog_queue = None

    @property
    def address(self) -> _Address | None:
        """The queue to give ``Client()`` (None once closed)."""
        return self._backlog_queue

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def Client(address: _Address) -> Connection:
    """Connect to the ``Listener`` whose ``address`` is given."""
    _in: Queue[Any] = Queue()
    _out: Queue[Any] = Queue()
    address.put((_out, _in))
    return Connection(_in, _out)


def Pipe(duplex: bool = True) -> tuple[Connection, Connection]:
    """Two connected in-process connections (always duplex)."""
    a: Queue[Any] = Queue()
    b: Queue[Any] = Queue()
    return Connection(a, b), Connection(b, a)
