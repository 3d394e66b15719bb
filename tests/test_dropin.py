"""Drop-in for real programs: what code written for ``multiprocessing`` reaches for (issue 14).

Programs from the documentation's examples read ``Pool._cache`` and the
workers of ``Pool._pool``; scripts arrive on standard input; a task's
exception names the item that raised it.  Each test runs real processes
under every start method.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import _pool_targets as t
import phalanx
import phalanx.connection
import phalanx.managers
from _targets import DEADLINE, TESTS_DIR, run_python, wait_until
from phalanx.pool import Pool

# --- Pool._cache and Pool._pool, as the documentation's pool example uses them ----------------


def test_cache_holds_the_outstanding_jobs(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(2)
    assert not pool._cache
    slow = pool.apply_async(time.sleep, (0.5,))
    mapped = pool.map_async(t.square, range(10))
    it = pool.imap(t.square, range(10))
    assert len(pool._cache) >= 2
    assert slow._job in pool._cache
    slow.get(timeout=DEADLINE)
    mapped.get(timeout=DEADLINE)
    assert list(it) == [x * x for x in range(10)]
    wait_until(lambda: not pool._cache, what="no outstanding job")
    results: list[Any] = []
    r = pool.apply_async(t.square, (7,), callback=results.append)
    r.wait()
    assert not pool._cache  # gone before anyone waiting on it is woken
    assert results == [49]


def test_cache_after_a_failing_map(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(2)
    with pytest.raises(ZeroDivisionError):
        pool.map(t.inverse_minus_five, range(10))
    with pytest.raises(ZeroDivisionError):
        list(pool.imap(t.inverse_minus_five, range(10)))
    wait_until(lambda: not pool._cache, what="no outstanding job")


@pytest.mark.parametrize("how", ["close", "terminate", "collected"])
def test_workers_of_a_stopped_pool_can_still_be_asked(ctx: Any, how: str) -> None:
    """``Pool._pool``'s process objects stay usable: ``is_alive()`` is False once stopped."""
    pool = ctx.Pool(2)
    workers = list(pool._pool)
    assert all(w.is_alive() for w in workers)
    pool.apply(t.square, (2,))
    if how == "close":
        pool.close()
        pool.join()
    elif how == "terminate":
        [pool.apply_async(time.sleep, (0.1,)) for _ in range(20)]
        pool.terminate()
        pool.join()
    else:  # dropped once idle (a pending result keeps its pool alive, as in the stdlib)
        with pytest.warns(ResourceWarning):
            del pool
            gc.collect()
    wait_until(lambda: not any(w.is_alive() for w in workers), what="workers gone")
    assert all(w.exitcode is not None for w in workers)


# --- a task's exception names its item (PEP 678 notes) ---------------------------------------


@pytest.mark.parametrize(
    ("call", "note"),
    [
        (lambda p: p.map(t.inverse_minus_five, range(10), chunksize=3), "item 5 of map("),
        (lambda p: list(p.imap(t.inverse_minus_five, range(10), 4)), "item 5 of imap("),
        (lambda p: list(p.imap_unordered(t.inverse_minus_five, range(10))), "item 5 of imap_"),
        (lambda p: p.starmap(t.inverse_minus_five, [(i,) for i in range(9)]), "of starmap("),
        (lambda p: p.apply(t.inverse_minus_five, (5,)), "raised by apply("),
    ],
    ids=["map", "imap", "imap_unordered", "starmap", "apply"],
)
def test_a_task_exception_names_its_item(
    make_pool: Callable[..., Pool], call: Callable[[Pool], Any], note: str
) -> None:
    pool = make_pool(2)
    with pytest.raises(ZeroDivisionError) as info:
        call(pool)
    notes = getattr(info.value, "__notes__", [])
    assert len(notes) == 1 and note in notes[0], notes
    assert "inverse_minus_five" in notes[0]


# --- a script on standard input, under every start method ----------------------------------

STDIN_SCRIPT = """\
import sys
sys.path.insert(0, {tests!r})
import phalanx as multiprocessing

def square(x):
    return x * x

def hello(q):
    q.put(("hello from", multiprocessing.current_process().name))

if __name__ == "__main__":
    ctx = multiprocessing.get_context(sys.argv[1])
    with ctx.Pool(2) as pool:
        print(pool.map(square, range(5)))
    q = ctx.Queue()
    p = ctx.Process(target=hello, args=(q,))
    p.start()
    print(q.get(timeout=30)[0])
    p.join(30)
    print(p.exitcode)
"""


def test_a_script_on_standard_input(start_method: str, tmp_path: Path) -> None:
    """``python - < script``: nothing to re-import in a spawned child; functions travel
    by value (the stdlib's spawn children fail on '<stdin>')."""
    script = tmp_path / "script.py"
    script.write_text(STDIN_SCRIPT.format(tests=TESTS_DIR), encoding="utf-8")
    with open(script, encoding="utf-8") as stdin:
        result = run_python(["-", start_method], stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["[0, 1, 4, 9, 16]", "hello from", "0"]


# --- stdlib code handed a phalanx context (the bridge: phalanx._stdlib) ----------------------


def test_concurrent_futures_executor_on_a_phalanx_context(any_ctx: Any) -> None:
    """``concurrent.futures.ProcessPoolExecutor(mp_context=...)``: its queues are the
    stdlib's, built on our locks, pickled for our children; its manager thread waits on
    our SimpleQueue's ``_reader``.  (Run on the stdlib's context too, to compare.)"""
    import concurrent.futures.process as cfp

    executor = cfp.ProcessPoolExecutor(2, mp_context=any_ctx)
    try:
        assert list(executor.map(t.square, range(1000))) == [x * x for x in range(1000)]
        with pytest.raises(ValueError, match="42"):
            executor.submit(t.raise_value_error, 42).result(timeout=DEADLINE)
        with pytest.raises(cfp.BrokenProcessPool):
            executor.submit(t.kill_me).result(timeout=DEADLINE)
        with pytest.raises(cfp.BrokenProcessPool):
            executor.submit(t.square, 2)
    finally:
        executor.shutdown(wait=True)
    with pytest.raises(RuntimeError):  # BrokenProcessPool still, or "after shutdown"
        executor.submit(t.square, 2)


def test_concurrent_futures_executor_shuts_down_cleanly(any_ctx: Any) -> None:
    import concurrent.futures.process as cfp

    with cfp.ProcessPoolExecutor(2, mp_context=any_ctx) as executor:
        futures = [executor.submit(t.sleep_then_return, 0.05, i) for i in range(20)]
    assert [f.result(timeout=0) for f in futures] == list(range(20))
    executor.shutdown(wait=True)  # again: nothing to do


def test_stdlib_pool_on_a_phalanx_context(any_ctx: Any) -> None:
    import multiprocessing.pool

    ctx = any_ctx
    with multiprocessing.pool.Pool(2, context=ctx) as pool:
        assert pool.map(t.square, range(100)) == [x * x for x in range(100)]
        assert list(pool.imap_unordered(t.square, range(5))) != []
        assert pool.apply_async(t.square, (9,)).get(timeout=DEADLINE) == 81
        with pytest.raises(ValueError):
            pool.apply(t.raise_value_error, (1,))
        names = {p.name for p in pool._pool}
    prefix = {"fork": "ForkPoolWorker-", "spawn": "SpawnPoolWorker-"}
    assert all(
        n.startswith(prefix.get(ctx.get_start_method(), "ForkServerPoolWorker-")) for n in names
    )


def test_pool_workers_are_named_as_the_stdlib_names_them(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(2)
    method = pool._ctx.get_start_method()
    prefix = {"fork": "Fork", "spawn": "Spawn", "forkserver": "ForkServer"}[method]
    assert all(p.name.startswith(f"{prefix}PoolWorker-") for p in pool._pool), pool._pool


def test_the_stdlib_sees_phalanx_children_and_forgets_them(ctx: Any) -> None:
    """``multiprocessing.active_children()`` lists them (pebble's exit hook stops them so),
    and a joined one is let go (its pidfd closed), so nothing accumulates."""
    import multiprocessing

    p = ctx.Process(target=time.sleep, args=(30,))
    p.start()
    try:
        assert p in multiprocessing.active_children()
    finally:
        p.kill()
        p.join(DEADLINE)
    assert p not in multiprocessing.process._children
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        q = ctx.Process(target=t.square, args=(2,))
        q.start()
        q.join(DEADLINE)
        del q
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) <= fds + 2


def test_a_stdlib_queue_on_a_phalanx_context_goes_to_a_phalanx_child(ctx: Any) -> None:
    import multiprocessing.queues

    q: Any = multiprocessing.queues.Queue(ctx=ctx)
    p = ctx.Process(target=t.put_square, args=(q, 7))
    p.start()
    try:
        assert q.get(timeout=DEADLINE) == 49
    finally:
        p.join(DEADLINE)
    assert p.exitcode == 0
    q.close()
    q.join_thread()


LOGGING_SCRIPT = """\
import logging, sys
sys.path.insert(0, {tests!r})
import phalanx
import _pool_targets as t
import phalanx
import phalanx.connection
import phalanx.managers

logging.basicConfig(format="%(processName)s|%(message)s", level=logging.INFO, stream=sys.stdout)


class LogManager(phalanx.managers.BaseManager):
    pass


LogManager.register("Logger", t.ServerLogger)

if __name__ == "__main__":
    if sys.argv[2] == "with-stdlib":
        import multiprocessing
    ctx = phalanx.get_context(sys.argv[1])
    logging.info("main")
    p = ctx.Process(target=t.log_info, args=("process",), name="Worker-A")
    p.start()
    p.join(30)
    with ctx.Pool(1) as pool:
        pool.apply(t.log_info, ("pool",))
    with LogManager(ctx=ctx) as manager:
        manager.Logger().info("manager")
"""


@pytest.mark.parametrize("stdlib", ["with-stdlib", "without"])
def test_logging_names_the_process(start_method: str, tmp_path: Path, stdlib: str) -> None:
    """``%(processName)s`` in children of every kind, whether or not the program also
    imported ``multiprocessing`` (which ``logging`` asks)."""
    script = tmp_path / "logging_names.py"
    script.write_text(LOGGING_SCRIPT.format(tests=TESTS_DIR), encoding="utf-8")
    result = run_python([str(script), start_method, stdlib])
    assert result.returncode == 0, result.stderr
    lines = dict(line.split("|", 1)[::-1] for line in result.stdout.splitlines() if "|" in line)
    assert lines["main"] == "MainProcess"
    assert lines["process"] == "Worker-A"
    prefix = {"fork": "Fork", "spawn": "Spawn", "forkserver": "ForkServer"}[start_method]
    assert lines["pool"].startswith(f"{prefix}PoolWorker-"), lines
    assert lines["manager"].startswith("LogManager-"), lines


# --- the stdlib's wire protocol on the other end: a clear error, not a misleading one ----------


@pytest.fixture
def stdlib_listener() -> Any:
    import multiprocessing.connection

    listener = multiprocessing.connection.Listener(("127.0.0.1", 0), authkey=b"key")
    acceptor = threading.Thread(target=_accept_quietly, args=(listener,), daemon=True)
    acceptor.start()
    yield listener
    listener.close()


def _accept_quietly(listener: Any) -> None:
    try:
        listener.accept()
    except Exception:
        pass


def test_a_phalanx_client_of_a_stdlib_listener_is_told_so(stdlib_listener: Any) -> None:
    with pytest.raises(phalanx.AuthenticationError, match="stdlib's multiprocessing"):
        phalanx.connection.Client(stdlib_listener.address, authkey=b"key")


def test_a_stdlib_client_of_a_phalanx_listener_is_told_so() -> None:
    import multiprocessing.connection

    with phalanx.connection.Listener(("127.0.0.1", 0), authkey=b"key") as listener:
        acceptor = threading.Thread(target=_accept_quietly, args=(listener,), daemon=True)
        acceptor.start()
        with pytest.raises(Exception, match="phalanx Listener") as info:
            multiprocessing.connection.Client(listener.address, authkey=b"key")
        assert "phalanx.connection.Client" in str(info.value)


def test_a_stdlib_message_to_a_phalanx_connection_is_recognized() -> None:
    import multiprocessing.connection

    with phalanx.connection.Listener(("127.0.0.1", 0)) as listener:
        client = multiprocessing.connection.Client(listener.address)
        server = listener.accept()
        with client, server:
            client.send({"a": 1})
            with pytest.raises(OSError, match="wire protocol, not phalanx's"):
                server.recv()


def test_a_phalanx_manager_of_a_stdlib_server_is_told_so() -> None:
    import multiprocessing.managers

    stdlib_manager = multiprocessing.managers.SyncManager(authkey=b"key")
    stdlib_manager.start()
    try:
        ours = phalanx.managers.SyncManager(address=stdlib_manager.address, authkey=b"key")
        with pytest.raises(phalanx.AuthenticationError, match="stdlib manager"):
            ours.connect()
    finally:
        stdlib_manager.shutdown()


def test_a_stdlib_manager_of_a_phalanx_server_is_told_so(ctx: Any) -> None:
    import multiprocessing.managers

    ours = phalanx.managers.SyncManager(authkey=b"key", ctx=ctx)
    ours.start()
    try:
        theirs = multiprocessing.managers.SyncManager(address=ours.address, authkey=b"key")
        with pytest.raises(Exception, match="phalanx Listener"):
            theirs.connect()
    finally:
        ours.shutdown()
