"""Multi-host tests on network namespaces (tier 3 of issue 15): Dask and Ray across "hosts".

The test builds three hosts on a private bridge (``_netns.Hosts``) per engine:
h1 runs the Dask scheduler or the Ray head (no CPUs of its own), a phalanx
manager server and the driver; h2 and h3 run one one-thread Dask worker each
(under a nanny), or one one-CPU Ray node each.  Every test runs on both
engines.  Skipped, saying why, without root or ``ip``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import _cluster_targets as t
import _netns
from _targets import TESTS_DIR

_why = _netns.usable()
pytestmark = [
    pytest.mark.cluster,
    pytest.mark.timeout(300),
    pytest.mark.skipif(_why is not None, reason=f"multi-host tests: {_why}"),
]

BIN = os.path.dirname(sys.executable)
KEY = secrets.token_hex(16)


ENGINES = [
    name
    for name, module in (("dask", "distributed"), ("ray", "ray"))
    if importlib.util.find_spec(module)
]


def _start_dask(hosts: _netns.Hosts, env: dict[str, str]) -> str:
    """A scheduler on h1, one one-thread worker (under a nanny) on each of h2 and h3."""
    hosts.popen(
        "h1",
        [
            os.path.join(BIN, "dask"),
            "scheduler",
            "--host",
            hosts.ip["h1"],
            "--port",
            "8786",
            "--no-dashboard",
        ],
        env=hosts.env("h1", **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    scheduler = f"{hosts.ip['h1']}:8786"
    for name in ("h2", "h3"):
        hosts.popen(
            name,
            [
                os.path.join(BIN, "dask"),
                "worker",
                f"tcp://{scheduler}",
                "--nthreads",
                "1",
                "--nworkers",
                "1",
                "--host",
                hosts.ip[name],
                "--no-dashboard",
                "--local-directory",
                hosts.tmp[name],
            ],
            env=hosts.env(name, **env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    return scheduler


def _start_ray(hosts: _netns.Hosts, env: dict[str, str]) -> str:
    """A head with no CPUs on h1 (tasks never run there), a one-CPU node on h2 and h3."""
    env = {**env, "RAY_USAGE_STATS_ENABLED": "0"}
    head = f"{hosts.ip['h1']}:6379"
    for name in ("h1", "h2", "h3"):
        role = (
            ["--head", "--port", "6379", "--num-cpus", "0", "--include-dashboard", "false"]
            if name == "h1"
            else ["--address", head, "--num-cpus", "1"]
        )
        hosts.popen(
            name,
            [
                os.path.join(BIN, "ray"),
                "start",
                "--block",
                *role,
                "--node-ip-address",
                hosts.ip[name],
                "--temp-dir",
                hosts.tmp[name],
                "--object-store-memory",
                str(300 * 1024 * 1024),
                "--disable-usage-stats",
            ],
            env=hosts.env(name, **env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    return head


@contextlib.contextmanager
def _cluster_on_hosts(engine: str) -> Iterator[dict[str, Any]]:
    import conftest

    hosts = _netns.Hosts()
    try:
        env = {"PYTHONPATH": TESTS_DIR, "PHALANX_AUTHKEY": KEY}
        head = (_start_dask if engine == "dask" else _start_ray)(hosts, env)
        manager = (hosts.ip["h1"], 7400)
        hosts.popen(
            "h1",
            [
                os.path.join(BIN, "phalanx"),
                "manager",
                "serve",
                "--address",
                f"{manager[0]}:{manager[1]}",
            ],
            env=hosts.env("h1", **env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for proc in hosts._procs:
            conftest.LONG_LIVED.add(proc.pid)
        yield {"engine": engine, "hosts": hosts, "head": head, "manager": manager}
    finally:
        hosts.close()
        for proc in hosts._procs:
            conftest.LONG_LIVED.discard(proc.pid)


@pytest.fixture(scope="module", params=ENGINES)
def cluster(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    with _cluster_on_hosts(request.param) as built:
        yield built


# What differs between the engines, in the driver: how it connects, waits for
# both worker hosts, and names its backend (``backend(kill_overdue=True)`` is
# Dask's option; a Ray task over its timeout is always stopped).
CONNECT = {
    "dask": """\
import distributed
from phalanx.cluster import Dask

client = distributed.Client("tcp://{head}", timeout=60)


def wait_for_workers():
    client.wait_for_workers(2, timeout=120)


def backend(**options):
    return Dask(client=client, **options)


def finish():
    client.close()
""",
    "ray": """\
import ray
from phalanx.cluster import Ray

deadline = time.monotonic() + 120
while True:
    try:
        ray.init(address="{head}", log_to_driver=False)
        break
    except Exception:
        if time.monotonic() > deadline:
            raise
        time.sleep(1)


def wait_for_workers():
    deadline = time.monotonic() + 120
    while ray.cluster_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)


def backend(kill_overdue=False):
    return Ray()


def finish():
    ray.shutdown()
""",
}

DRIVER = """\
import sys, time
sys.path.insert(0, {tests!r})
import phalanx
import _cluster_targets as t
from phalanx.pool import WorkerLostError
{connect}
wait_for_workers()
with phalanx.Pool(backend=backend()) as pool:
{body}
finish()
"""


def driver_script(cluster: dict[str, Any], body: str) -> str:
    connect = CONNECT[cluster["engine"]].format(head=cluster["head"])
    return DRIVER.format(tests=TESTS_DIR, connect=connect, body=textwrap.indent(body, "    "))


def drive(cluster: dict[str, Any], body: str, tmp_path: Path) -> list[str]:
    hosts = cluster["hosts"]
    script = tmp_path / "driver.py"
    script.write_text(driver_script(cluster, body), encoding="utf-8")
    out = hosts.run(
        "h1",
        [sys.executable, str(script)],
        timeout=240,
        env=hosts.env("h1", PYTHONPATH=TESTS_DIR, PHALANX_AUTHKEY=KEY),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    # Ray's driver prints its raylets' reports of dead workers (which these tests
    # cause on purpose) to stdout, in colour: the tests read only their own lines.
    return [line for line in out.stdout.splitlines() if "(raylet)" not in line]


def test_a_pool_runs_across_hosts_and_blames_a_killed_worker_exactly(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    hosts = cluster["hosts"]
    marks = tmp_path / "marks"
    marks.mkdir()
    h1 = hosts.ip["h1"]
    lines = drive(
        cluster,
        f"""\
print("ips", sorted(set(pool.map(t.my_ip, [{h1!r}] * 40, chunksize=1))))
try:
    pool.map(t.kill_self_on, [({str(marks)!r}, x, 13) for x in range(60)], chunksize=1)
except WorkerLostError as e:
    print("lost", e)
print("runs", max(t.runs_of({str(marks)!r}).values()))
""",
        tmp_path,
    )
    ips = eval(lines[0].split(" ", 1)[1])
    assert ips == sorted([hosts.ip["h2"], hosts.ip["h3"]])
    assert lines[1].startswith("lost") and "item 13" in lines[1], lines
    assert hosts.ip["h2"] in lines[1] or hosts.ip["h3"] in lines[1], lines[1]
    assert lines[2] == "runs 1"


def test_tasks_on_two_hosts_share_a_manager_on_a_third(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    hosts = cluster["hosts"]
    host, port = cluster["manager"]
    h1 = hosts.ip["h1"]
    lines = drive(
        cluster,
        f"""\
time.sleep(0.5)
where = pool.map(t.count_on_remote_manager, [({host!r}, {port}, 1000, {h1!r})] * 4, chunksize=1)
print("where", sorted(set(where)))
from phalanx.managers import RemoteManager
m = RemoteManager(address=({host!r}, {port}))
m.connect()
print("total", m.get_dict("counts")["n"])
print("wrong key", pool.apply(t.connect_with_wrong_key, (({host!r}, {port}),)))
""",
        tmp_path,
    )
    assert lines[1] == "total 4000", lines
    assert lines[2] == "wrong key refused", lines
    where = eval(lines[0].split(" ", 1)[1])
    assert set(where) <= {hosts.ip["h2"], hosts.ip["h3"]}


def test_retries_a_poison_item_a_timeout_a_large_array_and_a_nested_pool_across_hosts(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    poison = tmp_path / "poison"
    poison.mkdir()
    lines = drive(
        cluster,
        f"""\
import numpy as np
from phalanx.pool import TaskTimeoutError
with phalanx.Pool(backend=backend(), retries=1) as again:
    items = [({str(marks)!r}, x, 13) for x in range(40)]
    ok = again.map(t.kill_self_on, items, chunksize=1) == list(range(40))
    runs = t.runs_of({str(marks)!r})
    print("retries", ok, runs[13], max(n for x, n in runs.items() if x != 13))
wait_for_workers()
with phalanx.Pool(backend=backend(), retries=2) as again:
    try:
        again.apply(t.kill_self_always_on, (({str(poison)!r}, 7, 7),))
    except WorkerLostError as e:
        print("poison", "after 3 attempts" in str(e), t.runs_of({str(poison)!r})[7])
wait_for_workers()
with phalanx.Pool(backend=backend(kill_overdue=True)) as timed:
    start = time.monotonic()
    try:
        timed.apply(t.sleep_then, (60,), timeout=1)
    except TaskTimeoutError as e:
        print("timeout", "was stopped" in str(e), round(time.monotonic() - start, 1) < 3)
wait_for_workers()
big = np.arange(64 * 1024 * 1024 // 8, dtype=np.float64).reshape(64, -1)
sums = pool.map(t.row_sum, [(big, i) for i in range(64)], chunksize=1)
print("array", sums == [float(big[i].sum()) for i in range(64)], pool._backend.store.puts)
print("nested", pool.apply(t.nested_sum, (10,)))
""",
        tmp_path,
    )
    assert lines == [
        "retries True 2 1",
        "poison True 3",
        "timeout True True",
        "array True 1",
        f"nested {sum(x * x for x in range(10))}",
    ], lines


def test_ctrl_c_to_a_driver_on_another_host_returns_within_a_second(
    cluster: dict[str, Any], tmp_path: Path
) -> None:

    hosts = cluster["hosts"]
    marks = tmp_path / "marks"
    marks.mkdir()
    script = tmp_path / "driver.py"
    body = f"""\
print("ready", flush=True)
try:
    pool.map(t.marked_square, [({str(marks)!r}, x, 0.2) for x in range(200)], 1)
except KeyboardInterrupt:
    print("interrupted", time.monotonic(), flush=True)
"""
    script.write_text(driver_script(cluster, body), encoding="utf-8")
    proc = hosts.popen(
        "h1",
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        env=hosts.env("h1", PYTHONPATH=TESTS_DIR, PHALANX_AUTHKEY=KEY),
    )
    t.check_ctrl_c(proc, str(marks), 2)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_host_cut_off_the_network_fails_its_begun_chunk_and_the_rest_completes(
    engine: str, tmp_path: Path
) -> None:
    """No FIN ever comes from a host that lost power or its network: its begun chunk
    fails once the hub has heard nothing from it for PEER_SILENT_AFTER (15 s); the
    chunks the engine had queued there run elsewhere once the engine drops the host
    (Dask: its comm timeout, 30 s; Ray: the pool takes them back once its health checks
    mark the node dead, as Ray itself leaves them pending).  Own hosts: the cut host
    does not come back."""
    marks = tmp_path / "marks"
    marks.mkdir()
    with _cluster_on_hosts(engine) as cluster:
        hosts = cluster["hosts"]
        h1, h2 = hosts.ip["h1"], hosts.ip["h2"]
        body = f"""\
items = [({str(marks)!r}, x, 3.0, {h1!r}) for x in range(8)]
result = pool.map_async(t.marked_square_at, items, 1)
deadline = time.monotonic() + 60
while {h2!r} not in t.marked_by({str(marks)!r}) and time.monotonic() < deadline:
    time.sleep(0.05)  # (a loaded machine starts the workers late)
print("cut now", flush=True)
sys.stdin.readline()
start = time.monotonic()
try:
    result.get(150)
except WorkerLostError as e:
    print("lost", round(time.monotonic() - start), e, flush=True)
"""
        script = tmp_path / "driver.py"
        script.write_text(driver_script(cluster, body), encoding="utf-8")
        proc = hosts.popen(
            "h1",
            [sys.executable, str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=hosts.env("h1", PYTHONPATH=TESTS_DIR, PHALANX_AUTHKEY=KEY),
        )
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "cut now"
        hosts.cut("h2")
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=200)
    lines = [line for line in out.splitlines() if line.startswith("lost")]
    assert lines, out + err[-3000:]
    _, seconds, message = lines[0].split(" ", 2)
    assert "its host stopped answering for 15 s" in message and hosts.ip["h2"] in message
    assert int(seconds) < 90, lines[0]
    runs = t.runs_of(str(marks))
    assert set(runs) == set(range(8)) and max(runs.values()) == 1, runs
