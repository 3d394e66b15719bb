"""What the cluster backend's supervisor knows of each chunk, engine task and runner.

Plain records, touched by the supervisor's thread only (``backend``): a chunk's
``Entry`` goes QUEUED -> ASSIGNED (to an engine ``Task``) -> BEGUN (on a
runner's ``Peer`` connection) -> DONE, or back to QUEUED when what carried it
is lost before it began.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any

from .._pool.results import Chunk
from .engine import TaskEnd

__all__ = ("ASSIGNED", "BEGUN", "DONE", "QUEUED", "Entry", "Peer", "Task", "is_loopback")

QUEUED, ASSIGNED, BEGUN, DONE = range(4)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class Entry:
    __slots__ = ("begun_at", "big", "chunk", "data", "peer", "state", "task", "unstarted")

    def __init__(self, chunk: Chunk) -> None:
        self.chunk = chunk
        self.data: bytes | None = None  # its items, pickled (once, as first dispatched)
        self.big: list[Any] = []  # the store's references to its large buffers
        self.state = QUEUED
        self.task: Task | None = None
        self.peer: Peer | None = None
        self.begun_at = 0.0
        self.unstarted = 0  # engine tasks carrying it that ended before they started


class Task:
    __slots__ = ("chunks", "engine_failed", "handle", "id", "peer", "refs", "started")

    def __init__(self, task_id: int, chunks: list[int]) -> None:
        self.id = task_id
        self.chunks = chunks
        self.refs: list[Any] = []  # the store's references its chunks need, in order
        self.handle: Any = None
        self.peer: Peer | None = None
        self.started = False
        self.engine_failed: tuple[float, TaskEnd] | None = None


class Peer:
    """One runner's connection (one worker thread of one engine process)."""

    __slots__ = ("conn", "host", "ip", "pid", "task")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.host = "?"  # its machine's name, as it says, and its address as the hub sees it
        self.ip = peer_ip(conn)
        self.pid: int | None = None
        self.task: Task | None = None

    @property
    def where(self) -> str:
        """``vm`` for a worker on this machine, ``node7 (10.0.0.7)`` for one elsewhere."""
        if self.ip is None or is_loopback(self.ip):
            return self.host
        return f"{self.host} ({self.ip})"


def peer_ip(conn: Any) -> str | None:
    try:
        with socket.socket(fileno=os.dup(conn.fileno())) as sock:
            return str(sock.getpeername()[0])
    except (OSError, IndexError, TypeError):
        return None
