"""What runs inside an engine's worker: one engine task, i.e. a few chunks of a pool.

The engine only starts ``run_task(spec, task_id)``.  The runner connects to
the pool's *hub* (a phalanx ``Listener`` in the pool's process, mutual
HMAC-SHA256 with the pool's own key), once per worker thread and pool, and
from then on everything goes over that connection::

    runner                                    hub (the pool's process)
    ------------------------------------      -------------------------------------
    ("hello", host, pid, version)        ->
                                         <-   ("welcome", initializer) | ("refuse", why)
    ("start", task_id, functions held)   ->
                                         <-   ("run", [(chunk_id, fid, kind, items, where)],
                                                {fid: pickled function})
    ("by-value", fid, module)            ->   (a function whose module is not importable here)
                                         <-   ("function", fid, pickled by value)
    ("items-by-value", chunk_id, module) ->   (the same for a chunk's items)
                                         <-   ("items", chunk_id, pickled with it by value)
    ("begun", chunk_id)                  ->   (before each chunk)
    ("done", chunk_id, ok, value, secs)  ->   (after each chunk)
    ("end", task_id)                     ->

So the hub knows which chunk began in which process: when that process
dies (its connection ends), exactly the chunk it had begun and not finished
is to blame, on every engine.  The hub answers ``start`` only with chunks
still assigned to that engine task, so an engine that reruns a task on
another worker (Dask does, after a death) never computes a chunk twice.
Results go back as each chunk ends, never through the engine.  A chunk's
items come pickled; their large buffers come from the engine's store, as the
engine task's arguments (``where`` says which, see ``store``).

The function of a pool is pickled once, sent once per worker process and
kept (the last ``_FUNCTIONS`` of them).  An initializer runs once per worker
process and pool.
"""

from __future__ import annotations

import collections
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from .. import _platform
from .._pool.worker import _run
from .._version import __version__
from .._wire import pickling
from ..errors import ExceptionWithTraceback, MaybeEncodingError

__all__ = ("HubSpec", "run_task")

_FUNCTIONS = 16
VERSION = __version__  # what this worker runs (the hub refuses another)


@dataclass(frozen=True)
class HubSpec:
    """Where a pool's hub listens, and what a runner must know to join it."""

    address: tuple[str, int]
    authkey: bytes
    pool: str
    version: str


class _Link:
    """One worker thread's connection to one pool's hub."""

    def __init__(self, spec: HubSpec, host: str, pid: int) -> None:
        from .._listener import Client

        self.conn = Client(spec.address, authkey=spec.authkey)
        tune_link(self.conn)
        self.conn.send(("hello", host, pid, VERSION))
        reply = self.conn.recv()
        if reply[0] != "welcome":
            self.conn.close()
            raise RuntimeError(reply[1])
        self.initializer: bytes | None = reply[1]


# A runner or a pool whose peer's host went silent (power lost, cut off the
# network: no FIN ever comes) gives the connection up after this long, and the
# chunk that had begun there is blamed or rerun like one whose process died.
PEER_SILENT_AFTER = 15.0


def tune_link(conn: Any) -> None:
    """A hub connection: small messages go at once (no Nagle delay: a request and its
    answer are small), and a peer that went silent is noticed (``PEER_SILENT_AFTER``)."""
    try:
        with socket.socket(fileno=os.dup(conn.fileno())) as sock:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                _platform.drop_silent_peer(sock, PEER_SILENT_AFTER)
    except OSError:
        pass


_local = threading.local()
_shared_links: dict[tuple[str, Any], _Link] = {}  # the fake engine's workers, by identity
_links_lock = threading.Lock()
_initialized: set[tuple[str, Any]] = set()  # (pool, process): initializer done
_functions: collections.OrderedDict[tuple[str, int], Any] = collections.OrderedDict()
_state_lock = threading.Lock()


def _link(spec: HubSpec, identity: tuple[str, int] | None) -> tuple[_Link, Any]:
    if identity is not None:  # the fake engine: one "process" per identity
        key = (spec.pool, identity)
        with _links_lock:
            link = _shared_links.get(key)
            if link is None:
                link = _shared_links[key] = _Link(spec, *identity)
        return link, identity
    links = getattr(_local, "links", None)
    if links is None:
        links = _local.links = {}
    link = links.get(spec.pool)
    if link is None:
        link = links[spec.pool] = _Link(spec, socket.gethostname(), os.getpid())
    return link, os.getpid()


def forget(pool: str, identity: tuple[str, int]) -> None:
    """The fake engine's worker ``identity`` "died": its link is gone."""
    with _links_lock:
        link = _shared_links.pop((pool, identity), None)
    if link is not None:
        # Shut the socket down first: a close() alone would not end a recv()
        # blocked in another thread, nor show the hub an end of stream.
        try:
            sock = socket.socket(fileno=os.dup(link.conn.fileno()))
        except OSError:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            sock.close()


def _load_function(conn: Any, fid: int, data: bytes) -> Any:
    """A shipped function; if its module is not importable here, ask for it by value."""
    try:
        return pickling.loads(data)
    except ImportError as exc:  # ModuleNotFoundError: the user's local module
        conn.send(("by-value", fid, getattr(exc, "name", None)))
        reply = conn.recv()
        return pickling.loads(reply[2])


def _load_items(conn: Any, chunk_id: int, data: bytes, buffers: list[Any]) -> Any:
    """A chunk's items; if they need a module not importable here, ask for them by value."""
    try:
        return pickling.loads(data, buffers=buffers)
    except ImportError as exc:
        conn.send(("items-by-value", chunk_id, getattr(exc, "name", None)))
        reply = conn.recv()
        return pickling.loads(reply[2], buffers=buffers)


def run_task(spec: HubSpec, task_id: int, *stored: Any, identity: Any = None) -> int:
    """Run the chunks the hub assigns to engine task ``task_id``; returns how many ran.

    ``stored``: the large buffers of its chunks' items, from the engine's store.
    """
    link, process = _link(spec, identity)
    conn = link.conn
    if link.initializer is not None and (spec.pool, process) not in _initialized:
        initializer, initargs = pickling.loads(link.initializer)
        try:
            initializer(*initargs)
        except BaseException as exc:
            conn.send(("init-failed", ExceptionWithTraceback(exc, exc.__traceback__)))
            raise
        _initialized.add((spec.pool, process))
    with _state_lock:
        held = [fid for pool, fid in _functions if pool == spec.pool]
    conn.send(("start", task_id, held))
    reply = conn.recv()
    _tag, chunks, shipped = reply
    with _state_lock:
        for fid, data in shipped.items():
            _functions[(spec.pool, fid)] = _load_function(conn, fid, data)
            _functions.move_to_end((spec.pool, fid))
        while len(_functions) > _FUNCTIONS:
            _functions.popitem(last=False)
        funcs = {fid: _functions[(spec.pool, fid)] for _cid, fid, _k, _p, _w in chunks}
    chunks.reverse()  # pop() from the end: each chunk's items go as soon as it is done
    ran = 0
    while chunks:
        chunk_id, fid, kind, data, where = chunks.pop()
        conn.send(("begun", chunk_id))
        start = time.perf_counter()
        try:
            payload = _load_items(conn, chunk_id, data, [stored[i] for i in where])
            del data
            value: Any = _run(funcs[fid], kind, payload)
            ok = True
        except BaseException as exc:
            value = ExceptionWithTraceback(exc, exc.__traceback__)
            ok = False
            del exc
        payload = None
        elapsed = time.perf_counter() - start
        try:
            conn.send(("done", chunk_id, ok, value, elapsed))
        except (OSError, EOFError):
            raise
        except Exception as exc:  # the result (or its exception) cannot be pickled
            original = value.exc if isinstance(value, ExceptionWithTraceback) else value
            error = ExceptionWithTraceback(MaybeEncodingError(exc, original), exc.__traceback__)
            conn.send(("done", chunk_id, False, error, elapsed))
        del value
        ran += 1
    conn.send(("end", task_id))
    return ran
