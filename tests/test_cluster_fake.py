"""The cluster backend on the fake engine (tier 0 of issue 15: every run, no engine needed).

The fake engine's workers are threads posing as processes, but they run the
real runner over the real hub connection, so every decision of the backend
(batching, blame, retries, timeouts, shutdown) is exercised; deaths, a
rerunning engine and lost engine events are scripted.
"""

from __future__ import annotations

import itertools
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import _cluster_targets as t
import phalanx
from _targets import DEADLINE
from phalanx._cluster import runner
from phalanx._cluster.fake import FakeEngine
from phalanx.cluster import ClusterSemanticsWarning
from phalanx.futures import ProcessPoolExecutor
from phalanx.pool import Pool, PoolTerminatedError, TaskTimeoutError, WorkerLostError


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    t.reset()
    yield


def make(engine: FakeEngine | None = None, **kwargs: Any) -> Pool:
    return Pool(backend=engine or FakeEngine(2), **kwargs)


def test_the_pool_api_gives_what_the_local_pool_gives() -> None:
    with make() as pool:
        assert pool.map(t.square, range(100)) == [x * x for x in range(100)]
        assert pool.apply(t.add, (2, 3)) == 5
        assert pool.apply_async(t.add, (4,), {"b": 5}).get(DEADLINE) == 9
        assert pool.starmap(t.add, [(1, 2), (3, 4)]) == [3, 7]
        assert list(pool.imap(t.square, range(50), chunksize=3)) == [x * x for x in range(50)]
        assert sorted(pool.imap_unordered(t.square, range(50))) == [x * x for x in range(50)]
        got: list[Any] = []
        pool.map_async(t.square, range(5), callback=got.append).wait(DEADLINE)
        assert got == [[0, 1, 4, 9, 16]]


def test_processes_none_follows_the_engine_and_a_number_caps_it() -> None:
    engine = FakeEngine(3)
    with Pool(backend=engine) as pool:
        assert pool._processes == 3
    with Pool(1, backend=FakeEngine(3)) as pool:
        assert pool._processes == 1
        assert pool.map(t.square, range(10)) == [x * x for x in range(10)]


def test_a_task_exception_is_raised_with_its_item_named() -> None:
    with make() as pool, pytest.raises(ValueError, match="bad item 7") as info:
        pool.map(t.fail_on, range(10))
    assert info.value.__notes__ == ["raised by item 7 of map(fail_on) in a pool worker"]


def test_a_dead_worker_fails_only_the_chunk_it_had_begun() -> None:
    with make() as pool:
        result = pool.map_async(t.die_on, range(40), chunksize=1)
        with pytest.raises(WorkerLostError) as info:
            result.get(DEADLINE)
        error = info.value
        assert "item 5" in str(error) and "fakehost" in str(error)
        assert error.pid is not None and error.host == "fakehost"  # type: ignore[attr-defined]
        # Every other item ran exactly once, and the pool goes on.
        assert all(t.RUNS[x] == 1 for x in range(40) if x != 5), t.RUNS
        assert pool.map(t.square, range(10)) == [x * x for x in range(10)]


def test_each_other_item_of_an_imap_is_delivered_once() -> None:
    with make() as pool:
        got = []
        it = pool.imap(t.die_on, range(30))
        for _i in range(30):
            try:
                got.append(it.next(DEADLINE))
            except WorkerLostError:
                got.append("lost")
        assert got == [x if x != 5 else "lost" for x in range(30)]


def test_a_worker_killed_from_outside_blames_only_what_it_was_running() -> None:
    engine = FakeEngine(2)
    with make(engine) as pool:
        slow = pool.apply_async(t.sleep_then, (1.0, "slow"))
        time.sleep(0.3)  # it has begun on one of the two workers
        busy = engine.running()
        assert busy, "the slow task is running"
        engine.kill_worker(busy[0])
        with pytest.raises(WorkerLostError, match="sleep_then"):
            slow.get(DEADLINE)
        assert pool.map(t.square, range(20)) == [x * x for x in range(20)]


@pytest.mark.parametrize("head", ["lost", "answers again"])
def test_a_worker_lost_while_the_head_is_in_doubt_waits_for_the_verdict(
    tmp_path: Any, head: str
) -> None:
    """Ray's workers end when their head dies: the chunk they ran fails with the pool's
    PoolTerminatedError (the cause) once the engine is lost, not with a WorkerLostError
    that blames one worker (which a caller's get() saw first, under load); if the head
    answers again, the worker is to blame after all."""
    engine = FakeEngine(2)
    with make(engine) as pool:
        slow = pool.apply_async(t.marked_square, ((str(tmp_path), 3, 1.0),))
        _wait_begun(engine, tmp_path)
        engine.doubt = True
        engine.kill_worker(engine.running()[0])
        time.sleep(0.5)
        assert not slow.ready(), "the blame waits while the head is in doubt"
        if head == "lost":
            engine.lost_reason = "no head for 6 s"
            with pytest.raises(PoolTerminatedError, match="no head for 6 s"):
                slow.get(DEADLINE)
        else:
            engine.doubt = False
            with pytest.raises(WorkerLostError, match="marked_square"):
                slow.get(DEADLINE)
            assert pool.map(t.square, range(20)) == [x * x for x in range(20)]


def _wait_begun(engine: FakeEngine, marks: Any) -> None:
    """Until the task's function runs (its runner said "begun" before calling it)."""
    deadline = time.monotonic() + DEADLINE
    while not t.runs_of(str(marks)) or not engine.running():
        assert time.monotonic() < deadline, "the task never began"
        time.sleep(0.01)


def test_retries_rerun_the_culprit_and_nothing_else() -> None:
    with make(retries=1) as pool:
        assert pool.map(t.die_once_on, range(20), chunksize=1) == list(range(20))
    assert t.RUNS[5] == 2
    assert all(t.RUNS[x] == 1 for x in range(20) if x != 5)


def test_a_poison_item_fails_after_its_retries() -> None:
    with make(retries=2) as pool, pytest.raises(WorkerLostError, match="after 3 attempts"):
        pool.apply(t.die_on, (5,))
    assert t.RUNS[5] == 3


def test_an_engine_that_reruns_a_lost_task_computes_nothing_twice() -> None:
    """Dask reruns a task whose worker died; the hub hands that rerun nothing left to do."""
    engine = FakeEngine(2, rerun_lost=True)
    with make(engine) as pool:
        result = pool.map_async(t.die_on, range(200), chunksize=1)
        with pytest.raises(WorkerLostError):
            result.get(DEADLINE)
        assert pool.map(abs, range(5)) == [0, 1, 2, 3, 4]
    assert all(t.RUNS[x] == 1 for x in range(200) if x != 5), t.RUNS


def test_lost_engine_events_change_nothing() -> None:
    """The backend learns outcomes from its hub, not from the engine's word."""
    with make(FakeEngine(2, lose_ends=True)) as pool:
        assert pool.map(t.square, range(300)) == [x * x for x in range(300)]
        with pytest.raises(WorkerLostError):
            pool.apply(t.die_on, (5,))
        assert pool.apply(t.square, (3,)) == 9


def test_a_timeout_stops_the_task_where_the_engine_can() -> None:
    engine = FakeEngine(2, can_kill=True)
    with make(engine) as pool:
        pids = set(engine.pids())
        start = time.monotonic()
        with pytest.raises(TaskTimeoutError, match="was stopped"):
            pool.apply(t.sleep_then, (5,), timeout=0.3)
        assert time.monotonic() - start < 1.5
        assert set(engine.pids()) != pids or _eventually_new_pid(engine, pids)
        assert [pool.apply(t.square, (i,)) for i in range(20)] == [i * i for i in range(20)]


def _eventually_new_pid(engine: FakeEngine, pids: set[int]) -> bool:
    return any(w.dead for w in engine._workers)


def test_a_timeout_on_an_engine_that_cannot_stop_it_warns() -> None:
    with make(FakeEngine(2, can_kill=False)) as pool:
        start = time.monotonic()
        with (
            pytest.warns(ClusterSemanticsWarning, match="runs on"),
            pytest.raises(TaskTimeoutError, match="runs on"),
        ):
            pool.apply(t.sleep_then, (1.5,), timeout=0.2)
        assert time.monotonic() - start < 1.2
        assert pool.apply(t.square, (4,)) == 16


def test_engine_tasks_that_fail_before_starting_break_the_pool_clearly() -> None:
    engine = FakeEngine(2, fail_before_start=ModuleNotFoundError("No module named 'phalanx'"))
    pool = make(engine)
    try:
        with pytest.raises(PoolTerminatedError, match="is phalanx installed"):
            pool.map(t.square, range(10))
        with pytest.raises(PoolTerminatedError):
            pool.apply(t.square, (1,))
    finally:
        pool.terminate()


def test_workers_of_another_phalanx_version_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "VERSION", "0.0.0-other")
    pool = make()
    try:
        with pytest.raises(PoolTerminatedError, match=r"runs phalanx 0\.0\.0-other"):
            pool.map(t.square, range(4))
    finally:
        pool.terminate()


def test_the_initializer_runs_once_per_worker_process() -> None:
    engine = FakeEngine(2)
    with make(engine, initializer=t.initializer, initargs=("a",)) as pool:
        pool.map(t.square, range(200), chunksize=1)
    assert 1 <= t.INITIALIZED["a"] <= 2
    t.INITIALIZED.clear()


def test_a_failing_initializer_breaks_the_pool() -> None:
    pool = make(initializer=t.failing_initializer)
    try:
        with pytest.raises(PoolTerminatedError, match="initializer says no"):
            pool.map(t.square, range(4))
    finally:
        pool.terminate()


def test_terminate_fails_what_is_outstanding_and_returns() -> None:
    engine = FakeEngine(2)
    pool = make(engine)
    result = pool.map_async(t.sleep_then, [0.5] * 20, chunksize=1)
    time.sleep(0.1)
    start = time.monotonic()
    pool.terminate()
    assert time.monotonic() - start < 2
    with pytest.raises(PoolTerminatedError):
        result.get(DEADLINE)
    assert engine.closed


def test_close_and_join_finish_the_work_and_release_the_engine() -> None:
    engine = FakeEngine(2)
    pool = make(engine)
    result = pool.map_async(t.square, range(100))
    pool.close()
    pool.join()
    assert result.get(0) == [x * x for x in range(100)]
    assert engine.closed


def test_imap_reads_its_input_lazily() -> None:
    with make() as pool:
        it = pool.imap(t.square, itertools.count())
        assert [next(it) for _ in range(100)] == [x * x for x in range(100)]


def test_tiny_tasks_are_combined_into_few_engine_tasks() -> None:
    engine = FakeEngine(2)
    with make(engine) as pool:
        n = 20_000
        assert sorted(pool.imap_unordered(t.square, range(n))) == [x * x for x in range(n)]
    assert engine.submitted < n / 20, engine.submitted


def test_the_executor_runs_on_the_engine_too() -> None:
    engine = FakeEngine(2)
    with ProcessPoolExecutor(backend=engine) as executor:
        assert list(executor.map(t.square, range(20))) == [x * x for x in range(20)]
        assert executor.submit(t.add, 1, 2).result(DEADLINE) == 3
        with pytest.raises(WorkerLostError):
            executor.submit(t.die_on, 5).result(DEADLINE)
        assert executor.submit(t.add, 2, 2).result(DEADLINE) == 4
    assert engine.closed


def test_bad_backends_are_named() -> None:
    with pytest.raises(ValueError, match="unknown backend 'spark'"):
        Pool(backend="spark")
    with pytest.raises(TypeError, match="backend must be"):
        Pool(backend=42)
    with pytest.raises(ValueError, match="maxtasksperchild"):
        Pool(maxtasksperchild=2, backend=FakeEngine(1))


def test_neither_phalanx_nor_a_cluster_pool_imports_an_engine() -> None:
    code = (
        "import sys, phalanx\n"
        "from phalanx._cluster.fake import FakeEngine\n"
        "with phalanx.Pool(2) as p: p.map(abs, range(10))\n"
        "with phalanx.Pool(backend=FakeEngine(1)) as p: p.map(abs, range(10))\n"
        "bad = [m for m in ('dask', 'distributed', 'ray', 'multiprocessing') if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]", out.stderr


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    n=st.integers(1, 60),
    bad=st.frozensets(st.integers(0, 59), max_size=4),
    workers=st.integers(1, 3),
    retries=st.integers(0, 1),
    rerun=st.booleans(),
)
def test_any_schedule_of_deaths_blames_exactly(
    n: int, bad: frozenset[int], workers: int, retries: int, rerun: bool
) -> None:
    """Whatever dies where: each item that did not kill its worker ran once and
    gave its result; each that did failed alone (or, with a retry, ran twice)."""
    t.reset()
    engine = FakeEngine(workers, rerun_lost=rerun)
    with make(engine, retries=retries) as pool:
        it = pool.imap(_DieOnceOn(bad), range(n))
        outcomes: list[Any] = []
        for _ in range(n):
            try:
                outcomes.append(it.next(DEADLINE))
            except WorkerLostError:
                outcomes.append("lost")
    for x in range(n):
        if x in bad:
            assert outcomes[x] == (x if retries else "lost")
            assert t.RUNS[x] == (2 if retries else 1)
        else:
            assert outcomes[x] == x and t.RUNS[x] == 1, (x, outcomes, t.RUNS)


class _DieOnceOn:
    def __init__(self, bad: frozenset[int]) -> None:
        self.bad = bad

    def __call__(self, x: int) -> int:
        return t.die_once_on(x, self.bad)


def test_nothing_is_left_running() -> None:
    before = {th.name for th in threading.enumerate()}
    with make() as pool:
        pool.map(t.square, range(10))
    time.sleep(0.3)
    after = {th.name for th in threading.enumerate()} - before
    assert not {n for n in after if n.startswith("phalanx-cluster")}, after


@pytest.fixture(autouse=True)
def _no_warnings_leak() -> Iterator[None]:
    with warnings.catch_warnings():
        yield


def test_a_large_array_shared_by_many_tasks_is_stored_once() -> None:
    np = pytest.importorskip("numpy")
    big = np.arange(8 * 1024 * 1024 // 8, dtype=np.float64).reshape(64, -1)  # 8 MiB
    engine = FakeEngine(2)
    with make(engine) as pool:
        sums = pool.map(t.row_sum, [(big, i) for i in range(64)], chunksize=1)
        assert sums == [float(big[i].sum()) for i in range(64)]
        assert engine.puts == 1
        assert pool.apply(len, (b"x" * (2 << 20),)) == 2 << 20  # large bytes: stored too
        assert engine.puts == 2
        assert pool.map(t.square, range(10)) == [x * x for x in range(10)]  # small: inline
        assert engine.puts == 2
        assert pool.apply(t.is_writeable, (big,)) is False  # read-only, as documented


def test_the_pool_api_on_the_fake_engine(capfd: pytest.CaptureFixture[str]) -> None:
    with make(FakeEngine(2)) as pool:
        t.check_pool_api(pool, capfd)


def test_stored_data_the_engine_lost_is_put_again() -> None:
    """Dask loses scattered data with the workers that held it: the tasks that need it
    end before they start; the pool puts the data again instead of resubmitting them
    with the lost reference forever (it did: a livelock)."""
    np = pytest.importorskip("numpy")
    big = np.arange(2 * 1024 * 1024 // 8, dtype=np.float64).reshape(64, -1)  # 2 MiB
    engine = FakeEngine(2)
    with make(engine) as pool:
        sums = []
        items = [(big, i, 0.01) for i in range(64)]
        for i, value in enumerate(pool.imap(t.slow_row_sum, items, chunksize=1)):
            sums.append(value)
            if i == 5:
                engine.lose_stored()
        assert sums == [float(big[i].sum()) for i in range(64)]
        assert engine.puts == 2
        submitted = engine.submitted
        assert pool.apply(t.row_sum, ((big, 3),)) == float(big[3].sum())
        assert engine.submitted == submitted + 1  # settled: no resubmission storm


def test_tasks_stranded_on_a_lost_host_run_elsewhere(tmp_path: Any) -> None:
    """Ray leaves a task leased to a node that died pending for ever: once the engine
    says it lost a host, the chunks of every task not started yet run elsewhere (the
    pool hung on such a task before), and each item still runs exactly once."""
    engine = FakeEngine(2)
    with make(engine) as pool:
        result = pool.map_async(t.marked_square, [(str(tmp_path), x, 0.3) for x in range(8)], 1)
        deadline = time.monotonic() + DEADLINE
        while len(engine.running()) < 2 or engine._queue.qsize() == 0:
            assert time.monotonic() < deadline, "the pool never queued a task beyond its workers"
            time.sleep(0.01)
        assert engine.strand_queued() > 0
        assert result.get(DEADLINE) == [x * x for x in range(8)]
    runs = t.runs_of(str(tmp_path))
    assert set(runs) == set(range(8)) and max(runs.values()) == 1, runs


def test_an_unpicklable_argument_fails_its_task_only() -> None:
    with make() as pool:
        with pytest.raises(TypeError, match="pickle"):
            pool.apply(t.add, (threading.Lock(), 1))
        assert pool.apply(t.add, (1, 1)) == 2


def test_tasks_use_a_local_manager_under_its_lock() -> None:
    with phalanx.Manager() as manager, make(FakeEngine(3)) as pool:
        lock, value = manager.Lock(), manager.Value("i", 0)
        pool.map(t.add_under_lock, [(lock, value, 50)] * 6, chunksize=1)
        assert value.value == 300


def _routable_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 9))
            host = str(probe.getsockname()[0])
        except OSError:
            return None
    return None if host.startswith("127.") else host


def test_a_loopback_manager_proxy_is_refused_for_a_remote_cluster() -> None:
    host = _routable_address()
    if host is None:
        pytest.skip("this machine has no address but loopback")
    with phalanx.Manager() as manager, make(FakeEngine(2, hub_host=host)) as pool:
        value = manager.Value("i", 0)
        with pytest.raises(ValueError, match="cannot be sent to a task of a cluster on other"):
            pool.apply(t.add_under_lock, ((manager.Lock(), value, 1),))
        assert pool.apply(t.add, (1, 2)) == 3


def test_losing_the_engine_fails_the_pool_instead_of_hanging() -> None:
    engine = FakeEngine(2)
    pool = make(engine)
    try:
        result = pool.map_async(t.sleep_then, [0.2] * 50, chunksize=1)
        time.sleep(0.3)
        engine.lost_reason = "the scheduler is gone"
        start = time.monotonic()
        with pytest.raises(PoolTerminatedError, match="the scheduler is gone"):
            result.get(DEADLINE)
        assert time.monotonic() - start < 2.5
        with pytest.raises(PoolTerminatedError):
            pool.apply(t.add, (1, 2))
    finally:
        pool.terminate()
