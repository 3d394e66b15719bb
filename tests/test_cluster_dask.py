"""The cluster backend on a real Dask LocalCluster (tier 2 of issue 15; needs phalanx[dask]).

One cluster (a scheduler and two one-thread worker processes under nannies)
runs in a process of its own for the whole module; kills go by pid to its
worker processes, which their nannies restart.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import _cluster_targets as t
import conftest
import phalanx
from _targets import DEADLINE, TESTS_DIR
from phalanx.cluster import ClusterSemanticsWarning, Dask
from phalanx.futures import ProcessPoolExecutor
from phalanx.pool import Pool, PoolTerminatedError, TaskTimeoutError, WorkerLostError

distributed = pytest.importorskip("distributed")

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]


@contextlib.contextmanager
def _own_cluster() -> Iterator[str]:
    """A LocalCluster of two one-thread workers in a process of its own: its address."""
    proc = subprocess.Popen(
        [sys.executable, os.path.join(TESTS_DIR, "_dask_cluster.py"), "2"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=TESTS_DIR,
    )
    conftest.LONG_LIVED.add(proc.pid)
    try:
        line = _readline(proc, 90)
        yield line
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
        conftest.LONG_LIVED.discard(proc.pid)


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    with _own_cluster() as address:
        yield address


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise RuntimeError("the Dask cluster did not start")
    line = proc.stdout.readline().strip()
    if not line:
        raise RuntimeError("the Dask cluster failed to start")
    return line


@pytest.fixture(scope="module")
def client(address: str) -> Iterator[Any]:
    c = distributed.Client(address)
    yield c
    c.close()


@pytest.fixture
def pool(client: Any) -> Iterator[Pool]:
    p = Pool(backend=Dask(client=client))
    yield p
    p.terminate()


def _wait_for_workers(client: Any, n: int = 2) -> None:
    client.wait_for_workers(n, timeout=60)


def test_the_pool_api_on_dask(pool: Pool, capfd: pytest.CaptureFixture[str]) -> None:
    t.check_pool_api(pool, capfd)


def test_a_function_of_main_travels_by_value(client: Any, tmp_path: Path) -> None:
    script = tmp_path / "main_func.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import phalanx
            from phalanx.cluster import Dask

            def triple(x):
                return 3 * x

            if __name__ == "__main__":
                with phalanx.Pool(backend="dask://{client.scheduler.address.split("://")[1]}") as p:
                    print(p.map(triple, range(5)), p.apply(lambda: "lambda ok"))
            """
        ),
        encoding="utf-8",
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[0, 3, 6, 9, 12] lambda ok"


def test_sigkill_of_a_worker_fails_only_its_begun_chunk(
    client: Any, pool: Pool, tmp_path: Path
) -> None:
    _wait_for_workers(client)
    items = [(str(tmp_path), x, 13) for x in range(60)]
    result = pool.map_async(t.kill_self_on, items, chunksize=1)
    with pytest.raises(WorkerLostError) as info:
        result.get(DEADLINE)
    assert "item 13" in str(info.value) and "pid" in str(info.value)
    runs = t.runs_of(str(tmp_path))
    _wait_for_workers(client)
    assert pool.map(abs, range(10)) == list(range(10))
    # Every other item that ran ran once (the map stopped at the failure: some may not have).
    assert all(n == 1 for x, n in runs.items()), runs


def test_retries_rerun_the_killed_chunk_only(client: Any, tmp_path: Path) -> None:
    _wait_for_workers(client)
    with Pool(backend=Dask(client=client), retries=1) as pool:
        items = [(str(tmp_path), x, 13) for x in range(40)]
        assert pool.map(t.kill_self_on, items, chunksize=1) == list(range(40))
    runs = t.runs_of(str(tmp_path))
    assert runs[13] == 2
    assert all(runs[x] == 1 for x in range(40) if x != 13), runs


def test_a_timeout_kills_an_overdue_task_on_a_one_thread_worker(client: Any) -> None:
    _wait_for_workers(client)
    with Pool(backend=Dask(client=client, kill_overdue=True)) as pool:
        start = time.monotonic()
        with pytest.raises(TaskTimeoutError, match="was stopped"):
            pool.apply(t.sleep_then, (30,), timeout=1)
        assert time.monotonic() - start < 2.5
        _wait_for_workers(client)
        assert [pool.apply(abs, (-i,)) for i in range(20)] == list(range(20))


def test_a_timeout_on_a_shared_cluster_warns_that_the_thread_runs_on(client: Any) -> None:
    _wait_for_workers(client)
    with Pool(backend=Dask(client=client)) as pool:
        start = time.monotonic()
        with (
            pytest.warns(ClusterSemanticsWarning, match="runs on"),
            pytest.raises(TaskTimeoutError),
        ):
            pool.apply(t.sleep_then, (3,), timeout=0.5)
        assert time.monotonic() - start < 2
        assert pool.apply(abs, (-3,)) == 3


def test_a_nested_local_pool_inside_a_cluster_task(pool: Pool) -> None:
    assert pool.apply(_nested_sum, (10,)) == sum(x * x for x in range(10))


def _nested_sum(n: int) -> int:
    with phalanx.Pool(2) as inner:
        return sum(inner.map(t.square, range(n)))


def test_the_executor_on_dask(client: Any) -> None:
    with ProcessPoolExecutor(backend=Dask(client=client)) as executor:
        assert list(executor.map(abs, range(-5, 0))) == [5, 4, 3, 2, 1]
        assert executor.submit(t.add, 1, 2).result(DEADLINE) == 3


def test_ctrl_c_to_the_driver_returns_within_a_second(client: Any, tmp_path: Path) -> None:
    _wait_for_workers(client)
    address = client.scheduler.address.split("://")[1]
    marks = tmp_path / "marks"
    marks.mkdir()
    script = tmp_path / "driver.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, time
            sys.path.insert(0, {TESTS_DIR!r})
            import phalanx, _cluster_targets as t
            pool = phalanx.Pool(backend="dask://{address}")
            print("ready", flush=True)
            try:
                pool.map(t.marked_square, [({str(marks)!r}, x, 0.2) for x in range(200)], 1)
            except KeyboardInterrupt:
                print("interrupted", time.monotonic(), flush=True)
            """
        ),
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    t.check_ctrl_c(proc, str(marks), 1.5)


def test_a_cluster_phalanx_starts_is_stopped_with_the_pool(tmp_path: Path) -> None:
    """``backend="dask"`` with no client: phalanx starts a LocalCluster, and stops it."""
    script = tmp_path / "owned.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, time
            import phalanx
            from phalanx.cluster import Dask

            def children():
                me = str(os.getpid())
                found = []
                for pid in os.listdir("/proc"):
                    try:
                        with open(f"/proc/{pid}/stat") as f:
                            if f.read().rsplit(")", 1)[1].split()[1] != me:
                                continue
                        with open(f"/proc/{pid}/cmdline", "rb") as f:
                            if b"resource_tracker" in f.read():
                                continue  # the stdlib's, which Dask started: lives with us
                        found.append(pid)
                    except (OSError, IndexError):
                        pass
                return found

            if __name__ == "__main__":
                with phalanx.Pool(backend=Dask(n_workers=2)) as pool:
                    print(pool.map(abs, range(-3, 0)), bool(children()), flush=True)
                deadline = time.monotonic() + 30
                while children() and time.monotonic() < deadline:
                    time.sleep(0.1)
                print(children(), flush=True)
            """
        ),
        encoding="utf-8",
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=150, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["[3, 2, 1] True", "[]"], out.stdout


def test_a_64_mib_array_shared_by_64_tasks_is_scattered_once(pool: Pool) -> None:
    np = pytest.importorskip("numpy")
    big = np.arange(64 * 1024 * 1024 // 8, dtype=np.float64).reshape(64, -1)
    sums = pool.map(t.row_sum, [(big, i) for i in range(64)], chunksize=1)
    assert sums == [float(big[i].sum()) for i in range(64)]
    assert pool._backend.store.puts == 1


def test_scattered_data_lost_with_its_workers_is_scattered_again() -> None:
    """Both workers die mid-map: Dask loses the scattered array ("can't be
    recovered"); the pool scatters it again and the map completes (it spun
    resubmitting tasks with the lost future before).  A cluster of its own: the
    module's is spared two deaths at once."""
    np = pytest.importorskip("numpy")
    big = np.arange(8 * 1024 * 1024 // 8, dtype=np.float64).reshape(64, -1)
    with _own_cluster() as address, distributed.Client(address) as client:
        _wait_for_workers(client)
        with Pool(backend=Dask(client=client), retries=1) as pool:
            items = [(big, i, 0.1) for i in range(64)]
            result = pool.map_async(t.slow_row_sum, items, chunksize=1)
            time.sleep(1.0)
            for pid in client.run(os.getpid).values():
                os.kill(pid, signal.SIGKILL)
            assert result.get(DEADLINE) == [float(big[i].sum()) for i in range(64)]
            assert pool._backend.store.puts == 2


def test_a_poison_item_fails_after_its_retries(tmp_path: Path) -> None:
    """A cluster of its own: Dask's nannies sometimes stop restarting a worker that
    dies again soon after its restart (seen in CI: "Only 1/2 workers arrived"),
    which would leave the module's cluster a worker short for the tests after."""
    with _own_cluster() as address, distributed.Client(address) as client:
        _wait_for_workers(client)
        with Pool(backend=Dask(client=client), retries=2) as pool:
            with pytest.raises(WorkerLostError, match="after 3 attempts"):
                pool.apply(t.kill_self_always_on, ((str(tmp_path), 7, 7),))
            assert t.runs_of(str(tmp_path))[7] == 3
            _wait_for_workers(client, 1)
            assert pool.apply(abs, (-2,)) == 2


def test_losing_the_scheduler_fails_the_pool_instead_of_hanging(tmp_path: Path) -> None:
    port = _free_port()
    dask = os.path.join(os.path.dirname(sys.executable), "dask")
    procs = [
        subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        ),
        subprocess.Popen(
            [
                dask,
                "worker",
                f"tcp://127.0.0.1:{port}",
                "--nthreads",
                "1",
                "--no-dashboard",
                "--local-directory",
                str(tmp_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": TESTS_DIR},
        ),
    ]
    for proc in procs:
        conftest.LONG_LIVED.add(proc.pid)
    c = None
    try:
        c = distributed.Client(f"tcp://127.0.0.1:{port}", timeout=60)
        c.wait_for_workers(1, timeout=60)
        pool = Pool(backend=Dask(client=c))
        result = pool.map_async(t.sleep_then, [0.2] * 100, chunksize=1)
        time.sleep(1)
        os.killpg(procs[0].pid, signal.SIGKILL)  # the scheduler
        start = time.monotonic()
        with pytest.raises(PoolTerminatedError, match="lost the dask engine"):
            result.get(DEADLINE)
        assert time.monotonic() - start < 10
        pool.terminate()
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(30)
            conftest.LONG_LIVED.discard(proc.pid)
        if c is not None:
            c.close(timeout=5)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_function_of_a_module_the_workers_cannot_import_travels_by_value(
    client: Any, tmp_path: Path
) -> None:
    """The user's local module is not on the workers: its function goes by value."""
    local = tmp_path / "mylocal"
    local.mkdir()
    (local / "helpers.py").write_text(
        "class Box:\n"
        "    def __init__(self, v):\n"
        "        self.v = v\n\n"
        "def unbox_twice(box):\n"
        "    return 2 * box.v\n",
        encoding="utf-8",
    )
    address = client.scheduler.address.split("://")[1]
    script = tmp_path / "uses_local.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(local)!r})
            import helpers
            import phalanx

            if __name__ == "__main__":
                with phalanx.Pool(backend="dask://{address}") as pool:
                    print(pool.map(helpers.unbox_twice, [helpers.Box(i) for i in range(5)]))
            """
        ),
        encoding="utf-8",
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[0, 2, 4, 6, 8]"


def test_maxtasksperchild_is_refused_on_dask(client: Any) -> None:
    with pytest.raises(ValueError, match="not supported on dask"):
        Pool(backend=Dask(client=client), maxtasksperchild=2)
