"""``Pool`` and ``ThreadPool`` (``phalanx.pool``): the stdlib API, and workers that die.

Process-pool tests run under each start method (the ``ctx`` fixture) on pools
of two workers.  Workers are broken for real: SIGKILL sent by the test, a
segfault, ``os._exit``, an exit while pickling a result or unpickling a task.
Every wait is bounded: results are got with a timeout, and calls that have
none (``Pool.map``, ``Pool.join``) run in a helper thread that is given
``DEADLINE`` seconds.  Ctrl-C runs in a child interpreter.
"""

from __future__ import annotations

import importlib
import itertools
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import _pool_targets as t
import phalanx
import phalanx.dummy
from _targets import (
    DEADLINE,
    TESTS_DIR,
    _kill_session,
    bounded,
    fd_targets,
    pid_exists,
    session_members,
    threads_switching_at_every_bytecode,
    wait_for_json,
    wait_until,
)
from phalanx._pool.results import fail_all
from phalanx.pool import (
    MaybeEncodingError,
    Pool,
    PoolTerminatedError,
    RemoteTraceback,
    TaskTimeoutError,
    ThreadPool,
    WorkerLostError,
)

SQUARES = [x * x for x in range(20)]
STOP_WITHIN = 10.0  # terminate() + join() must take less than this


# --- helpers ------------------------------------------------------------------------------


def drain(it: Any) -> tuple[list[Any], list[BaseException]]:
    """Every outcome of an imap iterator: (values, errors), each in arrival order."""
    values: list[Any] = []
    errors: list[BaseException] = []
    while True:
        try:
            value = it.next(timeout=DEADLINE)
        except StopIteration:
            return values, errors
        except Exception as exc:
            if type(exc) is phalanx.TimeoutError:  # the wait itself ran out
                raise
            errors.append(exc)
        else:
            values.append(value)


def outcomes(it: Any) -> list[Any]:
    """Every outcome of an ordered imap, errors in place."""
    out: list[Any] = []
    while True:
        try:
            out.append(it.next(timeout=DEADLINE))
        except StopIteration:
            return out
        except Exception as exc:
            if type(exc) is phalanx.TimeoutError:
                raise
            out.append(exc)


def worker_pids(pool: Pool) -> set[int]:
    return {p.pid for p in pool._pool}


def assert_all_dead(pids: set[int], timeout: float = 5.0) -> None:
    wait_until(
        lambda: not any(pid_exists(pid) for pid in pids),
        timeout=timeout,
        what=f"workers {sorted(pids)} gone",
    )


def stop(pool: Pool, seen: set[int] | None = None) -> None:
    """terminate() + join() in under STOP_WITHIN s; then no worker (seen or current) is alive."""
    pids = (seen or set()) | worker_pids(pool)
    t0 = time.monotonic()
    pool.terminate()
    bounded(pool.join, STOP_WITHIN)
    assert time.monotonic() - t0 < STOP_WITHIN
    assert_all_dead(pids)


def assert_pool_works(pool: Pool) -> None:
    assert pool.map_async(t.square, range(20)).get(timeout=DEADLINE) == SQUARES


@pytest.fixture
def pool(make_pool: Callable[..., Pool]) -> Pool:
    return make_pool(2)


# --- 1. the API, call by call -------------------------------------------------------------


def test_apply(pool: Pool) -> None:
    assert pool.apply(t.square, (7,)) == 49
    assert pool.apply(t.power, (2,), {"exp": 10}) == 1024


def test_apply_async_callback(pool: Pool) -> None:
    got: list[Any] = []
    done = threading.Event()

    def callback(value: Any) -> None:
        got.append(value)
        done.set()

    result = pool.apply_async(t.add, (2, 3), callback=callback, error_callback=got.append)
    assert result.get(timeout=DEADLINE) == 5
    assert done.wait(DEADLINE)
    assert got == [5]


def test_apply_async_error_callback(pool: Pool) -> None:
    errors: list[BaseException] = []
    result = pool.apply_async(
        t.raise_key_error, ("missing",), callback=errors.append, error_callback=errors.append
    )
    with pytest.raises(KeyError, match="missing"):
        result.get(timeout=DEADLINE)
    assert len(errors) == 1
    assert isinstance(errors[0], KeyError)


def test_map(pool: Pool) -> None:
    assert pool.map(t.square, range(20)) == SQUARES
    assert pool.map(t.square, iter(range(20))) == SQUARES
    assert pool.map(t.square, (x for x in range(20))) == SQUARES


def test_map_async_callback_gets_the_list(pool: Pool) -> None:
    got: list[Any] = []
    result = pool.map_async(t.square, range(20), callback=got.append)
    assert result.get(timeout=DEADLINE) == SQUARES
    assert got == [SQUARES]


def test_map_async_error_callback(pool: Pool) -> None:
    errors: list[BaseException] = []
    result = pool.map_async(t.fail_on_three, range(8), chunksize=1, error_callback=errors.append)
    with pytest.raises(ValueError, match="bad item 3"):
        result.get(timeout=DEADLINE)
    assert len(errors) == 1
    assert isinstance(errors[0], ValueError)


def test_imap(pool: Pool) -> None:
    assert list(pool.imap(t.square, range(20))) == SQUARES
    it = pool.imap(t.square, range(5))
    assert [it.next(timeout=DEADLINE) for _ in range(5)] == [0, 1, 4, 9, 16]
    with pytest.raises(StopIteration):
        it.next(timeout=DEADLINE)


def test_imap_unordered(pool: Pool) -> None:
    values, errors = drain(pool.imap_unordered(t.square, range(20)))
    assert errors == []
    assert sorted(values) == SQUARES


def test_imap_next_timeout(pool: Pool) -> None:
    it = pool.imap(t.sleep_then_return, [0.3])
    with pytest.raises(phalanx.TimeoutError):
        it.next(timeout=0.05)
    assert it.next(timeout=DEADLINE) == 0.3


def test_starmap(pool: Pool) -> None:
    pairs = [(i, i + 1) for i in range(10)]
    assert pool.starmap(t.add, pairs) == [a + b for a, b in pairs]
    assert pool.starmap(t.power, pairs, chunksize=3) == [a**b for a, b in pairs]


def test_starmap_async(pool: Pool) -> None:
    got: list[Any] = []
    result = pool.starmap_async(t.add, [(1, 2), (3, 4)], callback=got.append)
    assert result.get(timeout=DEADLINE) == [3, 7]
    assert got == [[3, 7]]


@pytest.mark.parametrize("chunksize", [1, 2, 3, 7, 20, 100])
def test_chunksize(pool: Pool, chunksize: int) -> None:
    assert pool.map(t.square, range(20), chunksize) == SQUARES
    assert pool.map_async(t.square, range(20), chunksize).get(timeout=DEADLINE) == SQUARES
    assert outcomes(pool.imap(t.square, range(20), chunksize)) == SQUARES
    values, _ = drain(pool.imap_unordered(t.square, range(20), chunksize))
    assert sorted(values) == SQUARES
    pairs = [(i, 2) for i in range(20)]
    assert pool.starmap(t.power, pairs, chunksize) == SQUARES


def test_empty_iterables(pool: Pool) -> None:
    assert pool.map(t.square, []) == []
    assert pool.map(t.square, iter([])) == []
    assert pool.map_async(t.square, []).get(timeout=DEADLINE) == []
    assert pool.starmap(t.add, []) == []
    assert pool.starmap_async(t.add, []).get(timeout=DEADLINE) == []
    assert outcomes(pool.imap(t.square, [])) == []
    assert drain(pool.imap_unordered(t.square, iter([]))) == ([], [])


def test_async_result_states(pool: Pool) -> None:
    result = pool.apply_async(t.sleep_then_return, (1.0, "done"))
    assert not result.ready()
    with pytest.raises(ValueError):
        result.successful()
    with pytest.raises(phalanx.TimeoutError):
        result.get(timeout=0.05)
    assert result.wait(timeout=0.01) is None
    assert not result.ready()
    result.wait(timeout=DEADLINE)
    assert result.ready()
    assert result.successful()
    assert result.get(timeout=0) == "done"

    failed = pool.apply_async(t.raise_key_error, ("k",))
    failed.wait(timeout=DEADLINE)
    assert failed.ready()
    assert not failed.successful()


def test_close_then_join_finishes_submitted_work(pool: Pool) -> None:
    result = pool.map_async(t.sleep_then_return, [0.1] * 4, chunksize=1)
    pool.close()
    with pytest.raises(ValueError):
        pool.apply_async(t.square, (1,))
    bounded(pool.join)
    assert result.ready()
    assert result.get(timeout=0) == [0.1] * 4
    assert_all_dead(worker_pids(pool))


def test_join_while_running_is_refused(pool: Pool) -> None:
    with pytest.raises(ValueError):
        pool.join()


def test_terminate(pool: Pool) -> None:
    assert pool.apply(t.square, (3,)) == 9
    stop(pool)
    with pytest.raises(ValueError):
        pool.map(t.square, [1])
    with pytest.raises(ValueError):
        pool.apply_async(t.square, (1,))


def test_every_call_racing_terminate_gets_an_outcome(make_pool: Callable[..., Pool]) -> None:
    """Calls submitted while another thread terminates the pool: each one either
    is refused (ValueError) or gets an outcome, a value or PoolTerminatedError;
    none is lost between the two (submit() takes no lock on its way in)."""
    with threads_switching_at_every_bytecode():
        _race_submits_with_terminate(make_pool)


def test_a_call_submitted_while_the_supervisor_is_awake_is_not_left_waiting(
    make_pool: Callable[..., Pool],
) -> None:
    """Each call made as the previous one's result arrives: the supervisor is
    still in its turn, past its last look at the queue, when the call comes.
    It used to skip waking it (its worker was busy when it last slept), and the
    call waited, its worker idle, for an event that never came."""
    pool = make_pool(1)
    with threads_switching_at_every_bytecode():
        for i in range(3000):
            assert pool.apply_async(t.square, (i,)).get(timeout=DEADLINE) == i * i


def test_taking_the_queue_while_calls_come_in_takes_each_call_once(
    make_pool: Callable[..., Pool],
) -> None:
    """The supervisor takes the whole queue to fail it (terminate, a breakdown)
    while callers add to it without a lock.  Taking it as a copy, then a clear(),
    dropped the calls added between the two: never run, never failed (CI lost one
    that raced terminate).  Here the queue is taken over and over, as calls come."""
    pool = make_pool(1)
    backend = pool._backend
    results: list[Any] = []

    def submit() -> None:
        for i in range(20000):
            results.append(pool.apply_async(t.square, (i,)))

    submitter = threading.Thread(target=submit, daemon=True)
    with threads_switching_at_every_bytecode():
        submitter.start()
        while submitter.is_alive():
            fail_all(backend._take_pending(), "taken by the test")
        submitter.join(DEADLINE)
    fail_all(backend._take_pending(), "taken by the test")
    for i, result in enumerate(results):
        result.wait(DEADLINE)
        assert result.ready(), f"call {i} was lost: neither run nor failed"
        try:
            assert result.get(0) == i * i
        except PoolTerminatedError:
            pass


def _race_submits_with_terminate(make_pool: Callable[..., Pool]) -> None:
    for _ in range(10):
        pool = make_pool(2)
        results: list[Any] = []
        refused = threading.Event()

        def submit_until_refused(
            pool: Pool = pool, results: list[Any] = results, refused: threading.Event = refused
        ) -> None:
            try:
                while True:
                    results.append(pool.apply_async(t.square, (3,)))
            except ValueError:
                refused.set()

        submitter = threading.Thread(target=submit_until_refused)
        submitter.start()
        wait_until(lambda results=results: len(results) > 2000, what="calls submitted")
        pool.terminate()
        submitter.join(DEADLINE)
        assert refused.is_set()
        for result in results:
            try:
                assert result.get(timeout=DEADLINE) == 9
            except PoolTerminatedError:
                pass


def _socket_inodes(pid: int) -> set[str]:
    return {target for target in fd_targets(pid) if target.startswith("socket:")}


def test_forked_workers_hold_no_end_of_each_others_links() -> None:
    """Workers are forked back to back: each must close the worker's end of
    every other link, of the workers forked after it too (a copy would keep a
    dead worker's link from hanging up)."""
    pool = phalanx.get_context("fork").Pool(3)
    try:
        assert pool.map(t.square, range(30), chunksize=1) == [x * x for x in range(30)]
        ours = _socket_inodes(os.getpid())
        held = {pid: _socket_inodes(pid) - ours for pid in worker_pids(pool)}
    finally:
        pool.terminate()
        bounded(pool.join, STOP_WITHIN)
    assert len(held) == 3
    for pid, inodes in held.items():
        for other, their_inodes in held.items():
            if other != pid:
                assert not inodes & their_inodes, (pid, other)


def test_context_manager_terminates_on_exit(ctx: Any) -> None:
    with ctx.Pool(2) as pool:
        assert pool.map(t.square, range(5)) == SQUARES[:5]
        pids = worker_pids(pool)
        slow = pool.apply_async(t.sleep_then_return, (30,))
    t0 = time.monotonic()
    bounded(pool.join, STOP_WITHIN)
    assert time.monotonic() - t0 < STOP_WITHIN
    assert_all_dead(pids)
    with pytest.raises(PoolTerminatedError):
        slow.get(timeout=DEADLINE)
    with pytest.raises(ValueError):
        pool.map(t.square, [1])
    with pytest.raises(ValueError), pool:
        pass


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda ctx: ctx.Pool(0), ValueError),
        (lambda ctx: ctx.Pool(-1), ValueError),
        (lambda ctx: ctx.Pool(2, maxtasksperchild=0), ValueError),
        (lambda ctx: ctx.Pool(2, maxtasksperchild=-3), ValueError),
        (lambda ctx: ctx.Pool(2, initializer=42), TypeError),
        (lambda ctx: Pool(2, context=ctx, retries=-1), ValueError),
    ],
    ids=["zero", "negative", "maxtasks-zero", "maxtasks-negative", "initializer", "retries"],
)
def test_invalid_pool_arguments(ctx: Any, make: Callable[[Any], Pool], error: type) -> None:
    with pytest.raises(error):
        make(ctx)


@pytest.mark.parametrize(
    "call",
    [
        lambda p: p.map(t.square, [1], chunksize=0),
        lambda p: p.map_async(t.square, [1], chunksize=-1),
        lambda p: p.starmap(t.add, [(1, 2)], chunksize=0),
        lambda p: p.imap(t.square, [1], chunksize=0),
        lambda p: p.imap_unordered(t.square, [1], chunksize=0),
        lambda p: p.apply_async(t.square, (1,), timeout=-1),
        lambda p: p.apply(t.square, (1,), timeout=0),
        lambda p: p.map(t.square, [1], timeout=-1),
        lambda p: p.imap(t.square, [1], timeout=-1),
        lambda p: p.starmap_async(t.add, [(1, 2)], timeout=-0.5),
    ],
    ids=[
        "map-chunksize",
        "map_async-chunksize",
        "starmap-chunksize",
        "imap-chunksize",
        "imap_unordered-chunksize",
        "apply_async-timeout",
        "apply-timeout-zero",
        "map-timeout",
        "imap-timeout",
        "starmap_async-timeout",
    ],
)
def test_invalid_call_arguments(pool: Pool, call: Callable[[Pool], Any]) -> None:
    with pytest.raises(ValueError):
        call(pool)
    assert pool.apply(t.square, (4,)) == 16


def test_pool_cannot_be_pickled(pool: Pool) -> None:
    with pytest.raises(NotImplementedError):
        pickle.dumps(pool)
    # Nor sent to a worker: that task fails, the pool goes on.
    with pytest.raises(NotImplementedError):
        pool.apply_async(t.attribute_v, (pool,)).get(timeout=DEADLINE)
    assert_pool_works(pool)


def test_unpicklable_argument_fails_that_task_only(pool: Pool) -> None:
    out = outcomes(pool.imap(t.attribute_v, [1, threading.Lock(), 3]))
    assert out[0] == 1
    assert isinstance(out[1], TypeError)
    assert out[2] == 3


def test_unpicklable_arguments_in_batches_do_not_hang(pool: Pool) -> None:
    # Warm: short tasks make the pool send many chunks per datagram; a batch
    # that cannot be pickled is split, and only the culprits fail.
    [r.get(timeout=DEADLINE) for r in [pool.apply_async(t.square, (i,)) for i in range(2000)]]
    with pytest.raises(TypeError):
        bounded(lambda: pool.map(t.attribute_v, [threading.Lock()] * 10))
    items: list[Any] = list(range(50))
    items[17] = threading.Lock()
    out = outcomes(pool.imap(t.attribute_v, items, chunksize=1))
    assert isinstance(out[17], TypeError)
    assert [v for i, v in enumerate(out) if i != 17] == [i for i in range(50) if i != 17]


def test_unpicklable_result_is_maybe_encoding_error(pool: Pool) -> None:
    pids = worker_pids(pool)
    with pytest.raises(MaybeEncodingError, match="lock"):
        pool.apply_async(t.return_lock, (1,)).get(timeout=DEADLINE)
    assert_pool_works(pool)
    assert worker_pids(pool) == pids


def test_unpicklable_exception_is_named(pool: Pool) -> None:
    with pytest.raises(MaybeEncodingError) as info:
        pool.apply_async(t.crash_task, (t.RaisesUnpicklable(),)).get(timeout=DEADLINE)
    assert "UnpicklableError" in str(info.value)
    assert "this exception holds a lock" in str(info.value)


def test_exception_that_cannot_be_rebuilt_does_not_hang(pool: Pool) -> None:
    with pytest.raises(Exception):  # noqa: B017 - whatever rebuilding it raised
        pool.apply_async(t.raise_unrebuildable, (1,)).get(timeout=DEADLINE)
    assert_pool_works(pool)


def test_failing_callback_does_not_break_the_pool(pool: Pool, capfd: Any) -> None:
    def bad_callback(value: Any) -> None:
        raise RuntimeError("callback failed on purpose")

    result = pool.apply_async(t.square, (3,), callback=bad_callback)
    assert result.get(timeout=DEADLINE) == 9
    assert_pool_works(pool)
    assert "callback failed on purpose" in capfd.readouterr().err


# --- 2. exceptions from workers ------------------------------------------------------------


def check_remote(exc: BaseException) -> None:
    assert isinstance(exc, ValueError)
    assert str(exc) == "bad item 3"
    cause = exc.__cause__
    assert isinstance(cause, RemoteTraceback)
    text = str(cause)
    assert 'raise ValueError(f"bad item {x}")' in text
    assert "fail_on_three" in text
    assert "_pool_targets.py" in text


def test_worker_exception_keeps_type_and_remote_traceback(pool: Pool) -> None:
    with pytest.raises(ValueError) as info:
        pool.apply(t.fail_on_three, (3,))
    check_remote(info.value)
    with pytest.raises(ValueError) as info:
        pool.map(t.fail_on_three, range(8))
    check_remote(info.value)
    with pytest.raises(ValueError) as info:
        pool.apply_async(t.fail_on_three, (3,)).get(timeout=DEADLINE)
    check_remote(info.value)
    out = outcomes(pool.imap(t.fail_on_three, range(6)))
    assert out[:3] == [0, 1, 4]
    assert out[4:] == [16, 25]
    check_remote(out[3])
    assert_pool_works(pool)


def test_system_exit_in_a_task_is_reported(pool: Pool) -> None:
    with pytest.raises(SystemExit):
        pool.apply_async(t.exit_task, (3,)).get(timeout=DEADLINE)
    assert_pool_works(pool)


# --- 3. the crash matrix --------------------------------------------------------------------

# id -> (expected error type, message fragment, exitcode, signal name)
CRASHES: dict[str, tuple[type[BaseException], str, int | None, str | None]] = {
    "sigkill": (WorkerLostError, "SIGKILL(-9)", -signal.SIGKILL, "SIGKILL"),
    "segfault": (WorkerLostError, "SIGSEGV(-11)", -signal.SIGSEGV, "SIGSEGV"),
    "os_exit": (WorkerLostError, f"code {t.EXIT_CODE}", t.EXIT_CODE, None),
    "pickling_result": (WorkerLostError, f"code {t.PICKLE_EXIT_CODE}", t.PICKLE_EXIT_CODE, None),
    "unpickling_task": (
        WorkerLostError,
        f"code {t.UNPICKLE_EXIT_CODE}",
        t.UNPICKLE_EXIT_CODE,
        None,
    ),
    "unpicklable_exception": (MaybeEncodingError, "cannot pickle '_thread.lock'", None, None),
}
CRASH_AT = 3
CRASH_ITEMS = 8


def crash_item(case: str, tmp_path: Path) -> Any:
    return {
        "sigkill": lambda: t.KillFromOutside(str(tmp_path / "victim.json")),
        "segfault": t.Segfault,
        "os_exit": t.HardExit,
        "pickling_result": t.ReturnsExitingResult,
        "unpickling_task": t.ExitsWhenUnpickled,
        "unpicklable_exception": t.RaisesUnpicklable,
    }[case]()


@pytest.mark.parametrize("call", ["map", "imap", "imap_unordered", "apply_async"])
@pytest.mark.parametrize("case", list(CRASHES))
def test_crash_matrix(make_pool: Callable[..., Pool], tmp_path: Path, case: str, call: str) -> None:
    error_type, fragment, exitcode, signame = CRASHES[case]
    pool = make_pool(2)
    before = worker_pids(pool)
    bystander = pool.apply_async(t.square, (7,))
    assert bystander.get(timeout=DEADLINE) == 49

    killed: dict[str, Any] = {}
    killer = None
    if case == "sigkill":

        def kill_victim() -> None:
            try:
                pid = wait_for_json(tmp_path / "victim.json")["pid"]
                killed["pid"] = pid
                os.kill(pid, signal.SIGKILL)
            except BaseException as exc:
                killed["error"] = exc

        killer = threading.Thread(target=kill_victim, daemon=True)
        killer.start()

    items: list[Any] = list(range(CRASH_ITEMS))
    items[CRASH_AT] = crash_item(case, tmp_path)
    expected = {i: i * i for i in range(CRASH_ITEMS) if i != CRASH_AT}

    if call == "map":
        with pytest.raises(error_type) as info:
            bounded(lambda: pool.map(t.crash_task, items, chunksize=1))
        error = info.value
    elif call == "imap":
        out = outcomes(pool.imap(t.crash_task, items))
        assert len(out) == CRASH_ITEMS
        assert {i: v for i, v in enumerate(out) if i != CRASH_AT} == expected
        error = out[CRASH_AT]
    elif call == "imap_unordered":
        values, errors = drain(pool.imap_unordered(t.crash_task, items))
        assert sorted(values) == sorted(expected.values())
        assert len(errors) == 1
        error = errors[0]
    else:
        results = [pool.apply_async(t.crash_task, (item,)) for item in items]
        out = []
        for result in results:
            try:
                out.append(result.get(timeout=DEADLINE))
            except Exception as exc:
                out.append(exc)
        assert {i: v for i, v in enumerate(out) if i != CRASH_AT} == expected
        error = out[CRASH_AT]

    if killer is not None:
        killer.join(DEADLINE)
        assert "error" not in killed, killed.get("error")

    assert isinstance(error, error_type), repr(error)
    assert fragment in str(error)
    if error_type is WorkerLostError:
        assert isinstance(error, WorkerLostError)
        assert error.exitcode == exitcode
        assert error.signal == signame
        if case == "unpickling_task":
            # Small tasks travel several to a datagram: a worker that dies while
            # unpickling one blames nobody yet; each of them then runs alone,
            # so the culprit dies in a replacement worker and alone is failed.
            assert error.pid not in (None, os.getpid())
        else:
            assert error.pid in before
        if case == "sigkill":
            assert error.pid == killed["pid"]
        assert "crash_task" in (error.task or "")
        assert "crash_task" in str(error)
    else:
        # Nothing died: the same two workers are still there.
        assert worker_pids(pool) == before

    assert_pool_works(pool)
    stop(pool, before)


LONG_RUN = 3000


@pytest.mark.parametrize("call", ["map", "imap_unordered"])
@pytest.mark.parametrize("crash", ["kill_self", "os_exit"])
def test_crash_in_a_long_run_of_short_tasks(
    make_pool: Callable[..., Pool], call: str, crash: str
) -> None:
    """Short tasks travel and are answered many to a datagram: a crash still blames one.

    The worker holds answers of finished chunks for a moment; when it dies,
    the chunk it was running fails, finished answers it had not sent yet run
    again, and nothing else is lost or failed.
    """
    pool = make_pool(2)
    assert pool.map(t.square, range(LONG_RUN), chunksize=1) == [i * i for i in range(LONG_RUN)]
    at = LONG_RUN // 2
    items: list[Any] = list(range(LONG_RUN))
    items[at] = t.KillSelf() if crash == "kill_self" else t.HardExit()
    expected = {i: i * i for i in range(LONG_RUN) if i != at}
    if call == "map":
        with pytest.raises(WorkerLostError) as info:
            bounded(lambda: pool.map(t.crash_task, items, chunksize=1))
        error: BaseException = info.value
    else:
        values, errors = drain(pool.imap_unordered(t.crash_task, items))
        assert Counter(values) == Counter(expected.values())
        assert len(errors) == 1, errors
        error = errors[0]
    assert isinstance(error, WorkerLostError), repr(error)
    assert f"[item {at}]" in str(error)
    if crash == "kill_self":
        assert error.signal == "SIGKILL"
    else:
        assert error.exitcode == t.EXIT_CODE
    assert_pool_works(pool)


def test_answers_of_short_tasks_are_not_held_behind_a_long_one(
    make_pool: Callable[..., Pool], tmp_path: Path
) -> None:
    """Answers wait to share a datagram only briefly: a long task does not hold them back.

    The long task ends only once the test has every short result, so answers
    held until the worker's next pause would hang this test.
    """
    pool = make_pool(1)
    release = tmp_path / "release"
    pool.map(t.square, range(200), chunksize=1)  # short chunks measured: answers are grouped
    shorts = [pool.apply_async(t.square, (i,)) for i in range(50)]
    long = pool.apply_async(t.wait_for_file, (str(release),))
    try:
        assert [r.get(timeout=DEADLINE) for r in shorts] == [i * i for i in range(50)]
    finally:
        release.touch()
    assert long.get(timeout=DEADLINE) == "released"


# --- 4. per-task timeouts -------------------------------------------------------------------


def test_apply_timeout(pool: Pool) -> None:
    assert_pool_works(pool)
    others = [pool.apply_async(t.square, (i,)) for i in range(6)]
    t0 = time.monotonic()
    slow = pool.apply_async(t.sleep_then_return, (30,), timeout=0.5)
    with pytest.raises(TaskTimeoutError) as info:
        slow.get(timeout=DEADLINE)
    assert time.monotonic() - t0 < 5
    assert isinstance(info.value, phalanx.TimeoutError)
    assert issubclass(TaskTimeoutError, phalanx.TimeoutError)
    assert "0.5 s" in str(info.value)
    assert "sleep_then_return(30)" in str(info.value)
    assert [r.get(timeout=DEADLINE) for r in others] == SQUARES[:6]
    assert_pool_works(pool)


def test_apply_blocking_timeout(pool: Pool) -> None:
    with pytest.raises(TaskTimeoutError):
        bounded(lambda: pool.apply(t.sleep_then_return, (30,), timeout=0.3))
    assert pool.apply(t.sleep_then_return, (0.01, "fast"), timeout=DEADLINE) == "fast"


def test_map_timeout_fails_only_the_slow_item(pool: Pool) -> None:
    assert_pool_works(pool)
    items = [0, 1, 2, 3, 4, -30]
    t0 = time.monotonic()
    with pytest.raises(TaskTimeoutError, match=r"\[item 5\]"):
        bounded(lambda: pool.map(t.nap_square, items, timeout=1.0))
    assert time.monotonic() - t0 < 6
    out = outcomes(pool.imap(t.nap_square, items, timeout=1.0))
    assert out[:5] == [0, 1, 4, 9, 16]
    assert isinstance(out[5], TaskTimeoutError)
    assert_pool_works(pool)


def test_timeout_does_not_count_worker_startup(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(1, t.slow_init, (1.0,))
    assert pool.apply_async(t.square, (3,), timeout=0.5).get(timeout=DEADLINE) == 9


# --- large chunks (shared-memory segments) ------------------------------------------------

BIG = 300_000  # bytes: well over the largest message that travels inline


def test_large_chunks(pool: Pool) -> None:
    items = [("len", bytes([i]) * (BIG + i)) for i in range(6)]
    for _ in range(3):  # segments come back and are reused
        assert pool.map(t.payload_len, items, chunksize=1) == [BIG + i for i in range(6)]
        assert pool.map(t.payload_len, items, chunksize=3) == [BIG + i for i in range(6)]
    assert outcomes(pool.imap(t.payload_len, items)) == [BIG + i for i in range(6)]
    assert pool.apply(bytes.upper, (b"x" * BIG,)) == b"X" * BIG


def test_large_chunk_on_a_dying_worker(pool: Pool) -> None:
    items: list[tuple[str, bytes]] = [("len", b"a" * BIG)] * 6
    items[2] = ("die", b"d" * BIG)
    out = outcomes(pool.imap(t.payload_len, items))
    assert isinstance(out[2], WorkerLostError)
    assert f"code {t.EXIT_CODE}" in str(out[2])
    assert [out[i] for i in (0, 1, 3, 4, 5)] == [BIG] * 5
    assert pool.map(t.payload_len, [("len", b"b" * BIG)] * 6) == [BIG] * 6


def test_segment_still_mapped_in_a_worker_is_not_reused(make_pool: Callable[..., Pool]) -> None:
    np = pytest.importorskip("numpy")
    pool = make_pool(1)  # every chunk on the same worker
    arrays = [np.full(BIG // 8, i, dtype=np.int64) for i in range(1, 7)]
    sums = [int(a.sum()) for a in arrays]
    assert pool.map(t.keep_and_sum, arrays, chunksize=1) == sums
    # Overwriting a segment the worker still maps would change the arrays it kept.
    assert pool.map(t.payload_len, [("len", b"\xff" * BIG)] * 6) == [BIG] * 6
    assert pool.apply(t.kept_sums) == sums


# --- 5. worker lifetime: maxtasksperchild, initializer, terminate --------------------------


def test_maxtasksperchild_recycles_workers(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(2, None, (), 2)
    before = worker_pids(pool)
    out = pool.map_async(t.square_with_pid, range(12), chunksize=1).get(timeout=DEADLINE)
    assert [v for v, _ in out] == [x * x for x in range(12)]
    per_worker = Counter(pid for _, pid in out)
    assert all(n <= 2 for n in per_worker.values()), per_worker
    assert len(per_worker) >= 6
    assert set(per_worker) - before
    stop(pool, before | set(per_worker))


def test_initializer_runs_in_each_worker(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(2, t.init_global, ("ready",))
    out = pool.map_async(t.get_init_value, range(10), chunksize=1).get(timeout=DEADLINE)
    assert {value for _, value in out} == {"ready"}
    assert t.INIT_VALUE == "not initialized"  # the test process's own copy


def test_initializer_runs_again_in_replacement_workers(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(2, t.init_global, ("ready",), 1)
    out = pool.map_async(t.get_init_value, range(6), chunksize=1).get(timeout=DEADLINE)
    assert len({pid for pid, _ in out}) == 6
    assert {value for _, value in out} == {"ready"}


def test_failing_initializer_breaks_the_pool(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(2, t.failing_init)
    t0 = time.monotonic()
    with pytest.raises(PoolTerminatedError, match="initializer") as info:
        # (The workers may have failed three times already: then apply_async raises.)
        pool.apply_async(t.square, (1,)).get(timeout=DEADLINE)
    assert time.monotonic() - t0 < 10
    assert "initializer failed on purpose" in str(info.value)
    with pytest.raises(PoolTerminatedError, match="initializer"):
        pool.map_async(t.square, range(3)).get(timeout=DEADLINE)
    stop(pool)


def test_terminate_during_long_map(make_pool: Callable[..., Pool], tmp_path: Path) -> None:
    pool = make_pool(2)
    before = worker_pids(pool)
    result = pool.map_async(t.announce_then_sleep_item, [(str(tmp_path), 30)] * 6, chunksize=1)
    wait_until(lambda: len(os.listdir(tmp_path)) == 2, what="both workers busy")
    t0 = time.monotonic()
    pool.terminate()
    assert time.monotonic() - t0 < STOP_WITHIN
    bounded(pool.join, STOP_WITHIN)
    assert time.monotonic() - t0 < STOP_WITHIN
    with pytest.raises(PoolTerminatedError):
        result.get(timeout=DEADLINE)
    assert_all_dead(before)


def test_terminate_during_imap(make_pool: Callable[..., Pool], tmp_path: Path) -> None:
    pool = make_pool(2)
    before = worker_pids(pool)
    it = pool.imap(t.announce_then_sleep_item, [(str(tmp_path), 30)] * 6)
    wait_until(lambda: len(os.listdir(tmp_path)) == 2, what="both workers busy")
    stop(pool, before)
    values, errors = drain(it)
    assert values == []
    assert errors
    assert all(isinstance(e, PoolTerminatedError) for e in errors)


# --- 6. a task that cannot be unpickled in the worker ----------------------------------------


@pytest.fixture
def unimportable_thing(tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """Makes an instance of a class whose module the workers cannot import.

    Call it once the pool's workers exist.  The module is written, imported
    here, then deleted (and its directory taken off ``sys.path``) before any
    task carries it: fork workers started earlier, spawn and forkserver
    workers alike fail to import it.
    """
    names: list[str] = []

    def make() -> Any:
        name = f"phalanx_vanishing_{uuid.uuid4().hex}"
        names.append(name)
        directory = tmp_path / name
        directory.mkdir()
        source = directory / f"{name}.py"
        source.write_text(
            "class Thing:\n    def __init__(self, v):\n        self.v = v\n", encoding="utf-8"
        )
        sys.path.insert(0, str(directory))
        try:
            module = importlib.import_module(name)
        finally:
            sys.path.remove(str(directory))
        source.unlink()
        importlib.invalidate_caches()
        return module.Thing(5)

    yield make
    for name in names:
        sys.modules.pop(name, None)


def test_task_that_cannot_be_unpickled(
    make_pool: Callable[..., Pool], unimportable_thing: Callable[[], Any]
) -> None:
    pool = make_pool(2)
    thing = unimportable_thing()
    before = worker_pids(pool)
    assert pool.apply(t.attribute_v, (1,)) == 1  # the function reached one worker already
    result = pool.apply_async(t.attribute_v, (thing,))
    with pytest.raises(RuntimeError, match="could not unpickle") as info:
        result.get(timeout=DEADLINE)
    assert "ModuleNotFoundError" in str(info.value)
    assert isinstance(info.value.__cause__, RemoteTraceback)
    with pytest.raises(RuntimeError, match="could not unpickle"):
        bounded(lambda: pool.map(t.attribute_v, [1, 2, thing, 4], chunksize=1))
    # The workers survive, and still run the same function.
    assert pool.map_async(t.attribute_v, range(10), chunksize=1).get(timeout=DEADLINE) == list(
        range(10)
    )
    assert worker_pids(pool) == before


def test_unpicklable_task_does_not_fail_the_next_one(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(1)  # both chunks go to the same worker, the function with the first
    out = outcomes(pool.imap(t.attribute_v, [t.SlowlyFailsToUnpickle(), 1, 2, 3]))
    assert isinstance(out[0], RuntimeError)
    assert "could not unpickle" in str(out[0])
    assert out[1:] == [1, 2, 3]


# --- 7. lambdas and closures ---------------------------------------------------------------


def test_lambdas_and_closures(pool: Pool) -> None:
    offset = 100

    def closure(x: int) -> int:
        return x + offset

    def make_multiplier(n: int) -> Callable[[int], int]:
        return lambda x: x * n

    assert pool.map(lambda x: x + 1, range(5)) == [1, 2, 3, 4, 5]
    assert pool.map(closure, range(3)) == [100, 101, 102]
    assert pool.apply_async(make_multiplier(3), (4,)).get(timeout=DEADLINE) == 12
    assert outcomes(pool.imap(make_multiplier(2), range(4))) == [0, 2, 4, 6]
    assert pool.starmap(lambda a, b: a * b, [(2, 3), (4, 5)]) == [6, 20]
    # Two different lambdas with the same name are not confused for one another.
    assert pool.map(lambda x: -x, range(3)) == [0, -1, -2]


# --- 8. imap over generators -----------------------------------------------------------------


def test_imap_endless_generator(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(2)
    before = worker_pids(pool)
    it = pool.imap(t.square, itertools.count())
    assert [it.next(timeout=DEADLINE) for _ in range(50)] == [x * x for x in range(50)]
    it2 = pool.imap_unordered(t.square, itertools.count(), chunksize=3)
    assert len({it2.next(timeout=DEADLINE) for _ in range(30)}) == 30
    stop(pool, before)


@pytest.mark.parametrize("chunksize", [1, 100])
def test_imap_reads_its_input_a_bounded_window_ahead(pool: Pool, chunksize: int) -> None:
    """The feeder stays a window ahead of the caller (the README's 2048 items),
    however fast the workers are: an endless input is not read into memory."""
    from phalanx.pool import _READAHEAD_ITEMS

    pulled = [0]

    def counting() -> Iterator[int]:
        for x in itertools.count():
            pulled[0] += 1
            yield x

    it = pool.imap_unordered(t.square, counting(), chunksize=chunksize)
    taken = [it.next(timeout=DEADLINE) for _ in range(10)]
    assert len(taken) == 10
    window_items = -(-_READAHEAD_ITEMS // chunksize) * chunksize
    deadline = time.monotonic() + DEADLINE
    while pulled[0] < window_items and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # room to read on, were it unbounded
    # Credit comes back a chunk at a time as the caller takes results: at most
    # the 10 taken (and the chunk they came in) beyond the window.
    assert window_items <= pulled[0] <= window_items + 10 + chunksize


def raising_generator(n: int) -> Iterator[int]:
    yield from range(n)
    raise ZeroDivisionError("the input failed")


def test_imap_generator_that_raises(pool: Pool) -> None:
    out = outcomes(pool.imap(t.square, raising_generator(5)))
    assert out[:5] == [0, 1, 4, 9, 16]
    assert len(out) == 6
    assert isinstance(out[5], ZeroDivisionError)
    values, errors = drain(pool.imap_unordered(t.square, raising_generator(5)))
    assert sorted(values) == [0, 1, 4, 9, 16]
    assert [type(e) for e in errors] == [ZeroDivisionError]
    assert_pool_works(pool)


def test_imap_generator_that_raises_mid_chunk(pool: Pool) -> None:
    # As the stdlib (CPython's suite checks it): the chunk being filled when the
    # input raised fails as a whole, right after the previous full chunk.
    out = outcomes(pool.imap(t.square, raising_generator(5), chunksize=2))
    assert out[:4] == [0, 1, 4, 9]
    assert isinstance(out[4], ZeroDivisionError)
    assert len(out) == 5


def test_close_join_with_unconsumed_imap(pool: Pool) -> None:
    it = pool.imap(t.square, range(100))
    assert it.next(timeout=DEADLINE) == 0
    pool.close()
    bounded(pool.join, 3)
    assert outcomes(it) == [x * x for x in range(1, 100)]


# --- 9. retries ------------------------------------------------------------------------------


def test_retries_rerun_a_task_whose_worker_died(
    make_pool: Callable[..., Pool], tmp_path: Path
) -> None:
    pool = make_pool(2, retries=1)
    marker = tmp_path / "died-once"
    assert pool.apply_async(t.die_once, (str(marker), "second try")).get(timeout=DEADLINE) == (
        "second try"
    )
    assert marker.exists()
    markers = [str(tmp_path / f"m{i}") for i in range(6)]
    assert pool.starmap_async(t.die_once, [(m, i) for i, m in enumerate(markers)]).get(
        timeout=DEADLINE
    ) == list(range(6))


def test_retries_run_out(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(2, retries=1)
    with pytest.raises(WorkerLostError, match="after 2 attempts") as info:
        pool.apply_async(t.always_die, (1,)).get(timeout=DEADLINE)
    assert info.value.exitcode == 3
    assert_pool_works(pool)


def test_no_retries_by_default(pool: Pool, tmp_path: Path) -> None:
    with pytest.raises(WorkerLostError, match="SIGKILL"):
        pool.apply_async(t.die_once, (str(tmp_path / "m"), 1)).get(timeout=DEADLINE)


def test_context_pool_accepts_retries(ctx: Any, tmp_path: Path) -> None:
    pool = ctx.Pool(2, retries=1)
    try:
        result = pool.apply_async(t.die_once, (str(tmp_path / "m"), "ok"))
        assert result.get(timeout=DEADLINE) == "ok"
    finally:
        pool.terminate()
        bounded(pool.join, STOP_WITHIN)


# --- 10. Ctrl-C ------------------------------------------------------------------------------

CTRL_C_SCRIPT = """\
import sys
sys.path.insert(0, {tests!r})
import phalanx
import _pool_targets as t

if __name__ == "__main__":
    method, call, ready = sys.argv[1:4]
    pool = phalanx.get_context(method).Pool(2)
    print(" ".join(str(p.pid) for p in pool._pool), flush=True)
    work = [(ready, 30)] * 4
    if call == "map":
        pool.map(t.announce_then_sleep_item, work, chunksize=1)
    elif call == "imap":
        for _ in pool.imap(t.announce_then_sleep_item, work):
            pass
    else:
        pool.apply_async(t.announce_then_sleep, work[0]).get()
    print("not interrupted", flush=True)
"""


@pytest.mark.parametrize("target", ["main", "group"])
@pytest.mark.parametrize("call", ["map", "imap", "get"])
def test_ctrl_c_terminates_the_pool(
    start_method: str, tmp_path: Path, call: str, target: str
) -> None:
    """SIGINT to the program alone, or to its whole process group (a terminal's Ctrl-C)."""
    script = tmp_path / "ctrl_c.py"
    script.write_text(CTRL_C_SCRIPT.format(tests=TESTS_DIR), encoding="utf-8")
    ready = tmp_path / "ready"
    ready.mkdir()
    busy = 1 if call == "get" else 2
    proc = subprocess.Popen(
        [sys.executable, str(script), start_method, call, str(ready)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_until(lambda: len(os.listdir(ready)) >= busy, what="tasks running")
        t0 = time.monotonic()
        if target == "main":
            os.kill(proc.pid, signal.SIGINT)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=15)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            _kill_session(proc.pid)
            proc.communicate(timeout=10)
    pids = {int(pid) for pid in out.split("\n", 1)[0].split()}
    assert len(pids) == 2
    assert {int(name) for name in os.listdir(ready)} <= pids
    assert elapsed < 5, err
    assert "KeyboardInterrupt" in err
    assert "not interrupted" not in out
    assert proc.returncode == -signal.SIGINT, err
    assert_all_dead(pids)
    try:
        wait_until(lambda: not session_members(proc.pid), timeout=5, what="session empty")
    except AssertionError:
        survivors = session_members(proc.pid)
        _kill_session(proc.pid)
        raise AssertionError(f"processes outlived the interrupted program: {survivors}") from None


# --- 11. thread pools ------------------------------------------------------------------------


@pytest.fixture(params=["ThreadPool", "dummy.Pool"])
def thread_pool(request: pytest.FixtureRequest) -> Iterator[Pool]:
    pool = ThreadPool(2) if request.param == "ThreadPool" else phalanx.dummy.Pool(2)
    yield pool
    pool.terminate()
    bounded(pool.join, STOP_WITHIN)


def test_thread_pool_basics(thread_pool: Pool) -> None:
    assert isinstance(thread_pool, ThreadPool)
    assert thread_pool.map(t.square, range(20)) == SQUARES
    assert thread_pool.map(t.square, range(20), chunksize=3) == SQUARES
    assert outcomes(thread_pool.imap(t.square, range(20))) == SQUARES
    assert sorted(drain(thread_pool.imap_unordered(t.square, range(20)))[0]) == SQUARES
    assert thread_pool.starmap(t.add, [(1, 2), (3, 4)]) == [3, 7]
    got: list[Any] = []
    result = thread_pool.apply_async(t.add, (2, 3), callback=got.append)
    assert result.get(timeout=DEADLINE) == 5
    assert got == [5]
    assert thread_pool.apply(t.power, (3,), {"exp": 3}) == 27
    # Nothing is pickled: lambdas, locks and the like go through.
    lock = threading.Lock()
    assert thread_pool.apply_async(lambda: lock, ()).get(timeout=DEADLINE) is lock
    assert outcomes(thread_pool.imap(lambda x: x, itertools.islice(itertools.count(), 5))) == [
        0,
        1,
        2,
        3,
        4,
    ]


def test_thread_pool_exceptions(thread_pool: Pool) -> None:
    with pytest.raises(ValueError, match="bad item 3"):
        thread_pool.map(t.fail_on_three, range(5))
    out = outcomes(thread_pool.imap(t.fail_on_three, range(5)))
    assert isinstance(out[3], ValueError)
    assert [out[i] for i in (0, 1, 2, 4)] == [0, 1, 4, 16]


@pytest.mark.parametrize(
    "call",
    [
        lambda p: p.apply_async(t.square, (1,), timeout=1),
        lambda p: p.apply(t.square, (1,), timeout=1),
        lambda p: p.map(t.square, [1], timeout=1),
        lambda p: p.map_async(t.square, [1], timeout=1),
        lambda p: p.imap(t.square, [1], timeout=1),
        lambda p: p.imap_unordered(t.square, [1], timeout=1),
        lambda p: p.starmap(t.add, [(1, 2)], timeout=1),
    ],
    ids=["apply_async", "apply", "map", "map_async", "imap", "imap_unordered", "starmap"],
)
def test_thread_pool_refuses_timeouts(thread_pool: Pool, call: Callable[[Pool], Any]) -> None:
    with pytest.raises(ValueError, match="timeout"):
        call(thread_pool)


def test_thread_pool_close_join_and_initializer() -> None:
    seen: list[str] = []
    pool = ThreadPool(2, seen.append, ("init",))
    try:
        result = pool.map_async(t.sleep_then_return, [0.05] * 4, chunksize=1)
        pool.close()
        bounded(pool.join)
        assert result.get(timeout=0) == [0.05] * 4
        assert seen == ["init", "init"]
        with pytest.raises(ValueError):
            pool.apply_async(t.square, (1,))
    finally:
        pool.terminate()
        bounded(pool.join, STOP_WITHIN)


def test_thread_pool_context_manager() -> None:
    with phalanx.dummy.Pool(2) as pool:
        assert pool.map(t.square, range(4)) == SQUARES[:4]
    with pytest.raises(ValueError):
        pool.map(t.square, [1])


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_thread_pool_system_exit_in_task_is_reported() -> None:
    pool = ThreadPool(1)
    try:
        with pytest.raises(SystemExit):
            pool.apply_async(t.exit_task, (3,)).get(timeout=2)
        assert pool.apply_async(t.square, (3,)).get(timeout=2) == 9
    finally:
        pool.terminate()
        bounded(pool.join, STOP_WITHIN)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_thread_pool_failing_initializer_does_not_hang() -> None:
    pool = ThreadPool(2, t.failing_init)
    try:
        with pytest.raises(PoolTerminatedError):
            pool.apply_async(t.square, (3,)).get(timeout=2)
    finally:
        pool.terminate()
        bounded(pool.join, STOP_WITHIN)


# --- 12. progress bars -----------------------------------------------------------------------


@pytest.fixture(params=["plain", "tqdm"])
def bar_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "plain":
        monkeypatch.setitem(sys.modules, "tqdm", None)
        monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    else:
        pytest.importorskip("tqdm")
    return str(request.param)


def test_progress(pool: Pool, bar_kind: str, capfd: pytest.CaptureFixture[str]) -> None:
    assert pool.map(t.square, range(20), progress=True) == SQUARES
    err = capfd.readouterr().err
    assert "square: 100%" in err
    assert "20/20" in err

    assert outcomes(pool.imap(t.square, range(20), progress="squaring")) == SQUARES
    err = capfd.readouterr().err
    assert "squaring: 100%" in err
    assert "20/20" in err

    values, _ = drain(pool.imap_unordered(t.square, iter(range(20)), progress=True))
    assert sorted(values) == SQUARES
    err = capfd.readouterr().err
    assert "square: 20" in err  # no total known: a count

    assert pool.starmap(t.add, [(1, 2)] * 10, progress=True) == [3] * 10
    assert "10/10" in capfd.readouterr().err


def test_no_progress_by_default(pool: Pool, capfd: pytest.CaptureFixture[str]) -> None:
    assert pool.map(t.square, range(20)) == SQUARES
    assert capfd.readouterr().err == ""
