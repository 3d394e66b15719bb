"""Static typing test of phalanx's public API against typeshed's ``multiprocessing``.

Never run (pytest does not collect it, and nothing here is called): only type-checked.
Each ``assert_type`` states the type that typeshed's stubs (bundled with mypy) give
for the same expression on the stdlib ``multiprocessing``; replacing ``phalanx`` by
``multiprocessing`` in the imports gives a file that mypy passes.  Where typeshed says
``Any`` nothing is asserted, and where typeshed is wrong about the runtime (noted in
comments) the expression is only called.  Check it with (from the repository root):

    .venv/bin/mypy --strict tests/typing/api_types.py
"""

from __future__ import annotations

import ctypes
import logging
import queue
import socket
import sys
import threading
from collections.abc import Sequence
from typing import Any, assert_type

import phalanx as multiprocessing
from phalanx import (
    connection,
    context,
    managers,
    pool,
    process,
    queues,
    shared_memory,
    sharedctypes,
    synchronize,
)

# -- helpers a user's program would define ------------------------------------------------


def _target() -> None: ...


def _square(x: int) -> int:
    return x * x


def _add(x: int, y: int) -> int:
    return x + y


def _to_str(x: int) -> str:
    return str(x)


def _init(tag: str) -> None: ...


def _on_int(value: int) -> None: ...


def _on_list(values: list[int]) -> None: ...


def _on_error(exc: BaseException) -> None: ...


# -- processes ---------------------------------------------------------------------------


def check_process() -> None:
    p = multiprocessing.Process(target=_square, name="worker", args=(3,), kwargs={}, daemon=True)
    assert_type(p, multiprocessing.Process)
    assert_type(multiprocessing.Process(), multiprocessing.Process)
    assert_type(multiprocessing.Process(None, _target), multiprocessing.Process)
    assert_type(p.start(), None)
    assert_type(p.join(), None)
    assert_type(p.join(1.5), None)
    assert_type(p.join(timeout=None), None)
    assert_type(p.is_alive(), bool)
    assert_type(p.terminate(), None)
    assert_type(p.kill(), None)
    assert_type(p.close(), None)
    assert_type(p.run(), None)
    assert_type(p.exitcode, int | None)
    assert_type(p.pid, int | None)
    assert_type(p.ident, int | None)
    assert_type(p.name, str)
    assert_type(p.daemon, bool)
    assert_type(p.sentinel, int)
    assert_type(p.authkey, bytes)
    p.name = "renamed"
    p.daemon = False
    p.authkey = b"secret"


class Worker(multiprocessing.Process):
    def __init__(self, n: int) -> None:
        super().__init__(daemon=True)
        self.n = n

    def run(self) -> None:
        print(self.n, self.name)


def check_process_subclass() -> None:
    w = Worker(3)
    assert_type(w, Worker)
    assert_type(w.start(), None)
    assert_type(w.exitcode, int | None)
    base: process.BaseProcess = w
    assert_type(base.is_alive(), bool)


def check_process_functions() -> None:
    me = multiprocessing.current_process()
    assert_type(me, process.BaseProcess)
    assert_type(me.name, str)
    assert_type(me.pid, int | None)
    assert_type(multiprocessing.parent_process(), process.BaseProcess | None)
    assert_type(multiprocessing.active_children(), list[process.BaseProcess])
    assert_type(multiprocessing.cpu_count(), int)
    assert_type(process.current_process(), process.BaseProcess)
    assert_type(process.parent_process(), process.BaseProcess | None)
    assert_type(process.active_children(), list[process.BaseProcess])
    assert_type(multiprocessing.freeze_support(), None)


# -- contexts and start methods --------------------------------------------------------


def check_start_methods() -> None:
    assert_type(multiprocessing.get_start_method(), str)
    # typeshed types the default context's get_start_method(allow_none=True) as str, but
    # it returns None when no method is set yet (stdlib and phalanx): not asserted.
    multiprocessing.get_start_method(allow_none=True)
    assert_type(multiprocessing.set_start_method("spawn"), None)
    assert_type(multiprocessing.set_start_method("fork", force=True), None)
    assert_type(multiprocessing.set_start_method(None, force=True), None)
    assert_type(multiprocessing.get_all_start_methods(), list[str])
    # typeshed says get_context() (no method) is a DefaultContext; at run time (stdlib and
    # phalanx) it is the concrete context, so nothing is asserted about it.
    multiprocessing.get_context()


def check_get_context() -> None:
    spawn = multiprocessing.get_context("spawn")
    fork = multiprocessing.get_context("fork")
    forkserver = multiprocessing.get_context("forkserver")
    assert_type(spawn, context.SpawnContext)
    assert_type(fork, context.ForkContext)
    assert_type(forkserver, context.ForkServerContext)
    method = "spawn" if sys.argv else "fork"
    some: str = method
    assert_type(multiprocessing.get_context(some), context.BaseContext)
    assert_type(spawn.get_context("fork"), context.ForkContext)

    assert_type(spawn.get_start_method(), str)
    assert_type(spawn.get_start_method(allow_none=False), str)
    assert_type(spawn.get_start_method(allow_none=True), str | None)
    assert_type(spawn.set_start_method("spawn", force=True), None)


def check_context_methods() -> None:
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_target)
    assert_type(proc, context.SpawnProcess)
    assert_type(proc.start(), None)
    assert_type(proc.exitcode, int | None)
    assert_type(multiprocessing.get_context("fork").Process(), context.ForkProcess)
    assert_type(multiprocessing.get_context("forkserver").Process(), context.ForkServerProcess)
    assert_type(ctx.current_process(), process.BaseProcess)
    assert_type(ctx.parent_process(), process.BaseProcess | None)
    assert_type(ctx.active_children(), list[process.BaseProcess])
    assert_type(ctx.cpu_count(), int)
    assert_type(ctx.Manager(), managers.SyncManager)
    assert_type(ctx.Pipe(), tuple[connection.Connection[Any, Any], connection.Connection[Any, Any]])
    assert_type(ctx.Lock(), synchronize.Lock)
    assert_type(ctx.RLock(), synchronize.RLock)
    assert_type(ctx.Semaphore(2), synchronize.Semaphore)
    assert_type(ctx.BoundedSemaphore(2), synchronize.BoundedSemaphore)
    assert_type(ctx.Condition(), synchronize.Condition)
    assert_type(ctx.Event(), synchronize.Event)
    assert_type(ctx.Barrier(2), synchronize.Barrier)
    assert_type(ctx.Queue(), queues.Queue[Any])
    assert_type(ctx.JoinableQueue(4), queues.JoinableQueue[Any])
    assert_type(ctx.SimpleQueue(), queues.SimpleQueue[Any])
    assert_type(ctx.Pool(2), pool.Pool)
    assert_type(ctx.Value(ctypes.c_double, 1.0), sharedctypes.Synchronized[float])
    assert_type(ctx.Array(ctypes.c_int, 4), sharedctypes.SynchronizedArray[int])
    assert_type(ctx.RawValue(ctypes.c_long, 1), ctypes.c_long)
    assert_type(ctx.RawArray(ctypes.c_int, 4), ctypes.Array[ctypes.c_int])
    assert_type(ctx.get_logger(), logging.Logger)
    assert_type(ctx.log_to_stderr(logging.INFO), logging.Logger)
    assert_type(ctx.allow_connection_pickling(), None)
    assert_type(ctx.set_executable(sys.executable), None)
    assert_type(ctx.set_forkserver_preload(["json"]), None)
    assert_type(ctx.freeze_support(), None)
    assert_type(ctx.ProcessError, type[multiprocessing.ProcessError])
    assert_type(ctx.BufferTooShort, type[multiprocessing.BufferTooShort])
    assert_type(ctx.TimeoutError, type[multiprocessing.TimeoutError])
    assert_type(ctx.AuthenticationError, type[multiprocessing.AuthenticationError])
    with ctx.Pool(2) as p:
        assert_type(p, pool.Pool)


def check_module_misc() -> None:
    assert_type(multiprocessing.get_logger(), logging.Logger)
    assert_type(multiprocessing.log_to_stderr(), logging.Logger)
    assert_type(multiprocessing.log_to_stderr("DEBUG"), logging.Logger)
    assert_type(multiprocessing.allow_connection_pickling(), None)
    assert_type(multiprocessing.set_executable(sys.executable), None)
    assert_type(multiprocessing.set_forkserver_preload(["json"]), None)


# -- pools -----------------------------------------------------------------------------


def check_pool() -> None:
    p = multiprocessing.Pool(2)
    assert_type(p, pool.Pool)
    assert_type(multiprocessing.Pool(), pool.Pool)
    assert_type(
        multiprocessing.Pool(processes=2, initializer=_init, initargs=("w",), maxtasksperchild=10),
        pool.Pool,
    )

    assert_type(p.apply(_square, (3,)), int)
    assert_type(p.apply(_add, (1,), {"y": 2}), int)

    r = p.apply_async(_square, (3,))
    assert_type(r, pool.AsyncResult[int])
    assert_type(r.get(), int)
    assert_type(r.get(timeout=1.0), int)
    assert_type(r.wait(), None)
    assert_type(r.wait(0.5), None)
    assert_type(r.ready(), bool)
    assert_type(r.successful(), bool)
    assert_type(
        p.apply_async(_square, (3,), callback=_on_int, error_callback=_on_error),
        pool.AsyncResult[int],
    )

    assert_type(p.map(_square, [1, 2, 3]), list[int])
    assert_type(p.map(_to_str, range(10), chunksize=4), list[str])

    mr = p.map_async(_square, [1, 2, 3])
    assert_type(mr, pool.MapResult[int])
    assert_type(mr.get(), list[int])
    assert_type(mr.get(timeout=2.0), list[int])
    assert_type(mr.ready(), bool)
    assert_type(
        p.map_async(_square, [1], 1, callback=_on_list, error_callback=_on_error),
        pool.MapResult[int],
    )

    it = p.imap(_square, [1, 2, 3])
    assert_type(it, pool.IMapIterator[int])
    for x in it:
        assert_type(x, int)
    assert_type(next(it), int)
    assert_type(it.next(timeout=1.0), int)
    assert_type(p.imap(_to_str, range(10), chunksize=2), pool.IMapIterator[str])
    unordered = p.imap_unordered(_square, [1, 2, 3])
    assert_type(unordered, pool.IMapIterator[int])
    for y in p.imap_unordered(_to_str, [1, 2, 3], 2):
        assert_type(y, str)

    assert_type(p.starmap(_add, [(1, 2), (3, 4)]), list[int])
    sr = p.starmap_async(_add, [(1, 2), (3, 4)])
    assert_type(sr, pool.AsyncResult[list[int]])
    assert_type(sr.get(), list[int])

    assert_type(p.close(), None)
    assert_type(p.join(), None)
    assert_type(p.terminate(), None)


def check_pool_context_manager() -> None:
    with multiprocessing.Pool(2) as p:
        assert_type(p, pool.Pool)
        assert_type(p.map(_square, [1, 2]), list[int])
    with pool.Pool(2, context=multiprocessing.get_context("spawn")) as p2:
        assert_type(p2, pool.Pool)
    with pool.ThreadPool(4) as tp:
        assert_type(tp, pool.ThreadPool)
        assert_type(tp.apply(_square, (2,)), int)


# -- queues ------------------------------------------------------------------------------


def check_queue() -> None:
    # For type checkers ``multiprocessing.Queue`` is the generic class
    # ``multiprocessing.queues.Queue``: a bare ``multiprocessing.Queue()`` needs an
    # annotation under --strict, as here.
    iq: queues.Queue[int] = multiprocessing.Queue()
    big: queues.Queue[int] = multiprocessing.Queue(maxsize=10)
    assert_type(big.get(), int)
    assert_type(iq.put(1), None)
    assert_type(iq.put(2, block=True, timeout=1.0), None)
    assert_type(iq.put_nowait(3), None)
    assert_type(iq.get(), int)
    assert_type(iq.get(block=False), int)
    assert_type(iq.get(True, 1.0), int)
    assert_type(iq.get_nowait(), int)
    assert_type(iq.qsize(), int)
    assert_type(iq.empty(), bool)
    assert_type(iq.full(), bool)
    assert_type(iq.close(), None)
    assert_type(iq.join_thread(), None)
    assert_type(iq.cancel_join_thread(), None)
    try:
        iq.get(timeout=0.1)
    except queue.Empty:
        pass


def check_joinable_queue() -> None:
    sq: queues.JoinableQueue[str] = multiprocessing.JoinableQueue(5)
    assert_type(sq.put("job"), None)
    assert_type(sq.get(), str)
    assert_type(sq.task_done(), None)
    assert_type(sq.join(), None)
    assert_type(sq.qsize(), int)
    as_queue: queues.Queue[str] = sq
    assert_type(as_queue.get(), str)


def check_simple_queue() -> None:
    bq: queues.SimpleQueue[bytes] = multiprocessing.SimpleQueue()
    assert_type(bq.put(b"x"), None)
    assert_type(bq.get(), bytes)
    assert_type(bq.empty(), bool)
    assert_type(bq.close(), None)


def check_queue_annotations(
    q: multiprocessing.Queue[int],
    jq: multiprocessing.JoinableQueue[int],
    sq: multiprocessing.SimpleQueue[int],
) -> None:
    # typeshed lets ``multiprocessing.Queue`` etc. be used in annotations (they are the
    # classes of multiprocessing.queues for type checkers), as stdlib users do.
    assert_type(q.get(), int)
    assert_type(jq.get(), int)
    assert_type(sq.get(), int)
    q2: multiprocessing.Queue[str] = multiprocessing.Queue()
    assert_type(q2, queues.Queue[str])


# -- pipes and connections ---------------------------------------------------------------


def check_pipe() -> None:
    a, b = multiprocessing.Pipe()
    assert_type(a, connection.Connection[Any, Any])
    assert_type(b, connection.Connection[Any, Any])
    assert_type(
        multiprocessing.Pipe(duplex=False),
        tuple[connection.Connection[Any, Any], connection.Connection[Any, Any]],
    )
    assert_type(
        multiprocessing.Pipe(False),
        tuple[connection.Connection[Any, Any], connection.Connection[Any, Any]],
    )
    assert_type(
        connection.Pipe(),
        tuple[connection.Connection[Any, Any], connection.Connection[Any, Any]],
    )


def check_connection() -> None:
    a, _b = multiprocessing.Pipe()
    assert_type(a.send({"k": 1}), None)
    assert_type(a.poll(), bool)
    assert_type(a.poll(0.1), bool)
    assert_type(a.poll(None), bool)
    assert_type(a.send_bytes(b"abc"), None)
    assert_type(a.send_bytes(bytearray(b"abc"), 1), None)
    assert_type(a.send_bytes(memoryview(b"abc"), 1, 1), None)
    assert_type(a.recv_bytes(), bytes)
    assert_type(a.recv_bytes(maxlength=1024), bytes)
    buf = bytearray(64)
    assert_type(a.recv_bytes_into(buf), int)
    assert_type(a.recv_bytes_into(buf, 8), int)
    assert_type(a.fileno(), int)
    assert_type(a.closed, bool)
    assert_type(a.readable, bool)
    assert_type(a.writable, bool)
    assert_type(a.close(), None)
    with a as entered:
        assert_type(entered, connection.Connection[Any, Any])

    typed: connection.Connection[int, str] = a
    assert_type(typed.send(1), None)
    assert_type(typed.recv(), str)


def check_listener_client() -> None:
    listener = connection.Listener(("localhost", 0), authkey=b"secret")
    assert_type(listener, connection.Listener)
    assert_type(connection.Listener(), connection.Listener)
    assert_type(connection.Listener("/tmp/phalanx.sock", family="AF_UNIX"), connection.Listener)
    assert_type(connection.Listener(b"\0phalanx", "AF_UNIX", 5), connection.Listener)
    conn = listener.accept()
    assert_type(conn, connection.Connection[Any, Any])
    assert_type(conn.recv_bytes(), bytes)
    assert_type(listener.close(), None)
    with connection.Listener(("localhost", 0)) as entered:
        assert_type(entered, connection.Listener)

    client = connection.Client(("localhost", 6000), authkey=b"secret")
    assert_type(client, connection.Connection[Any, Any])
    assert_type(
        connection.Client("/tmp/phalanx.sock", family="AF_UNIX"), connection.Connection[Any, Any]
    )
    assert_type(client.send_bytes(b"hi"), None)

    assert_type(connection.answer_challenge(client, b"secret"), None)
    assert_type(connection.deliver_challenge(conn, b"secret"), None)


def check_wait() -> None:
    a, b = multiprocessing.Pipe()
    proc = multiprocessing.Process(target=_target)
    sock = socket.socket()
    ready = connection.wait([a, b, sock, proc.sentinel], timeout=1.0)
    # typeshed: list[_ConnectionBase[Any, Any] | socket.socket | int]; its connection
    # class is private, so the non-socket, non-int members are checked through methods.
    for obj in ready:
        if isinstance(obj, socket.socket):
            assert_type(obj, socket.socket)
        elif isinstance(obj, int):
            assert_type(obj, int)
        else:
            assert_type(obj.fileno(), int)
            assert_type(obj.recv_bytes(), bytes)
    assert_type(len(connection.wait([a])), int)


# -- locks and other synchronization -----------------------------------------------------


def check_locks() -> None:
    lock = multiprocessing.Lock()
    assert_type(lock, synchronize.Lock)
    assert_type(lock.acquire(), bool)
    assert_type(lock.acquire(False), bool)
    assert_type(lock.acquire(block=True, timeout=1.0), bool)
    assert_type(lock.acquire(timeout=0.5), bool)
    assert_type(lock.release(), None)
    with lock as got:
        assert_type(got, bool)

    rlock = multiprocessing.RLock()
    assert_type(rlock, synchronize.RLock)
    assert_type(rlock.acquire(), bool)
    assert_type(rlock.acquire(True, 1.0), bool)
    assert_type(rlock.release(), None)
    with rlock as got2:
        assert_type(got2, bool)


def check_semaphores() -> None:
    sem = multiprocessing.Semaphore(3)
    assert_type(sem, synchronize.Semaphore)
    assert_type(multiprocessing.Semaphore(), synchronize.Semaphore)
    assert_type(sem.acquire(), bool)
    assert_type(sem.acquire(timeout=1.0), bool)
    assert_type(sem.release(), None)
    assert_type(sem.get_value(), int)
    with sem as got:
        assert_type(got, bool)

    bsem = multiprocessing.BoundedSemaphore(2)
    assert_type(bsem, synchronize.BoundedSemaphore)
    assert_type(multiprocessing.BoundedSemaphore(value=1), synchronize.BoundedSemaphore)
    assert_type(bsem.acquire(False), bool)
    assert_type(bsem.release(), None)
    assert_type(bsem.get_value(), int)
    as_sem: synchronize.Semaphore = bsem
    assert_type(as_sem.get_value(), int)


def check_condition() -> None:
    cond = multiprocessing.Condition()
    assert_type(cond, synchronize.Condition)
    assert_type(multiprocessing.Condition(multiprocessing.Lock()), synchronize.Condition)
    assert_type(multiprocessing.Condition(lock=multiprocessing.RLock()), synchronize.Condition)
    assert_type(cond.acquire(), bool)
    assert_type(cond.acquire(True, 1.0), bool)
    assert_type(cond.release(), None)
    assert_type(cond.wait(), bool)
    assert_type(cond.wait(1.0), bool)
    assert_type(cond.wait_for(lambda: True), bool)
    assert_type(cond.wait_for(lambda: False, timeout=0.5), bool)
    assert_type(cond.notify(), None)
    assert_type(cond.notify(2), None)
    assert_type(cond.notify_all(), None)
    with cond as got:
        assert_type(got, bool)


def check_event() -> None:
    ev = multiprocessing.Event()
    assert_type(ev, synchronize.Event)
    assert_type(ev.is_set(), bool)
    assert_type(ev.set(), None)
    assert_type(ev.clear(), None)
    assert_type(ev.wait(), bool)
    assert_type(ev.wait(1.0), bool)
    assert_type(ev.wait(timeout=None), bool)


def check_barrier() -> None:
    bar = multiprocessing.Barrier(3)
    assert_type(bar, synchronize.Barrier)
    assert_type(multiprocessing.Barrier(2, action=_target, timeout=5.0), synchronize.Barrier)
    assert_type(bar.wait(), int)
    assert_type(bar.wait(1.0), int)
    assert_type(bar.reset(), None)
    assert_type(bar.abort(), None)
    assert_type(bar.parties, int)
    assert_type(bar.n_waiting, int)
    assert_type(bar.broken, bool)
    try:
        bar.wait()
    except threading.BrokenBarrierError:
        pass


# -- shared ctypes -----------------------------------------------------------------------


def check_value() -> None:
    v = multiprocessing.Value("i", 0)
    assert_type(v, sharedctypes.Synchronized[Any])
    v.value = 5
    v.value += 1
    assert_type(v.get_lock(), synchronize.Lock | synchronize.RLock)
    with v.get_lock():
        pass
    with v as got:
        assert_type(got, bool)
    assert_type(v.acquire(), bool)
    assert_type(v.release(), None)
    assert_type(multiprocessing.Value("d", 1.0, lock=True), sharedctypes.Synchronized[Any])
    assert_type(
        multiprocessing.Value("d", 1.0, lock=multiprocessing.RLock()),
        sharedctypes.Synchronized[Any],
    )

    vd = multiprocessing.Value(ctypes.c_double, 1.5)
    assert_type(vd, sharedctypes.Synchronized[float])
    assert_type(vd.value, float)
    vd.value = 2.5
    vi = multiprocessing.Value(ctypes.c_int, 0, lock=multiprocessing.Lock())
    assert_type(vi, sharedctypes.Synchronized[int])
    assert_type(vi.value, int)
    vb = multiprocessing.Value(ctypes.c_bool, False)
    assert_type(vb.value, bool)

    # lock=False gives the raw ctypes object at run time; typeshed types the context
    # method as Synchronized[...] there (wrong), so nothing is asserted.
    multiprocessing.Value(ctypes.c_int, 0, lock=False)
    multiprocessing.Value("i", 0, lock=False)


def check_array() -> None:
    a = multiprocessing.Array("i", 10)
    assert_type(a, sharedctypes.SynchronizedArray[Any])
    assert_type(multiprocessing.Array("d", [1.0, 2.0]), sharedctypes.SynchronizedArray[Any])
    assert_type(len(a), int)
    assert_type(a[0:2], list[Any])
    assert_type(a.get_lock(), synchronize.Lock | synchronize.RLock)

    ad = multiprocessing.Array(ctypes.c_double, 3)
    assert_type(ad, sharedctypes.SynchronizedArray[float])
    assert_type(ad[0], float)
    assert_type(ad[0:2], list[float])
    ad[0] = 1.0
    ad[0:2] = [1.0, 2.0]
    assert_type(len(ad), int)
    assert_type(
        multiprocessing.Array(ctypes.c_int, [1, 2, 3], lock=multiprocessing.RLock()),
        sharedctypes.SynchronizedArray[int],
    )

    chars = multiprocessing.Array(ctypes.c_char, 16)
    assert_type(chars, sharedctypes.SynchronizedString)
    assert_type(chars.value, bytes)
    assert_type(chars.raw, bytes)
    assert_type(chars[0], bytes)
    assert_type(chars[0:4], bytes)
    chars.value = b"hello"

    # lock=False gives the raw ctypes array at run time; typeshed's context method says
    # SynchronizedArray there (wrong), so nothing is asserted.
    multiprocessing.Array(ctypes.c_double, 3, lock=False)
    multiprocessing.Array("i", 3, lock=False)


def check_raw() -> None:
    rv = multiprocessing.RawValue(ctypes.c_int, 3)
    assert_type(rv, ctypes.c_int)
    assert_type(rv.value, int)
    assert_type(multiprocessing.RawValue(ctypes.c_double), ctypes.c_double)
    ra = multiprocessing.RawArray(ctypes.c_double, 3)
    assert_type(ra, ctypes.Array[ctypes.c_double])
    assert_type(ra[0], float)
    assert_type(len(ra), int)
    assert_type(multiprocessing.RawArray(ctypes.c_int, [1, 2]), ctypes.Array[ctypes.c_int])
    # typecode strings: typeshed says Any.
    multiprocessing.RawValue("i", 3)
    multiprocessing.RawArray("d", 3)


def check_sharedctypes_module() -> None:
    assert_type(sharedctypes.RawValue(ctypes.c_int, 1), ctypes.c_int)
    assert_type(sharedctypes.RawArray(ctypes.c_int, 4), ctypes.Array[ctypes.c_int])
    assert_type(sharedctypes.Value(ctypes.c_int, 1), sharedctypes.SynchronizedBase[ctypes.c_int])
    assert_type(sharedctypes.Value("i", 1), sharedctypes.SynchronizedBase[Any])
    assert_type(sharedctypes.Value(ctypes.c_int, 1, lock=False), ctypes.c_int)
    assert_type(
        sharedctypes.Value(ctypes.c_int, 1, ctx=multiprocessing.get_context("spawn")),
        sharedctypes.SynchronizedBase[ctypes.c_int],
    )
    assert_type(sharedctypes.Array(ctypes.c_char, 8), sharedctypes.SynchronizedString)
    assert_type(sharedctypes.Array(ctypes.c_double, 8), sharedctypes.SynchronizedArray[float])
    assert_type(sharedctypes.Array("i", 8), sharedctypes.SynchronizedArray[Any])
    # sharedctypes.Array(ctypes.c_int, 8, lock=False): typeshed says c_int (wrong: it is
    # a ctypes array), so nothing is asserted.
    sharedctypes.Array(ctypes.c_int, 8, lock=False)

    raw = ctypes.c_int(5)
    assert_type(sharedctypes.copy(raw), ctypes.c_int)
    assert_type(sharedctypes.synchronized(raw), sharedctypes.Synchronized[int])
    assert_type(
        sharedctypes.synchronized(sharedctypes.RawArray(ctypes.c_double, 3)),
        sharedctypes.SynchronizedArray[float],
    )
    assert_type(
        sharedctypes.synchronized(sharedctypes.RawArray(ctypes.c_char, 3)),
        sharedctypes.SynchronizedString,
    )
    sync = sharedctypes.synchronized(raw, multiprocessing.Lock())
    assert_type(sync.get_lock(), synchronize.Lock | synchronize.RLock)
    assert_type(sync.value, int)
    sync.get_obj()  # typeshed: _SimpleCData[int] (a private name); not asserted


# -- shared memory -----------------------------------------------------------------------


def check_shared_memory() -> None:
    shm = shared_memory.SharedMemory(create=True, size=64)
    assert_type(shm, shared_memory.SharedMemory)
    assert_type(shared_memory.SharedMemory("psm_name"), shared_memory.SharedMemory)
    assert_type(
        shared_memory.SharedMemory(name="psm_name", create=False, size=0),
        shared_memory.SharedMemory,
    )
    assert_type(shm.name, str)
    assert_type(shm.size, int)
    # typeshed: memoryview | None (a memoryview while open); either is fine, not Any.
    buf = shm.buf
    if buf is not None:
        assert_type(buf, memoryview)
    assert_type(shm.close(), None)
    assert_type(shm.unlink(), None)


def check_shareable_list() -> None:
    sl = shared_memory.ShareableList([1, 2, 3])
    assert_type(sl, shared_memory.ShareableList[int])
    assert_type(sl[0], int)
    sl[0] = 7
    assert_type(len(sl), int)
    assert_type(sl.shm, shared_memory.SharedMemory)
    assert_type(sl.format, str)
    assert_type(sl.count(1), int)
    assert_type(sl.index(2), int)
    assert_type(shared_memory.ShareableList(["a", "b"]), shared_memory.ShareableList[str])
    assert_type(
        shared_memory.ShareableList([b"x"], name="psm_list"), shared_memory.ShareableList[bytes]
    )
    # ShareableList(name=...): typeshed solves the type variable to bool, which means
    # nothing; not asserted.
    shared_memory.ShareableList(name="psm_list")


# -- managers ----------------------------------------------------------------------------


def check_manager() -> None:
    m = multiprocessing.Manager()
    assert_type(m, managers.SyncManager)
    with multiprocessing.Manager() as entered:
        assert_type(entered, managers.SyncManager)

    d = m.dict()
    assert_type(d, managers.DictProxy[Any, Any])
    ds = m.dict({"a": 1})
    assert_type(ds, managers.DictProxy[str, int])
    assert_type(m.dict(a=1, b=2), managers.DictProxy[str, int])
    assert_type(m.dict([(1, "x")]), managers.DictProxy[int, str])
    assert_type(ds["a"], int)
    ds["b"] = 2
    del ds["b"]
    assert_type(ds.get("a"), int | None)
    assert_type(ds.get("a", 0), int)
    assert_type(ds.pop("a"), int)
    assert_type(ds.keys(), list[str])
    assert_type(ds.values(), list[int])
    assert_type(ds.items(), list[tuple[str, int]])
    assert_type(ds.copy(), dict[str, int])
    assert_type(len(ds), int)
    for key in ds:
        assert_type(key, str)

    lst = m.list([1, 2, 3])
    assert_type(lst, managers.ListProxy[int])
    assert_type(m.list(), managers.ListProxy[Any])
    assert_type(lst[0], int)
    assert_type(lst[0:2], list[int])
    assert_type(lst.append(4), None)
    assert_type(lst.extend([5, 6]), None)
    assert_type(lst.pop(), int)
    assert_type(lst.index(1), int)
    assert_type(lst.count(1), int)
    assert_type(len(lst), int)
    lst[0] = 9
    lst += [7]

    ns = m.Namespace()
    assert_type(ns, managers.Namespace)
    ns.x = 1

    v = m.Value("i", 0)
    assert_type(v, managers.ValueProxy[int])
    assert_type(v.value, int)
    assert_type(v.get(), int)
    assert_type(v.set(3), None)
    v.value = 4
    assert_type(m.Array("i", [1, 2, 3]), Sequence[int])

    assert_type(m.Lock(), threading.Lock)
    assert_type(m.RLock(), threading.RLock)
    assert_type(m.Semaphore(2), threading.Semaphore)
    assert_type(m.BoundedSemaphore(2), threading.BoundedSemaphore)
    assert_type(m.Condition(), threading.Condition)
    assert_type(m.Event(), threading.Event)
    assert_type(m.Barrier(2), threading.Barrier)
    assert_type(m.Queue(), queue.Queue[Any])
    assert_type(m.JoinableQueue(), queue.Queue[Any])
    assert_type(m.Pool(2), pool.Pool)
    with m.Lock():
        pass
    assert_type(m.Lock().acquire(timeout=1.0), bool)
    assert_type(m.Event().wait(1.0), bool)

    assert_type(m.start(), None)
    assert_type(m.connect(), None)
    assert_type(m.join(1.0), None)
    assert_type(m.address, str | bytes | tuple[str, int] | None)
    m.shutdown()


class MyManager(managers.BaseManager):
    pass


MyManager.register("Counter", callable=dict)
MyManager.register(
    "Other",
    callable=list,
    proxytype=managers.ListProxy,
    exposed=["append", "__len__"],
    method_to_typeid={"copy": "Other"},
    create_method=True,
)


def check_base_manager() -> None:
    bm = managers.BaseManager(address=("127.0.0.1", 50000), authkey=b"secret")
    assert_type(bm, managers.BaseManager)
    assert_type(
        managers.BaseManager(("", 0), b"k", "pickle", None, shutdown_timeout=2.0),
        managers.BaseManager,
    )
    assert_type(managers.BaseManager.register("thing", callable=list), None)
    assert_type(bm.start(), None)
    assert_type(bm.start(_init, ("x",)), None)
    assert_type(bm.connect(), None)
    bm.shutdown()
    server = bm.get_server()
    assert_type(server, managers.Server)
    assert_type(server.serve_forever(), None)

    mm = MyManager(address=("", 50000), authkey=b"abc")
    assert_type(mm, MyManager)
    with MyManager() as entered:
        assert_type(entered, MyManager)

    sm = managers.SyncManager()
    assert_type(sm, managers.SyncManager)
    assert_type(sm.start(), None)
    assert_type(sm.dict(), managers.DictProxy[Any, Any])
    with managers.SyncManager(authkey=b"k") as sm2:
        assert_type(sm2, managers.SyncManager)
        assert_type(sm2.list([1]), managers.ListProxy[int])


def check_shared_memory_manager() -> None:
    with managers.SharedMemoryManager() as smm:
        assert_type(smm, managers.SharedMemoryManager)
        assert_type(smm.SharedMemory(64), shared_memory.SharedMemory)
        assert_type(smm.ShareableList([1, 2]), shared_memory.ShareableList[int])


# -- exceptions --------------------------------------------------------------------------


def check_exceptions() -> None:
    assert_type(multiprocessing.ProcessError(), multiprocessing.ProcessError)
    assert_type(multiprocessing.BufferTooShort("short"), multiprocessing.BufferTooShort)
    assert_type(multiprocessing.TimeoutError(), multiprocessing.TimeoutError)
    assert_type(multiprocessing.AuthenticationError("bad"), multiprocessing.AuthenticationError)
    base: multiprocessing.ProcessError = multiprocessing.BufferTooShort()
    base = multiprocessing.TimeoutError()
    base = multiprocessing.AuthenticationError()
    as_exception: Exception = base
    print(as_exception)

    r = multiprocessing.Pool(1).apply_async(_square, (1,))
    try:
        r.get(timeout=0.1)
    except multiprocessing.TimeoutError as exc:
        assert_type(exc, multiprocessing.TimeoutError)
    except multiprocessing.ProcessError as exc2:
        assert_type(exc2, multiprocessing.ProcessError)

    a, _b = multiprocessing.Pipe()
    try:
        a.recv_bytes_into(bytearray(1))
    except multiprocessing.BufferTooShort as exc3:
        assert_type(exc3, multiprocessing.BufferTooShort)
    try:
        connection.Client(("localhost", 6000), authkey=b"k")
    except multiprocessing.AuthenticationError as exc4:
        assert_type(exc4, multiprocessing.AuthenticationError)
