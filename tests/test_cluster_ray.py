"""The cluster backend on a real local Ray (tier 2 of issue 15; needs phalanx[ray]).

One Ray head (``ray start --head --num-cpus 2 --block``, its own temp
directory) runs in a process of its own for the whole module; this process
joins it as a driver.  Kills go by pid, never ``ray stop`` (machine-wide).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import _cluster_targets as t
import conftest
import phalanx
from _targets import DEADLINE, TESTS_DIR
from phalanx.cluster import Ray
from phalanx.futures import ProcessPoolExecutor
from phalanx.pool import Pool, TaskTimeoutError, WorkerLostError

ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CLIENT_PORT: dict[str, int] = {}  # head address -> its Ray Client server's port
TEMP_DIR: dict[str, str] = {}  # head address -> its --temp-dir


def _start_head(temp: str) -> tuple[subprocess.Popen[bytes], str]:
    """A Ray head of our own, its processes one group (killed as one), with a Ray
    Client server (``ray://``) on a port of its own."""
    port = _free_port()
    client_port = _free_port()
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    env = {**os.environ, "PYTHONPATH": TESTS_DIR, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen(
        [
            ray_cli,
            "start",
            "--head",
            "--block",
            "--num-cpus",
            "2",
            "--port",
            str(port),
            "--node-ip-address",
            "127.0.0.1",
            "--temp-dir",
            temp,
            "--include-dashboard",
            "false",
            "--disable-usage-stats",
            "--ray-client-server-port",
            str(client_port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    conftest.LONG_LIVED.add(proc.pid)
    CLIENT_PORT[f"127.0.0.1:{port}"] = client_port
    TEMP_DIR[f"127.0.0.1:{port}"] = temp
    return proc, f"127.0.0.1:{port}"


def _stop_head(proc: subprocess.Popen[bytes], temp: str) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except ProcessLookupError:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # anything the head left in its group
    except ProcessLookupError:
        pass
    conftest.LONG_LIVED.discard(proc.pid)
    shutil.rmtree(temp, ignore_errors=True)


def _pids_in_group(pgid: int, word: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) != pgid:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if word.encode() in f.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    temp = tempfile.mkdtemp(prefix="phx-ray-")
    proc, address = _start_head(temp)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                ray.init(address=address, log_to_driver=False)
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(1)
        yield address
    finally:
        ray.shutdown()
        _stop_head(proc, temp)


@pytest.fixture
def pool(address: str) -> Iterator[Pool]:
    p = Pool(backend=Ray())
    yield p
    p.terminate()


def test_the_pool_api_on_ray(pool: Pool, capfd: pytest.CaptureFixture[str]) -> None:
    t.check_pool_api(pool, capfd)


def test_sigkill_of_a_worker_fails_only_its_begun_chunk(pool: Pool, tmp_path: Path) -> None:
    items = [(str(tmp_path), x, 13) for x in range(60)]
    result = pool.map_async(t.kill_self_on, items, chunksize=1)
    with pytest.raises(WorkerLostError) as info:
        result.get(DEADLINE)
    assert "item 13" in str(info.value)
    runs = t.runs_of(str(tmp_path))
    assert all(n == 1 for n in runs.values()), runs
    assert pool.map(abs, range(10)) == list(range(10))


def test_retries_rerun_the_killed_chunk_only(address: str, tmp_path: Path) -> None:
    with Pool(backend=Ray(), retries=1) as pool:
        items = [(str(tmp_path), x, 13) for x in range(40)]
        assert pool.map(t.kill_self_on, items, chunksize=1) == list(range(40))
    runs = t.runs_of(str(tmp_path))
    assert runs[13] == 2
    assert all(runs[x] == 1 for x in range(40) if x != 13), runs


def test_a_timeout_kills_the_overdue_task(pool: Pool) -> None:
    start = time.monotonic()
    with pytest.raises(TaskTimeoutError, match="was stopped") as info:
        pool.apply(t.sleep_then, (30,), timeout=1)
    assert time.monotonic() - start < 2.5
    pid = int(str(info.value).split("(pid ")[1].split(")")[0])
    deadline = time.monotonic() + 2
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), f"the overdue task's worker {pid} still runs"
    assert [pool.apply(abs, (-i,)) for i in range(20)] == list(range(20))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_nested_local_pool_inside_a_ray_task(pool: Pool) -> None:
    assert pool.apply(_nested_sum, (10,)) == sum(x * x for x in range(10))


def _nested_sum(n: int) -> int:
    with phalanx.Pool(2) as inner:
        return sum(inner.map(t.square, range(n)))


def test_a_ray_client_address(address: str, tmp_path: Path) -> None:
    """``backend="ray://HOST:PORT"``: a driver that is not a Ray node, through Ray Client
    (in a process of its own: this one is a driver of the head already)."""
    client = f"ray://127.0.0.1:{CLIENT_PORT[address]}"
    marks = tmp_path / "marks"
    marks.mkdir()
    script = tmp_path / "driver.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {TESTS_DIR!r})
            import phalanx, _cluster_targets as t
            from phalanx.pool import WorkerLostError
            with phalanx.Pool(backend={client!r}) as pool:
                print(pool.map(t.square, range(50)) == [x * x for x in range(50)])
                try:
                    pool.map(t.kill_self_on, [({str(marks)!r}, x, 13) for x in range(30)], 1)
                except WorkerLostError as e:
                    print("item 13" in str(e))
            """
        ),
        encoding="utf-8",
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=180, cwd=tmp_path
    )
    lines = [line for line in out.stdout.splitlines() if "(raylet)" not in line]
    assert lines == ["True", "True"], out.stderr[-3000:] + _client_server_logs(address)
    assert max(t.runs_of(str(marks)).values()) == 1


def _client_server_logs(address: str) -> str:
    """The tails of the head's Ray Client server logs (why a ``ray://`` driver was refused)."""
    logs = Path(TEMP_DIR[address], "session_latest", "logs")
    parts = []
    for log in sorted(logs.glob("ray_client_server*")):
        parts.append(f"\n--- {log.name}:\n" + log.read_text(errors="replace")[-2000:])
    return "".join(parts)


def test_the_executor_on_ray(address: str) -> None:
    with ProcessPoolExecutor(backend=Ray()) as executor:
        assert list(executor.map(abs, range(-5, 0))) == [5, 4, 3, 2, 1]
        assert executor.submit(t.add, 1, 2).result(DEADLINE) == 3


def test_ctrl_c_to_the_driver_returns_within_a_second(address: str, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    script = tmp_path / "driver.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, time
            sys.path.insert(0, {TESTS_DIR!r})
            import phalanx, _cluster_targets as t
            from phalanx.cluster import Ray
            pool = phalanx.Pool(backend=Ray(address={address!r}))
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
    t.check_ctrl_c(proc, str(marks), 2)


def test_a_64_mib_array_shared_by_64_tasks_is_put_once(pool: Pool) -> None:
    np = pytest.importorskip("numpy")
    big = np.arange(64 * 1024 * 1024 // 8, dtype=np.float64).reshape(64, -1)
    sums = pool.map(t.row_sum, [(big, i) for i in range(64)], chunksize=1)
    assert sums == [float(big[i].sum()) for i in range(64)]
    assert pool._backend.store.puts == 1


def test_a_poison_item_fails_after_its_retries(address: str, tmp_path: Path) -> None:
    with Pool(backend=Ray(), retries=2) as pool:
        with pytest.raises(WorkerLostError, match="after 3 attempts"):
            pool.apply(t.kill_self_always_on, ((str(tmp_path), 7, 7),))
        assert t.runs_of(str(tmp_path))[7] == 3
        assert pool.apply(abs, (-2,)) == 2


def test_maxtasksperchild_retires_worker_processes(address: str) -> None:
    with Pool(backend=Ray(), maxtasksperchild=1) as pool:
        pids = pool.map(t.pid_of_worker, range(6), chunksize=1)
        assert pool.map(abs, range(-3, 0)) == [3, 2, 1]
    assert len(set(pids)) == 6, pids


def test_losing_the_head_fails_the_pool_instead_of_hanging(address: str, tmp_path: Path) -> None:
    """The head's control store (GCS) dies while a map runs: PoolTerminatedError within
    seconds.  (Ray's client would wait for it 60 s, then end the driver process.)"""
    temp = tempfile.mkdtemp(prefix="phx-ray-")
    head, other = _start_head(temp)
    script = tmp_path / "driver.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, time
            sys.path.insert(0, {TESTS_DIR!r})
            import ray
            import phalanx, _cluster_targets as t
            from phalanx.cluster import Ray
            deadline = time.monotonic() + 90
            while True:
                try:
                    ray.init(address={other!r}, log_to_driver=False)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1)
            pool = phalanx.Pool(backend=Ray())
            assert pool.map(abs, [-1, -2]) == [1, 2]
            result = pool.map_async(t.sleep_then, [0.2] * 200, chunksize=1)
            print("ready", flush=True)
            sys.stdin.readline()
            start = time.monotonic()
            try:
                result.get(60)
            except phalanx.pool.PoolTerminatedError as exc:
                print("terminated", time.monotonic() - start, exc, flush=True)
            except Exception as exc:  # (uncaught, Ray's excepthook would wait for the head)
                print("other", time.monotonic() - start, repr(exc), flush=True)
            pool.terminate()
            print("ended", flush=True)
            """
        ),
        encoding="utf-8",
    )
    driver = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert driver.stdout is not None and driver.stdin is not None
        assert driver.stdout.readline().strip() == "ready"
        (gcs,) = _pids_in_group(head.pid, "gcs_server")
        os.kill(gcs, signal.SIGKILL)
        driver.stdin.write("go\n")
        driver.stdin.flush()
        out, _ = driver.communicate(timeout=45)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        _stop_head(head, temp)
    lines = out.splitlines()
    terminated = [line for line in lines if line.startswith("terminated")]
    assert terminated and "lost the ray engine (no Ray head at" in terminated[0], out
    assert float(terminated[0].split()[1]) < 10, out
    assert lines[-1] == "ended", out


def test_the_ray_adapter_imports_no_dask() -> None:
    """``phalanx[ray]`` alone must do: the Ray adapter shares nothing with the Dask one."""
    code = (
        "import sys, phalanx.ext.ray\n"
        "print([m for m in ('dask', 'distributed') if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stderr
