"""Thread-backed connections: the ``multiprocessing.dummy.connection`` API on queues.

For code that wants the connection API between threads of one process.
Nothing is pickled: objects are passed by reference.
"""

from __future__ import annotations

from queue import Queue
from typing import Any

__all__ = ("Client", "Connection", "Listener", "Pipe", "families")

families = ["AF_INET"]


class Connection:
    """One end of an in-process pipe made of two queues."""

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

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Listener:
    """Accepts in-process ``Client`` connections; its address is a queue."""

    def __init__(self, address: Any = None, family: str | None = None, backlog: int = 1) -> None:
        self._backlog_queue: Queue[tuple[Queue[Any], Queue[Any]]] | None = Queue(backlog)

    def accept(self) -> Connection:
        if self._backlog_queue is None:
            raise OSError("listener is closed")
        return Connection(*self._backlog_queue.get())

    def close(self) -> None:
        self._backlog_queue = None

    @property
    def address(self) -> Any:
        return self._backlog_queue

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def Client(address: Any) -> Connection:
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
