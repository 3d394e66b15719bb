"""phalanx.futures.ProcessPoolExecutor, nested pools, and a pool's copy in a forked child."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import os
import signal
import time
from typing import Any

import pytest

import _pool_targets as t
import phalanx
from _targets import DEADLINE
from phalanx.futures import BrokenProcessPool, ProcessPoolExecutor, WorkerLostError
from phalanx.pool import PoolTerminatedError


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def inner_pool_sum(n: int) -> int:
    """Runs in a pool worker: a pool of its own (nested pools)."""
    with phalanx.get_context("spawn").Pool(2) as pool:
        return sum(pool.map(t.square, range(n)))


def inner_pool_pids(_: Any) -> tuple[int, list[int]]:
    pool = phalanx.get_context("fork").Pool(1)
    return os.getpid(), [p.pid for p in pool._pool]


@pytest.fixture
def executor(ctx: Any) -> Any:
    ex = ProcessPoolExecutor(2, mp_context=ctx)
    yield ex
    ex.shutdown(wait=True, cancel_futures=True)


def test_submit_and_result(executor: Any) -> None:
    futures = [executor.submit(t.square, i) for i in range(10)]
    assert [f.result(timeout=DEADLINE) for f in futures] == [i * i for i in range(10)]
    assert isinstance(futures[0], cf.Future)
    assert executor.submit(t.power, 3, exp=3).result(timeout=DEADLINE) == 27


def test_map_with_and_without_chunks(executor: Any) -> None:
    assert list(executor.map(t.square, range(20), timeout=DEADLINE)) == [i * i for i in range(20)]
    got = executor.map(t.add, range(20), range(20), chunksize=6, timeout=DEADLINE)
    assert list(got) == [2 * i for i in range(20)]
    with pytest.raises(ValueError, match="chunksize"):
        executor.map(t.square, range(3), chunksize=0)


def test_exceptions_and_as_completed(executor: Any) -> None:
    bad = executor.submit(t.raise_key_error, "k")
    with pytest.raises(KeyError):
        bad.result(timeout=DEADLINE)
    assert isinstance(bad.exception(timeout=DEADLINE), KeyError)
    futures = [executor.submit(t.sleep_then_return, 0.05 * (3 - i), i) for i in range(3)]
    done = [f.result() for f in cf.as_completed(futures, timeout=DEADLINE)]
    assert sorted(done) == [0, 1, 2]


def test_lambdas_work(executor: Any) -> None:
    offset = 5
    assert executor.submit(lambda x: x + offset, 1).result(timeout=DEADLINE) == 6


def test_worker_death_fails_only_that_future(executor: Any) -> None:
    others = [executor.submit(t.sleep_then_return, 0.05, i) for i in range(6)]
    doomed = executor.submit(kill_self)
    with pytest.raises(WorkerLostError) as info:
        doomed.result(timeout=DEADLINE)
    assert isinstance(info.value, BrokenProcessPool)
    assert isinstance(info.value, phalanx.pool.WorkerLostError)
    assert "SIGKILL" in str(info.value)
    assert [f.result(timeout=DEADLINE) for f in others] == list(range(6))
    # Unlike the stdlib's, the executor is not broken.
    assert executor.submit(t.square, 7).result(timeout=DEADLINE) == 49


def test_shutdown_cancels_waiting_futures(ctx: Any) -> None:
    ex = ProcessPoolExecutor(1, mp_context=ctx)
    futures = [ex.submit(t.sleep_then_return, 0.2, i) for i in range(6)]
    t0 = time.monotonic()
    ex.shutdown(wait=True, cancel_futures=True)
    assert time.monotonic() - t0 < DEADLINE
    cancelled = [f.cancelled() for f in futures]
    assert any(cancelled)
    for f in futures:
        if not f.cancelled():
            assert f.result(timeout=0) in range(6)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(t.square, 1)


def test_context_manager_waits(ctx: Any) -> None:
    with ProcessPoolExecutor(2, mp_context=ctx) as ex:
        futures = [ex.submit(t.sleep_then_return, 0.05, i) for i in range(4)]
    assert all(f.done() for f in futures)


def test_run_in_executor(executor: Any) -> None:
    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        calls = [loop.run_in_executor(executor, t.square, i) for i in range(5)]
        return list(await asyncio.wait_for(asyncio.gather(*calls), DEADLINE))

    assert asyncio.run(main()) == [0, 1, 4, 9, 16]


def test_initializer_and_max_tasks_per_child(ctx: Any) -> None:
    with ProcessPoolExecutor(
        1, mp_context=ctx, initializer=t.init_global, initargs=("set",), max_tasks_per_child=2
    ) as ex:
        results = [ex.submit(t.get_init_value, i).result(timeout=DEADLINE) for i in range(4)]
    assert {value for _pid, value in results} == {"set"}
    assert len({pid for pid, _value in results}) == 2  # recycled after two tasks


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_workers": 0}, ValueError),
        ({"max_workers": -1}, ValueError),
        ({"initializer": 3}, TypeError),
        ({"max_tasks_per_child": 0}, ValueError),
        ({"max_tasks_per_child": "2"}, TypeError),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        ProcessPoolExecutor(**kwargs)


def test_nested_pools(ctx: Any) -> None:
    with ctx.Pool(2) as pool:
        assert pool.map(inner_pool_sum, [3, 4], chunksize=1) == [5, 14]


def test_nested_pool_workers_exit_with_their_worker(ctx: Any) -> None:
    with ctx.Pool(1) as pool:
        worker_pid, inner = pool.apply(inner_pool_pids, (None,))
        os.kill(worker_pid, signal.SIGKILL)
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            if not any(os.path.exists(f"/proc/{pid}") and _alive(pid) for pid in inner):
                break
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in inner), "inner workers outlived their worker"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def use_inherited_pool(pool: Any, out: Any) -> None:
    try:
        pool.apply_async(t.square, (2,))
    except PoolTerminatedError as exc:
        out.put(("refused", str(exc)))
    else:
        out.put(("accepted", ""))


def test_forked_child_cannot_use_parents_pool() -> None:
    ctx = phalanx.get_context("fork")
    with ctx.Pool(1) as pool:
        out = ctx.SimpleQueue()
        p = ctx.Process(target=use_inherited_pool, args=(pool, out))
        p.start()
        p.join(DEADLINE)
        verdict, message = out.get()
        assert verdict == "refused"
        assert "forked child" in message
        assert pool.apply(t.square, (3,)) == 9  # the parent's pool is unaffected
